import WebSocket from 'ws'
import type { TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'
import { connectThrough, tlsOver } from './proxy.js'
import { RelaygateError } from '../protocol/errors.js'
import { normalizeFingerprint } from '../protocol/token.js'
import { zeroMask } from '../protocol/ws-transport.js'

export interface DialOptions {
  /** Accepted sha256 fingerprints for wss; empty means "verify with the system CAs". */
  fingerprints?: string[]
  maxPayload: number
  timeoutMs?: number
  /** Called with the TLS socket once its certificate passed the pins (wss only), e.g. to export keying material. */
  onSecure?: (socket: TLSSocket) => void
  /** The flag that pins a certificate for whoever dials (named when a certificate is not trusted): --pin, --server-fingerprint. */
  pinFlag?: string
  /** An HTTP CONNECT proxy to go through (common/proxy.ts: proxyFor), or null/absent for a direct connection. */
  proxy?: URL | null
}

/**
 * Opens a WebSocket. For wss with pins, the peer's certificate must match one
 * of the fingerprints; without pins, a trusted CA must vouch for it (and its
 * name must match). Both checks happen on the upgrade response, before we
 * send a single frame, so nothing secret ever reaches an impostor; a
 * certificate that fails is named by its fingerprint, with the flag that
 * would pin it (a self-signed relay or server is the usual case).
 */
export async function dialWebSocket (url: string, options: DialOptions): Promise<WebSocket> {
  const pins = (options.fingerprints ?? []).map(normalizeFingerprint)
  const secure = url.startsWith('wss:')
  // Through a proxy: a CONNECT tunnel first, then the WebSocket (and its TLS) inside it, end to end.
  let createConnection: (() => Socket) | undefined
  if (options.proxy != null) {
    const target = new URL(url)
    const host = target.hostname.replace(/^\[|\]$/g, '')
    const tunnel = await connectThrough(options.proxy, host, Number(target.port === '' ? (secure ? 443 : 80) : target.port), options.timeoutMs)
    createConnection = secure ? () => tlsOver(tunnel, host) : () => tunnel
  }
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      ...(createConnection === undefined ? {} : { createConnection }),
      maxPayload: options.maxPayload,
      perMessageDeflate: false,
      generateMask: zeroMask,
      handshakeTimeout: options.timeoutMs ?? 10_000,
      // The certificate is checked on the upgrade below (pins, or the CA verdict), so that a refusal can name its fingerprint.
      rejectUnauthorized: false
    })
    let settled = false
    const fail = (err: Error): void => {
      if (settled) return
      settled = true
      ws.removeAllListeners()
      ws.on('error', () => {})
      ws.terminate()
      reject(err)
    }
    ws.once('upgrade', res => {
      if (!secure) return
      const socket = res.socket as TLSSocket
      const cert = socket.getPeerCertificate()
      const fp = cert?.fingerprint256 === undefined ? '' : normalizeFingerprint(cert.fingerprint256)
      if (pins.length > 0 && !pins.includes(fp)) {
        fail(new RelaygateError('RG_ERR_PIN_MISMATCH', `certificate of ${url} has fingerprint ${fp || 'none'}, not a pinned one: if it is the right peer (a new certificate), pin it with ${options.pinFlag ?? '--pin'} ${fp}`))
        return
      }
      if (pins.length === 0 && !socket.authorized) {
        fail(new RelaygateError('RG_ERR_PIN_MISMATCH', `certificate of ${url} is not one a trusted CA vouches for (${String(socket.authorizationError)}); its sha256 fingerprint is ${fp || 'none'}: if this is your peer (a self-signed certificate), pin it with ${options.pinFlag ?? '--pin'} ${fp}`))
        return
      }
      options.onSecure?.(socket)
    })
    ws.once('open', () => {
      if (settled) return
      settled = true
      ws.removeAllListeners('error')
      resolve(ws)
    })
    ws.once('error', err => fail(err))
    ws.once('unexpected-response', (_req, res) => fail(new RelaygateError('RG_ERR_PROTOCOL', `${url} answered HTTP ${res.statusCode} instead of a WebSocket upgrade`)))
  })
}

/** http(s)://host -> ws(s)://host, keeping ws(s) as it is. */
export function toWsUrl (url: string): string {
  return url.replace(/^http:/, 'ws:').replace(/^https:/, 'wss:').replace(/\/+$/, '')
}
