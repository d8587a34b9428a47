import http from 'node:http'
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'
import type { Readable } from 'node:stream'
import { RelaygateError, isErrorCode } from '../protocol/errors.js'
import { normalizeFingerprint } from '../protocol/token.js'

export interface AdminTarget {
  /** http(s)://host:port of the server. */
  server: string
  /** The admin token. */
  token: string
  /** Pin for a server with a self-signed HTTPS certificate. */
  serverFingerprint?: string
}

export interface AdminResponse {
  status: number
  body: unknown
}

/** Checks `--server` (http or https) and returns it without a trailing slash. */
export function verifyServerUrl (value: unknown): string {
  if (typeof value !== 'string' || !/^https?:\/\/[^/]/.test(value)) {
    throw new RelaygateError('RG_ERR_CONFIG', `--server must be http(s)://host:port, got ${String(value)}`)
  }
  try {
    void new URL(value)
  } catch {
    throw new RelaygateError('RG_ERR_CONFIG', `--server is not a URL: ${value}`)
  }
  return value.replace(/\/+$/, '')
}

/**
 * Connects first (checking a pinned certificate before any byte, the token
 * included, is sent), then speaks HTTP over that socket.
 */
async function connect (url: URL, pin: string | undefined): Promise<net.Socket> {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const secure = url.protocol === 'https:'
  const port = Number(url.port === '' ? (secure ? 443 : 80) : url.port)
  const fail = (err: Error): never => {
    throw new RelaygateError('RG_ERR_SERVER_UNREACHABLE', `cannot reach the server at ${url.origin}: ${(err as NodeJS.ErrnoException).code ?? err.message} (is it running there? check --server)`)
  }
  if (!secure) {
    const sock = net.connect({ host, port })
    await once(sock, 'connect').catch(fail)
    return sock
  }
  // The certificate is checked here (the pin, or the CA verdict), so that a refusal can name its fingerprint.
  const sock = tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, rejectUnauthorized: false })
  await once(sock, 'secureConnect').catch(fail)
  const fp = normalizeFingerprint(sock.getPeerCertificate().fingerprint256 ?? '')
  if (pin !== undefined && fp !== pin) {
    sock.destroy()
    throw new RelaygateError('RG_ERR_PIN_MISMATCH', `server certificate ${fp} is not the pinned one (--server-fingerprint): if the server has a new certificate, pin that`)
  }
  if (pin === undefined && !sock.authorized) {
    sock.destroy()
    throw new RelaygateError('RG_ERR_PIN_MISMATCH', `the server's certificate is not one a trusted CA vouches for (${String(sock.authorizationError)}): if it is your server's self-signed certificate, pin it with --server-fingerprint ${fp}`)
  }
  return sock
}

/**
 * One request to the admin API. A JSON body is an object; a stream is sent
 * as is (give `contentLength`). An error answer `{error:{code,message}}`
 * becomes a RelaygateError with that code.
 */
export async function adminRequest (target: AdminTarget, method: string, path: string, body: { json?: Record<string, unknown>, stream?: Readable, contentLength?: number } = {}): Promise<AdminResponse> {
  const url = new URL(path, target.server + '/')
  const pin = target.serverFingerprint === undefined ? undefined : normalizeFingerprint(target.serverFingerprint)
  const socket = await connect(url, pin)
  const headers: Record<string, string | number> = { authorization: `Bearer ${target.token}`, host: url.host, accept: 'application/json' }
  let payload: Buffer | undefined
  const stream = body.stream
  if (body.json !== undefined) {
    payload = Buffer.from(JSON.stringify(body.json))
    headers['content-type'] = 'application/json'
    headers['content-length'] = payload.length
  } else if (stream !== undefined) {
    headers['content-type'] = 'application/octet-stream'
    headers['content-length'] = body.contentLength ?? 0
  }
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({ createConnection: () => socket, method, path: url.pathname + url.search, headers })
    req.once('response', resolve)
    req.once('error', err => reject(new RelaygateError('RG_ERR_SERVER_UNREACHABLE', `request to ${url.origin} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`)))
    if (stream !== undefined) {
      stream.once('error', err => req.destroy(err))
      stream.pipe(req)
    } else {
      req.end(payload)
    }
  })
  const chunks: Buffer[] = []
  for await (const c of res) chunks.push(c as Buffer)
  socket.destroy()
  const text = Buffer.concat(chunks).toString('utf8')
  let parsed: unknown = text
  try { parsed = text === '' ? null : JSON.parse(text) } catch {}
  const status = res.statusCode ?? 0
  if (status >= 400) {
    const error = (parsed as { error?: { code?: unknown, message?: unknown } } | null)?.error
    const code = isErrorCode(error?.code) ? error.code : 'RG_ERR_INTERNAL'
    const message = typeof error?.message === 'string' ? error.message : `server answered HTTP ${status}`
    throw new RelaygateError(code, message)
  }
  return { status, body: parsed }
}
