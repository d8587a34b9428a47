import type http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import httpProxy from 'http-proxy'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError, type MuxStream } from '../protocol/index.js'
import { encodeStreamMeta } from '../protocol/messages.js'
import type { Cluster } from './cluster.js'
import { asSocket, TunnelHttpAgent } from './tunnel-http-agent.js'
import { sendError } from './http-util.js'
import type { Authorize } from './access.js'

/**
 * One hop between replicas: what must run at the replica holding an
 * endpoint's relay link (its tunnel: proxied HTTP and WebSocket, `relaygate
 * connect`, raising and closing the flag) is forwarded there over the peer
 * link, as the admin sent it; that replica handles it as its own request.
 * A request that came over a peer link is never forwarded again.
 */
const routed = /^\/api\/endpoints\/([^/?#]+)\/(?:proxy|tcp|tunnel)(?:[/?#]|$)/

const FROM_PEER = Symbol('relaygate.fromPeer')

function fromPeer (req: IncomingMessage): boolean {
  return (req.socket as (Duplex & { [FROM_PEER]?: boolean }) | null)?.[FROM_PEER] === true
}

/** Carries the caller's address to the replica a request is forwarded to (believed only from a peer). */
const SOURCE_HEADER = 'x-relaygate-source'

/** The address a request came from: a sibling's forwarded request keeps its caller's. */
export function sourceOf (req: IncomingMessage): string | null {
  if (fromPeer(req)) {
    const forwarded = req.headers[SOURCE_HEADER]
    return typeof forwarded === 'string' ? forwarded : null
  }
  return req.socket?.remoteAddress ?? null
}

export interface ForwarderOptions {
  cluster: Cluster
  /** The replica that must handle the endpoint's tunnel requests; null: this one. */
  locate: (endpointId: string) => Promise<string | null>
  /** Checked here first: an unauthenticated request costs no lookup and no hop. */
  authorize: Authorize
  /** Handles a connection forwarded by a sibling (an http.Server that never listens). */
  localServer: http.Server
  logger: Logger
}

export interface Forwarder {
  /** True when the request is taken (forwarded, or handed to `local` once located here). */
  web: (req: IncomingMessage, res: ServerResponse, local: () => void) => boolean
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, local: () => void) => boolean
  /** A connection a sibling forwarded here. */
  accept: (stream: MuxStream) => void
  close: () => void
}

export function createForwarder (options: ForwarderOptions): Forwarder {
  const { cluster, logger } = options
  const proxy = httpProxy.createProxyServer({ xfwd: false, ws: false })
  proxy.on('error', (err, _req, res) => {
    const coded = toRelaygateError(err, 'RG_ERR_PEER_UNAVAILABLE')
    logger.debug({ code: coded.code, message: coded.message }, 'forwarded request failed')
    if ('writeHead' in res) sendError(res as ServerResponse, coded.code === 'RG_ERR_INTERNAL' ? new RelaygateError('RG_ERR_PEER_UNAVAILABLE', coded.message) : coded)
    else (res as Duplex).destroy()
  })
  const agents = new Map<string, { mux: unknown, agent: TunnelHttpAgent }>()

  const agentFor = async (replicaId: string): Promise<TunnelHttpAgent> => {
    const link = await cluster.link(replicaId)
    const known = agents.get(replicaId)
    if (known !== undefined && known.mux === link.mux) return known.agent
    known?.agent.destroy()
    const agent = new TunnelHttpAgent(() => link.mux.openStream(encodeStreamMeta({ t: 'http' })), { max: 256, free: 16 })
    agents.set(replicaId, { mux: link.mux, agent })
    void link.mux.whenClosed().then(() => {
      if (agents.get(replicaId)?.agent === agent) agents.delete(replicaId)
      agent.destroy()
    })
    return agent
  }

  /** Which replica: null to handle it here (not routed, came from a peer, or located here). */
  const route = async (req: IncomingMessage): Promise<string | null> => {
    options.authorize(req)
    const m = routed.exec(req.url ?? '')
    const to = await options.locate(decodeURIComponent(m![1]))
    return to === cluster.replicaId ? null : to
  }

  const takes = (req: IncomingMessage): boolean => !fromPeer(req) && routed.test(req.url ?? '')

  const web = (req: IncomingMessage, res: ServerResponse, local: () => void): boolean => {
    if (!takes(req)) return false
    void (async () => {
      let to: string | null
      try {
        to = await route(req)
      } catch (err) {
        sendError(res, toRelaygateError(err))
        return
      }
      if (to === null) return local()
      req.headers[SOURCE_HEADER] = sourceOf(req) ?? ''
      try {
        proxy.web(req, res, { target: 'http://replica', agent: await agentFor(to), proxyTimeout: 0 })
      } catch (err) {
        sendError(res, toRelaygateError(err, 'RG_ERR_PEER_UNAVAILABLE'))
      }
    })()
    return true
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer, local: () => void): boolean => {
    if (!takes(req)) return false
    void (async () => {
      let stream: MuxStream
      try {
        const to = await route(req)
        if (to === null) return local()
        stream = await cluster.openStream(to, { t: 'http' })
      } catch (err) {
        const coded = toRelaygateError(err, 'RG_ERR_PEER_UNAVAILABLE')
        const body = JSON.stringify({ error: { code: coded.code, message: coded.message } })
        socket.end(`HTTP/1.1 ${coded.status} ${coded.code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
        return
      }
      // The request as received (the upgrade's bytes: WebSocket or relaygate-tcp), then both ways.
      const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`]
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        if (req.rawHeaders[i].toLowerCase() !== SOURCE_HEADER) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`)
      }
      lines.push(`${SOURCE_HEADER}: ${sourceOf(req) ?? ''}`)
      stream.write(lines.join('\r\n') + '\r\n\r\n')
      if (head.length > 0) stream.write(head)
      const cut = (): void => { socket.destroy(); stream.destroy() }
      stream.on('error', cut)
      socket.on('error', cut)
      stream.once('close', () => socket.destroy())
      socket.once('close', () => stream.destroy())
      stream.pipe(socket)
      socket.pipe(stream)
    })()
    return true
  }

  const accept = (stream: MuxStream): void => {
    (stream as MuxStream & { [FROM_PEER]?: boolean })[FROM_PEER] = true
    stream.on('error', () => {})
    options.localServer.emit('connection', asSocket(stream))
  }

  const close = (): void => {
    for (const { agent } of agents.values()) agent.destroy()
    agents.clear()
    proxy.close()
  }

  return { web, upgrade, accept, close }
}
