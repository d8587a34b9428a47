import uWS from 'uWebSockets.js'
import { createServer } from 'node:net'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { ErrorCode, RelaygateError } from '../protocol/index.js'
import { Backoff } from '../common/backoff.js'
import { UwsTransport, type AgentSocketData } from './uws-transport.js'

/** The HTTP routes the relay serves beside the agent WebSocket. */
export interface ListenerRoutes {
  /** A new agent WebSocket, as a transport. */
  onAgent: (transport: UwsTransport) => void
  healthz: (res: uWS.HttpResponse) => void
  metrics: (res: uWS.HttpResponse) => void
  artifact: (res: uWS.HttpResponse, req: uWS.HttpRequest) => void
  /** `secure`: asked on the TLS port. */
  install: (res: uWS.HttpResponse, req: uWS.HttpRequest, secure: boolean) => void
}

export interface ListenerOptions {
  host: string
  port: number
  /** -1: no TLS port. */
  tlsPort: number
  cert: { certFile: string, keyFile: string } | null
  logger: Logger
  /** How long to keep trying an address that cannot be listened on yet (ms); see listenOn. */
  retryForMs: number
}

/** The relay's uWebSockets.js listeners: `/agent` (WebSocket) and a few HTTP routes, on the plain and TLS ports. */
export class AgentListener {
  wsUrl: string | null = null
  wssUrl: string | null = null
  private readonly sockets: uWS.us_listen_socket[] = []

  private constructor () {}

  static async listen (options: ListenerOptions, routes: ListenerRoutes): Promise<AgentListener> {
    const l = new AgentListener()
    try {
      const port = await l.listenOn(l.app(uWS.App(), routes, false), options.host, options.port, options)
      l.wsUrl = `ws://${advertisedHost(options.host)}:${port}`
      if (options.cert !== null && options.tlsPort >= 0) {
        const secure = uWS.SSLApp({ key_file_name: options.cert.keyFile, cert_file_name: options.cert.certFile })
        const tlsPort = await l.listenOn(l.app(secure, routes, true), options.host, options.tlsPort, options)
        l.wssUrl = `wss://${advertisedHost(options.host)}:${tlsPort}`
      }
    } catch (err) {
      l.close()
      throw err
    }
    return l
  }

  /** Stops accepting (open sockets stay until closed by their sessions). */
  close (): void {
    for (const s of this.sockets) uWS.us_listen_socket_close(s)
    this.sockets.length = 0
  }

  private app (app: uWS.TemplatedApp, routes: ListenerRoutes, secure: boolean): uWS.TemplatedApp {
    return app.ws('/agent', agentBehavior(routes.onAgent))
      .get('/healthz', routes.healthz)
      .get('/metrics', routes.metrics)
      .get('/artifacts/:sha256', routes.artifact)
      .get('/install/:file', (res, req) => routes.install(res, req, secure))
      .any('/*', notFound)
  }

  /**
   * Listens with an exclusive port: without it uWS sets SO_REUSEPORT, and a
   * second relay on the same port would start silently and take half the
   * agents. When the listen fails, a plain probe tells why: another process
   * listening is a configuration error (exit 2, at once); anything else (an
   * address not up yet at boot, leftovers of a crash) is tried again with
   * backoff for `retryForMs`, then ends as RG_ERR_LISTEN (exit 1: a
   * supervisor restarts the relay later).
   */
  private async listenOn (app: uWS.TemplatedApp, host: string, port: number, options: ListenerOptions): Promise<number> {
    const backoff = new Backoff({ baseMs: 250, maxMs: 5000, giveUpAfterMs: options.retryForMs })
    for (;;) {
      const socket = await new Promise<uWS.us_listen_socket | false>(resolve => (app as unknown as ExclusiveListen).listen(host, port, LIBUS_LISTEN_EXCLUSIVE_PORT, resolve))
      if (socket !== false) {
        this.sockets.push(socket)
        return uWS.us_socket_local_port(socket)
      }
      const why = await probeListen(host, port)
      if (why === 'EADDRINUSE') throw new RelaygateError('RG_ERR_PORT_IN_USE', `cannot listen on ${host}:${port}: another process listens on it`)
      if (why === 'EACCES') throw new RelaygateError('RG_ERR_CONFIG', `cannot listen on ${host}:${port}: permission denied`)
      const delay = backoff.next()
      if (delay === undefined) throw new RelaygateError('RG_ERR_LISTEN', `cannot listen on ${host}:${port} (${why ?? 'refused'}); gave up after ${Math.round(options.retryForMs / 1000)} s`)
      options.logger.warn({ host, port, reason: why ?? 'refused', retryInMs: Math.round(delay) }, 'cannot listen yet; trying again')
      await sleep(delay)
    }
  }
}

/** The largest WebSocket message read from an agent, and the most bytes held for one on their way out. */
const MAX_MESSAGE_BYTES = 2 * 1024 * 1024

/**
 * uWS.js's native listen takes (host, port, options, cb); its typings list
 * the options only without a host (ListenOptions.LIBUS_LISTEN_EXCLUSIVE_PORT = 1).
 */
const LIBUS_LISTEN_EXCLUSIVE_PORT = 1
interface ExclusiveListen {
  listen: (host: string, port: number, options: number, cb: (socket: uWS.us_listen_socket | false) => void) => unknown
}

/** Why a plain listen on host:port fails now (an errno code), or null if it would succeed. */
async function probeListen (host: string, port: number): Promise<string | null> {
  return await new Promise(resolve => {
    const probe = createServer()
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(null)))
  })
}

function agentBehavior (onAgent: (transport: UwsTransport) => void): uWS.WebSocketBehavior<AgentSocketData> {
  return {
    compression: uWS.DISABLED,
    // A message up to the same 2 MiB a socket may hold on its way out reaches
    // the mux, which closes with our code (RG_ERR_FRAME_TOO_LARGE or
    // RG_ERR_PROTOCOL); above it, uWS drops the socket unread (1006) and the
    // relay logs RG_ERR_FRAME_TOO_LARGE (UwsTransport.onClose).
    maxPayloadLength: MAX_MESSAGE_BYTES,
    maxBackpressure: MAX_MESSAGE_BYTES,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    open: ws => {
      const transport = new UwsTransport(ws)
      ws.getUserData().transport = transport
      onAgent(transport)
    },
    message: (ws, message, isBinary) => {
      const t = ws.getUserData().transport
      if (t === undefined || t.closed) return
      if (!isBinary) {
        t.close(ErrorCode.RG_ERR_PROTOCOL.close, 'text messages are not part of the protocol')
        return
      }
      t.onMessage(message)
    },
    drain: ws => ws.getUserData().transport?.onDrain(),
    close: (ws, code, message) => ws.getUserData().transport?.onClose(code, message)
  }
}

function notFound (res: uWS.HttpResponse, req: uWS.HttpRequest): void {
  res.writeStatus('404 Not Found').writeHeader('content-type', 'application/json')
    .end(JSON.stringify({ error: { code: 'RG_ERR_NOT_FOUND', message: `no route ${req.getMethod().toUpperCase()} ${req.getUrl()}` } }))
}

function advertisedHost (host: string): string {
  if (host === '0.0.0.0' || host === '::') return hostname()
  return host.includes(':') ? `[${host}]` : host
}
