import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { resetConnection } from '../common/reset.js'
import httpProxy from 'http-proxy'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError } from '../protocol/index.js'
import type { TunnelManager } from './tunnels.js'
import { sendError } from './http-util.js'
import type { Authorize } from './access.js'
import { sourceOf } from './forward.js'
import { spliceRequest } from './http-splice.js'

export interface ProxyOptions {
  tunnels: TunnelManager
  logger: Logger
  /** How long a proxied request waits for a closed tunnel to open. */
  openTimeoutMs: number
  /** Throws RG_ERR_UNAUTHORIZED unless the request carries the admin token. */
  authorize: Authorize
  /**
   * Several replicas: a request that waited here for a tunnel another
   * replica took over (RG_ERR_TUNNEL_MOVED) is handed back to be forwarded
   * there, with its Authorization header restored.
   */
  moved?: {
    web: (req: IncomingMessage, res: ServerResponse) => void
    upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  }
}

/** `/api/endpoints/:id/proxy/<path>` and `/api/endpoints/:id/tcp/<port>` */
const proxyPath = /^\/api\/endpoints\/([^/?#]+)\/proxy(\/[^?#]*)?(\?.*)?$/
const tcpPath = /^\/api\/endpoints\/([^/?#]+)\/tcp\/(\d{1,5})$/

export function matchProxy (url: string): { endpointId: string, path: string } | null {
  const m = proxyPath.exec(url)
  if (m === null) return null
  return { endpointId: decodeURIComponent(m[1]), path: (m[2] ?? '/') + (m[3] ?? '') }
}

/** A tunnel another replica took over goes to `moved` (to be forwarded there); any other error to `otherwise`. */
function unlessMoved (err: unknown, moved: (() => void) | undefined, otherwise: (err: RelaygateError) => void): void {
  const coded = toRelaygateError(err)
  if (coded.code === 'RG_ERR_TUNNEL_MOVED' && moved !== undefined) moved()
  else otherwise(coded)
}

function upgradeError (socket: Duplex, err: RelaygateError): void {
  const body = JSON.stringify({ error: { code: err.code, message: err.message } })
  socket.end(`HTTP/1.1 ${err.status} ${err.code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
}

/**
 * Proxies admin HTTP through an endpoint's tunnel (http-splice.ts: the
 * response body passed on as it arrives), WebSocket upgrades with
 * http-proxy, and bridges raw TCP (`relaygate connect`) onto tunnel
 * streams. The admin's Authorization header never reaches the agent side.
 */
export function createTunnelProxy (options: ProxyOptions): {
  web: (req: IncomingMessage, res: ServerResponse) => boolean
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean
  close: () => void
} {
  const { tunnels, logger } = options
  const proxy = httpProxy.createProxyServer({ xfwd: false, changeOrigin: true, ws: true })
  proxy.on('error', (err, _req, res) => {
    const coded = toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED')
    const code = coded.code === 'RG_ERR_INTERNAL' ? new RelaygateError('RG_ERR_TUNNEL_CLOSED', coded.message) : coded
    logger.debug({ code: code.code, message: code.message }, 'proxied request failed')
    if ('writeHead' in res) {
      const response = res as ServerResponse
      if (!response.headersSent) sendError(response, new RelaygateError(code.code, code.message))
      else response.destroy()
    } else {
      (res as Duplex).destroy()
    }
  })
  // WebSocket upgrades the target refuses: http-proxy pipes the target's
  // response into ours and never ends ours when
  // the target's is cut short (tunnel closed, stream reset): the admin's
  // response would hang. Cut it short too (the client sees a premature close).
  proxy.on('proxyRes', (proxyRes, _req, res) => {
    proxyRes.once('close', () => {
      if (!proxyRes.complete && !res.destroyed) res.destroy()
    })
  })

  /** The proxy's target URL: the host of the endpoint's HTTP tunnel target (the Host header the target expects). */
  const target = (tunnelTarget: string | null): string => {
    if (tunnelTarget !== null && /^https?:\/\//.test(tunnelTarget)) {
      const u = new URL(tunnelTarget)
      return `http://${u.host}`
    }
    return 'http://localhost'
  }

  /** Authorizes, opens the tunnel (RG_ERR_NOT_FOUND for no such endpoint); the proxy target. */
  const prepare = async (req: IncomingMessage, endpointId: string): Promise<string> => {
    const caller = options.authorize(req, 'operator')
    const authorization = req.headers.authorization
    delete req.headers.authorization
    tunnels.touch(endpointId)
    try {
      await tunnels.ensureOpen(endpointId, options.openTimeoutMs, { token: caller.name, source: sourceOf(req) })
    } catch (err) {
      if ((err as RelaygateError).code === 'RG_ERR_TUNNEL_MOVED') req.headers.authorization = authorization
      throw err
    }
    tunnels.touch(endpointId)
    // The endpoint as the tunnel read it when requested: no store query per proxied request.
    return target(tunnels.tunnelTarget(endpointId))
  }

  const web = (req: IncomingMessage, res: ServerResponse): boolean => {
    const match = matchProxy(req.url ?? '')
    if (match === null) return false
    void (async () => {
      try {
        const to = await prepare(req, match.endpointId)
        req.url = match.path
        await spliceRequest(req, res, tunnels.streamPool(match.endpointId), new URL(to).host)
      } catch (err) {
        unlessMoved(err, options.moved === undefined ? undefined : () => options.moved!.web(req, res), coded => sendError(res, coded))
      }
    })()
    return true
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): boolean => {
    const url = req.url ?? ''
    const match = matchProxy(url)
    if (match !== null) {
      void (async () => {
        try {
          const to = await prepare(req, match.endpointId)
          req.url = match.path
          const done = tunnels.session(match.endpointId)
          socket.once('close', done)
          proxy.ws(req, socket, head, { target: to.replace(/^http/, 'ws'), agent: tunnels.httpAgent(match.endpointId) })
        } catch (err) {
          unlessMoved(err, options.moved === undefined ? undefined : () => options.moved!.upgrade(req, socket, head), coded => upgradeError(socket, coded))
        }
      })()
      return true
    }
    const tcp = tcpPath.exec(url)
    if (tcp === null) return false
    void bridgeTcp(req, socket, head, decodeURIComponent(tcp[1]), Number(tcp[2])).catch(err => {
      unlessMoved(err, options.moved === undefined ? undefined : () => options.moved!.upgrade(req, socket, head), coded => upgradeError(socket, coded))
    })
    return true
  }

  /** `relaygate connect`: an upgraded connection joined to a TCP stream through the tunnel. */
  const bridgeTcp = async (req: IncomingMessage, socket: Duplex, head: Buffer, endpointId: string, port: number): Promise<void> => {
    if (port < 1 || port > 65535) throw new RelaygateError('RG_ERR_BAD_REQUEST', 'port must be 1-65535')
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'relaygate-tcp') throw new RelaygateError('RG_ERR_BAD_REQUEST', 'use Upgrade: relaygate-tcp')
    await prepare(req, endpointId)
    const stream = tunnels.openStream(endpointId, { kind: 'tcp', port })
    const status = await readStatusByte(stream)
    if (status !== 0) {
      stream.destroy()
      throw new RelaygateError('RG_ERR_TARGET_UNREACHABLE', `agent status ${status}`)
    }
    stream.removeAllListeners('error')
    stream.removeAllListeners('end')
    const done = tunnels.session(endpointId)
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: relaygate-tcp\r\nconnection: Upgrade\r\n\r\n')
    if (head.length > 0) stream.write(head)
    joinTcpSession(socket, stream, done, err => logger.warn({ endpointId, port, code: err.code, err: err.message }, 'tcp session cut: the tunnel dropped'))
    logger.info({ endpointId, port }, 'tcp session through the tunnel')
  }

  return { web, upgrade, close: () => proxy.close() }
}

/**
 * Joins the client's upgraded connection and the tunnel stream. A tunnel
 * that drops (relay or agent gone, a reset, tampering) resets the client's
 * connection, so `relaygate connect` fails instead of taking it for the
 * target's clean end (a FIN, which the pipe passes on).
 */
function joinTcpSession (socket: Duplex, stream: Duplex, done: () => void, onCut: (err: RelaygateError) => void): void {
  const finish = (): void => { done(); socket.destroy(); stream.destroy() }
  const cut = (err: Error): void => {
    onCut(toRelaygateError(err))
    done()
    resetConnection(socket)
    stream.destroy()
  }
  stream.on('error', cut)
  socket.on('error', finish)
  stream.once('close', () => {
    if (stream.readableEnded) done()
    else cut(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the stream closed without its end'))
  })
  socket.once('close', finish)
  stream.pipe(socket)
  socket.pipe(stream)
}

/** The agent answers one status byte once it reached the TCP port (0 = connected), or resets the stream. */
function readStatusByte (stream: Duplex): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    stream.once('readable', () => {
      const first = stream.read(1) as Buffer | null
      if (first === null) reject(new RelaygateError('RG_ERR_TARGET_UNREACHABLE', 'the agent closed the stream'))
      else resolve(first[0])
    })
    stream.once('error', reject)
    stream.once('end', () => reject(new RelaygateError('RG_ERR_TARGET_UNREACHABLE', 'the agent closed the stream')))
  })
}
