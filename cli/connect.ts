import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import type { Duplex, Readable, Writable } from 'node:stream'
import tls, { type TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { normalizeFingerprint } from '../protocol/token.js'
import { resetConnection } from '../common/reset.js'

/** Where a TCP tunnel goes: an agent-side port of an endpoint, through a server. */
export interface TcpTarget {
  server: string
  endpointId: string
  port: number
  token: string
  /** Pin for a server with a self-signed certificate. */
  serverFingerprint?: string
}

export interface ConnectOptions extends TcpTarget {
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

/** What node's TLS says of a certificate no CA vouches for: the server's own, self-signed. */
const untrusted = new Set(['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'])

/**
 * TLS over a TCP socket of its own (tls.connect with `socket`), where
 * https.request would make one with none: resetConnection can then end a
 * cut session with a reset of that TCP socket, where a TLS socket alone
 * can only send a FIN, which the server would take for a clean end.
 */
function tlsOverOwnTcp (url: URL, verify: boolean): TLSSocket {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const tcp = net.connect(url.port === '' ? 443 : Number(url.port), host)
  return tls.connect({ socket: tcp, host, servername: net.isIP(host) === 0 ? host : undefined, rejectUnauthorized: verify })
}

/**
 * The upgraded connection of a TCP tunnel (`Upgrade: relaygate-tcp`): raw
 * bytes to and from the agent-side port, once the server, the relay and the
 * agent accepted it; a RelaygateError with the server's code otherwise.
 */
export async function openTcpTunnel (options: TcpTarget): Promise<Duplex> {
  const url = new URL(`/api/endpoints/${encodeURIComponent(options.endpointId)}/tcp/${options.port}`, options.server)
  const secure = url.protocol === 'https:'
  const pin = options.serverFingerprint === undefined ? undefined : normalizeFingerprint(options.serverFingerprint)
  const request = (secure ? https : http).request(url, {
    method: 'GET',
    headers: { connection: 'Upgrade', upgrade: 'relaygate-tcp', authorization: `Bearer ${options.token}` },
    ...(secure ? { createConnection: () => tlsOverOwnTcp(url, pin === undefined) } : {})
  })
  return await new Promise<Duplex>((resolve, reject) => {
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
    request.on('error', (err: NodeJS.ErrnoException) => {
      const hint = untrusted.has(err.code ?? '') ? ' (a self-signed server: pin it with --server-fingerprint, the sha256 fingerprint the server logs at start)' : ''
      reject(new RelaygateError('RG_ERR_NO_RELAY', `cannot reach the server: ${err.message}${hint}`))
    })
    request.end()
  })
}

/**
 * Raw TCP to an agent-side port through the endpoint's tunnel, on stdin and
 * stdout: `ssh -o ProxyCommand='relaygate connect <endpoint> 22 --server …' host`.
 * Resolves when the connection ends.
 */
export async function connectTcp (options: ConnectOptions): Promise<void> {
  const socket = await openTcpTunnel(options)
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

export interface ForwardOptions extends TcpTarget {
  /** Local address and port to listen on (port 0: any free port). */
  host: string
  listenPort: number
  logger: Logger
}

/**
 * `ssh -L` through the tunnel: listens on a local port and joins each
 * connection it accepts to a TCP tunnel of its own (openTcpTunnel), with
 * Nagle off on both sockets (a request written in pieces goes at once).
 * A connection the tunnel refuses is closed and logged with the server's
 * code; the listener keeps serving the others. Resolves once listening;
 * close() stops listening and cuts the connections still open.
 */
export async function forwardTcp (options: ForwardOptions): Promise<{ address: net.AddressInfo, close: () => Promise<void> }> {
  const { logger } = options
  const open = new Set<net.Socket>()
  // Half-open: a client that ends its side (shutdown(SHUT_WR)) still gets the answer, as through ssh -L.
  const server = net.createServer({ allowHalfOpen: true }, local => {
    open.add(local)
    local.once('close', () => open.delete(local))
    local.setNoDelay(true)
    local.pause()
    local.on('error', () => {})
    const from = `${local.remoteAddress ?? '?'}:${local.remotePort ?? '?'}`
    openTcpTunnel(options).then(remote => {
      if (local.destroyed) {
        remote.destroy()
        return
      }
      if (remote instanceof net.Socket) remote.setNoDelay(true)
      // A cut is a reset on the other side too: a FIN would pass a cut-short answer off as the whole one.
      remote.on('error', (err: NodeJS.ErrnoException) => {
        logger.warn({ from, code: err.code === 'ECONNRESET' ? 'RG_ERR_TUNNEL_CLOSED' : err.code }, 'forwarded connection cut: the tunnel dropped')
        resetConnection(local)
      })
      local.on('close', () => {
        if (local.readableEnded && local.writableFinished) remote.destroy()
        else resetConnection(remote)
      })
      remote.on('close', () => { if (!local.writableEnded) resetConnection(local) })
      local.pipe(remote)
      remote.pipe(local)
      local.resume()
    }, (err: unknown) => {
      const coded = toRelaygateError(err)
      logger.warn({ from, code: coded.code, err: coded.message }, 'forwarded connection refused')
      local.destroy()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new RelaygateError('RG_ERR_CONFIG', `--listen ${options.host}:${options.listenPort}: ${err.code ?? err.message}`)))
    server.listen(options.listenPort, options.host, () => resolve())
  })
  return {
    address: server.address() as net.AddressInfo,
    close: async () => {
      const closed = new Promise(resolve => server.close(resolve))
      for (const socket of open) socket.destroy()
      await closed
    }
  }
}
