import { resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { RelaygateError } from '../protocol/errors.js'

export interface ServerConfig {
  dataDir: string
  host: string
  httpPort: number
  /** -1 turns HTTPS off. */
  httpsPort: number
  tlsCert?: string
  tlsKey?: string
  /** URL agents and relays use to reach this server (goes into join tokens). */
  publicUrl?: string
  readyFile?: string
  /** Overrides the admin token kept in <dataDir>/admin-token. */
  adminToken?: string
  /** Largest JSON request body. */
  maxBodyBytes: number
  /** Relay link keep-alive and liveness (ms). */
  relayKeepAliveMs: number
  relayLivenessTimeoutMs: number
  /** How long a proxied request waits for a closed tunnel to open (ms). */
  tunnelOpenTimeoutMs: number
  /** Proxied requests within this window keep a tunnel alive (keep-alives every keepAliveSeconds). */
  tunnelAdminWindowMs: number
  /** Serve GET /metrics without the admin token (default: the bearer token is required). */
  metricsPublic: boolean
  /** postgres://… : keep the state in PostgreSQL instead of the SQLite file in the data dir. */
  databaseUrl?: string
  /** A file holding the database password (else the URL's, PGPASSWORD or ~/.pgpass). */
  databasePasswordFile?: string
  /** How long to keep trying to reach the database at start (ms). */
  databaseRetryMs: number
  /** A file holding the cluster secret: this server is one replica of several on one PostgreSQL. */
  clusterSecretFile?: string
  /** The cluster secret itself (RELAYGATE_CLUSTER_SECRET), instead of a file. */
  clusterSecret?: string
  /** Where sibling replicas reach this one (https://host:port); default: the HTTPS listener's real address. */
  peerUrl?: string
  /** On how many replicas an uploaded artifact is stored before the upload is acknowledged (default 2 in a cluster of 2 or more). */
  artifactCopies?: number
  /** A job order its agent has not answered within this is sent again (ms; default 15 s; tests shorten it). */
  jobOrderAnswerMs?: number
}

export const serverDefaults: Omit<ServerConfig, 'dataDir'> = {
  host: '0.0.0.0',
  httpPort: 8080,
  httpsPort: 8443,
  maxBodyBytes: 1024 * 1024,
  relayKeepAliveMs: 15_000,
  relayLivenessTimeoutMs: 45_000,
  tunnelOpenTimeoutMs: 30_000,
  tunnelAdminWindowMs: 60_000,
  metricsPublic: false,
  databaseRetryMs: 30_000
}

export function verifyPort (value: unknown, field: string, allowOff = false): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < (allowOff ? -1 : 0) || value > 65535) {
    throw new RelaygateError('RG_ERR_CONFIG', `${field} must be a port number 0-65535${allowOff ? ' (or -1 for off)' : ''}, got ${String(value)}`)
  }
  return value
}

export function verifyUrl (value: string | undefined, field: string, schemes: string[]): string | undefined {
  if (value === undefined) return undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new RelaygateError('RG_ERR_CONFIG', `${field} is not a URL: ${value}`)
  }
  if (!schemes.includes(url.protocol)) {
    throw new RelaygateError('RG_ERR_CONFIG', `${field} must use ${schemes.join(' or ')}, got ${url.protocol}`)
  }
  return value.replace(/\/+$/, '')
}

/** Fills defaults and throws RG_ERR_CONFIG naming the first bad field. */
export function verifyServerConfig (input: Partial<ServerConfig> & { dataDir?: string }): ServerConfig {
  const config: ServerConfig = { ...serverDefaults, dataDir: './data', ...stripUndefined(input) }
  if (typeof config.dataDir !== 'string' || config.dataDir === '') throw new RelaygateError('RG_ERR_CONFIG', '--data-dir must be a path')
  config.dataDir = resolve(config.dataDir)
  verifyPort(config.httpPort, '--http-port')
  verifyPort(config.httpsPort, '--https-port', true)
  if (typeof config.host !== 'string' || config.host === '') throw new RelaygateError('RG_ERR_CONFIG', '--host must be an address')
  config.publicUrl = verifyUrl(config.publicUrl, '--public-url', ['http:', 'https:'])
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    throw new RelaygateError('RG_ERR_CONFIG', '--tls-cert and --tls-key must be given together')
  }
  if (config.databaseUrl !== undefined) {
    // Not echoed back: the URL may hold the password.
    let scheme = ''
    try { scheme = new URL(config.databaseUrl).protocol } catch {}
    if (scheme !== 'postgres:' && scheme !== 'postgresql:') throw new RelaygateError('RG_ERR_CONFIG', '--database-url must be a postgres://user@host:5432/db URL')
  }
  if (!Number.isInteger(config.databaseRetryMs) || config.databaseRetryMs < 0) throw new RelaygateError('RG_ERR_CONFIG', '--database-retry must be a whole number of seconds >= 0')
  verifyClusterConfig(config)
  if (config.adminToken !== undefined && config.adminToken.length < 16) {
    throw new RelaygateError('RG_ERR_CONFIG', 'RELAYGATE_ADMIN_TOKEN must be at least 16 characters')
  }
  return config
}

/** A cluster needs PostgreSQL, HTTPS (peer links are TLS, pinned) and a long secret. */
function verifyClusterConfig (config: ServerConfig): void {
  if (config.clusterSecretFile !== undefined && config.clusterSecret !== undefined) {
    throw new RelaygateError('RG_ERR_CONFIG', 'give the cluster secret once: --cluster-secret-file or RELAYGATE_CLUSTER_SECRET')
  }
  const clustered = config.clusterSecretFile !== undefined || config.clusterSecret !== undefined
  if (!clustered) {
    if (config.peerUrl !== undefined) throw new RelaygateError('RG_ERR_CONFIG', '--peer-url needs --cluster-secret-file (it is the address sibling replicas use)')
    if (config.artifactCopies !== undefined) throw new RelaygateError('RG_ERR_CONFIG', '--artifact-copies needs --cluster-secret-file')
    return
  }
  if (config.databaseUrl === undefined) throw new RelaygateError('RG_ERR_CONFIG', '--cluster-secret-file needs --database-url: replicas share one PostgreSQL')
  if (config.httpsPort < 0) throw new RelaygateError('RG_ERR_CONFIG', '--cluster-secret-file needs HTTPS (--https-port): peer links between replicas are TLS')
  config.peerUrl = verifyUrl(config.peerUrl, '--peer-url', ['https:'])
  if (config.artifactCopies !== undefined && (!Number.isInteger(config.artifactCopies) || config.artifactCopies < 1 || config.artifactCopies > 16)) {
    throw new RelaygateError('RG_ERR_CONFIG', '--artifact-copies must be a whole number from 1 to 16')
  }
}

/** The cluster secret: from the file or the option, at least 32 characters (surrounding whitespace ignored). */
export function readClusterSecret (config: ServerConfig): Buffer | null {
  let text: string
  if (config.clusterSecret !== undefined) text = config.clusterSecret
  else if (config.clusterSecretFile !== undefined) {
    try {
      text = readFileSync(config.clusterSecretFile, 'utf8')
    } catch (err) {
      throw new RelaygateError('RG_ERR_CONFIG', `--cluster-secret-file ${config.clusterSecretFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  } else return null
  const secret = text.trim()
  if (secret.length < 32) throw new RelaygateError('RG_ERR_CONFIG', 'the cluster secret must be at least 32 characters (e.g. openssl rand -hex 32)')
  return Buffer.from(secret, 'utf8')
}

export function stripUndefined<T extends object> (value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}
