import WebSocket from 'ws'
import type { TLSSocket } from 'node:tls'
import { randomFillSync } from 'node:crypto'
import { RelaygateError } from './errors.js'
import { normalizeFingerprint } from './token.js'

export interface DialOptions {
  /** Accepted sha256 fingerprints for wss; empty means "verify with the system CAs". */
  fingerprints?: string[]
  maxPayload: number
  timeoutMs?: number
}

const maskPool = Buffer.alloc(8192)
let maskAt = maskPool.length

/**
 * The client's masking key for each message: random (from a pooled
 * randomFillSync, as `ws` does), never all zeros. `ws` skips masking for an
 * all-zero key and then keeps a reference to the caller's buffer; with a
 * non-zero key it always masks into a buffer of its own before send()
 * returns, which is what lets our transport declare copiesOnSend.
 */
function generateMask (mask: Buffer): void {
  do {
    if (maskAt === maskPool.length) {
      randomFillSync(maskPool)
      maskAt = 0
    }
    maskPool.copy(mask, 0, maskAt, maskAt + 4)
    maskAt += 4
  } while ((mask[0] | mask[1] | mask[2] | mask[3]) === 0)
}

const dialed = new WeakSet<WebSocket>()

/** True for a socket opened by dialWebSocket (a masking client: send() copies). */
export function copiesOnSend (ws: WebSocket): boolean {
  return dialed.has(ws)
}

/**
 * Opens a WebSocket. For wss with pins, the peer's certificate must match one
 * of the fingerprints: the check happens on the upgrade response, before we
 * send a single frame, so nothing secret ever reaches an impostor.
 */
export function dialWebSocket (url: string, options: DialOptions): Promise<WebSocket> {
  const pins = (options.fingerprints ?? []).map(normalizeFingerprint)
  const secure = url.startsWith('wss:')
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      maxPayload: options.maxPayload,
      perMessageDeflate: false,
      generateMask,
      handshakeTimeout: options.timeoutMs ?? 10_000,
      // With pins we verify the certificate ourselves (self-signed relays).
      rejectUnauthorized: !(secure && pins.length > 0)
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
      if (!secure || pins.length === 0) return
      const socket = res.socket as TLSSocket
      const cert = socket.getPeerCertificate()
      const fp = cert?.fingerprint256 === undefined ? '' : normalizeFingerprint(cert.fingerprint256)
      if (!pins.includes(fp)) {
        fail(new RelaygateError('RG_ERR_PIN_MISMATCH', `certificate of ${url} has fingerprint ${fp || 'none'}, not a pinned one`))
      }
    })
    ws.once('open', () => {
      if (settled) return
      settled = true
      ws.removeAllListeners('error')
      dialed.add(ws)
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
