import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { hostname } from 'node:os'
import selfsigned from 'selfsigned'
import type { Logger } from 'pino'
import { writeFileAtomic } from './files.js'
import { RelaygateError } from '../protocol/errors.js'

export interface CertFiles {
  certFile: string
  keyFile: string
  cert: string
  key: string
  /** sha256 of the DER certificate, lowercase hex. */
  fingerprint: string
}

export function fingerprintOf (certPem: string): string {
  return new X509Certificate(certPem).fingerprint256.replace(/:/g, '').toLowerCase()
}

/**
 * Uses the given certificate, or a self-signed one kept in `dir` (generated on
 * first start, reused afterwards so pinned fingerprints stay valid).
 */
export async function loadOrCreateCert (options: { dir: string, certFile?: string, keyFile?: string, commonName: string, logger?: Logger }): Promise<CertFiles> {
  let certFile = options.certFile
  let keyFile = options.keyFile
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new RelaygateError('RG_ERR_CONFIG', '--tls-cert and --tls-key must be given together')
  }
  if (certFile === undefined || keyFile === undefined) {
    mkdirSync(options.dir, { recursive: true })
    certFile = join(options.dir, 'tls-cert.pem')
    keyFile = join(options.dir, 'tls-key.pem')
    if (!existsSync(certFile) || !existsSync(keyFile)) {
      const names = [...new Set(['localhost', hostname()])]
      const generated = await selfsigned.generate([{ name: 'commonName', value: options.commonName }], {
        keyType: 'ec',
        curve: 'P-256',
        notAfterDate: new Date(Date.now() + 10 * 365 * 24 * 3600 * 1000),
        extensions: [{
          name: 'subjectAltName',
          altNames: [...names.map(value => ({ type: 2 as const, value })), { type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' }]
        }]
      })
      writeFileAtomic(keyFile, generated.private, 0o600)
      writeFileAtomic(certFile, generated.cert, 0o644)
      options.logger?.info({ certFile }, 'generated a self-signed TLS certificate')
    }
  }
  let cert: string, key: string
  try {
    cert = readFileSync(certFile, 'utf8')
    key = readFileSync(keyFile, 'utf8')
  } catch (err) {
    throw new RelaygateError('RG_ERR_CONFIG', `cannot read TLS files: ${(err as Error).message}`)
  }
  let fingerprint: string
  try {
    fingerprint = fingerprintOf(cert)
  } catch {
    throw new RelaygateError('RG_ERR_CONFIG', `${certFile} is not a PEM certificate`)
  }
  return { certFile, keyFile, cert, key, fingerprint }
}
