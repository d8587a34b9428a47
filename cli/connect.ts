import http from 'node:http'
import https from 'node:https'
import type { Duplex, Readable, Writable } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import { RelaygateError } from '../protocol/errors.js'
import { normalizeFingerprint } from '../protocol/token.js'

export interface ConnectOptions {
  server: string
  endpointId: string
  port: number
  token: string
  /** Pin for a server with a self-signed certificate. */
  serverFingerprint?: string
  input: Readable
  output: Writable
}

/** The admin token: RELAYGATE_ADMIN_TOKEN, or the token file. */
export function readAdminToken (tokenFile: string | undefined): string {
  const fromEnv = process.env.RELAYGATE_ADMIN_TOKEN
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv.trim()
  const file = tokenFile ?? './data/admin-token'
  try {
    return readFileSync(file, 'utf8').trim()
  } catch {
    throw new RelaygateError('RG_ERR_CONFIG', `--token-file: cannot read ${file} (or set RELAYGATE_ADMIN_TOKEN)`)
  }
}

/**
 * Raw TCP to an agent-side port through the endpoint's tunnel, on stdin and
 * stdout: `ssh -o ProxyCommand='relaygate connect <endpoint> 22 --server …' host`.
 * Resolves when the connection ends.
 */
export async function connectTcp (options: ConnectOptions): Promise<void> {
  const url = new URL(`/api/endpoints/${encodeURIComponent(options.endpointId)}/tcp/${options.port}`, options.server)
  const secure = url.protocol === 'https:'
  const pin = options.serverFingerprint === undefined ? undefined : normalizeFingerprint(options.serverFingerprint)
  const request = (secure ? https : http).request(url, {
    method: 'GET',
    headers: { connection: 'Upgrade', upgrade: 'relaygate-tcp', authorization: `Bearer ${options.token}` },
    ...(secure && pin !== undefined ? { rejectUnauthorized: false } : {})
  })
  const socket = await new Promise<Duplex>((resolve, reject) => {
    request.on('upgrade', (res, sock, head) => {
      if (secure && pin !== undefined) {
        const fp = normalizeFingerprint((sock as TLSSocket).getPeerCertificate().fingerprint256 ?? '')
        if (fp !== pin) {
          sock.destroy()
          reject(new RelaygateError('RG_ERR_PIN_MISMATCH', `server certificate ${fp} is not the pinned one`))
          return
        }
      }
      if (head.length > 0) sock.unshift(head)
      resolve(sock)
    })
    request.on('response', res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        let code = 'RG_ERR_TUNNEL_CLOSED'
        let message = `server answered HTTP ${res.statusCode ?? '?'}`
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code?: string, message?: string } }
          if (body.error?.code !== undefined) code = body.error.code
          if (body.error?.message !== undefined) message = body.error.message
        } catch {}
        reject(new RelaygateError(code as 'RG_ERR_TUNNEL_CLOSED', message))
      })
    })
    request.on('error', err => reject(new RelaygateError('RG_ERR_NO_RELAY', `cannot reach the server: ${err.message}`)))
    request.end()
  })
  await new Promise<void>((resolve, reject) => {
    let done = false
    const finish = (err?: Error): void => {
      if (done) return
      done = true
      // The caller exits next; stdout (a pipe: asynchronous) may still hold
      // the last bytes. This write's callback runs once all before it are out.
      options.output.write(Buffer.alloc(0), () => err === undefined ? resolve() : reject(err))
    }
    options.input.pipe(socket)
    socket.pipe(options.output, { end: false })
    // The target's end comes as a FIN ('end'); the server resets the
    // connection when the tunnel drops (relay or agent gone).
    socket.on('end', () => finish())
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new RelaygateError('RG_ERR_TUNNEL_CLOSED', err.code === 'ECONNRESET'
      ? 'the tunnel dropped (relay or agent gone, or the session was cut); see the server log'
      : `the connection to the server failed: ${err.code ?? err.message}`)))
    socket.on('close', () => finish(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the connection to the server closed without an end')))
  })
}
