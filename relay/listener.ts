import uWS from 'uWebSockets.js'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import { AGENT_MAX_PAYLOAD, HEADER_SIZE, ErrorCode, RelaygateError } from '../protocol/index.js'
import { UwsTransport, type AgentSocketData } from './uws-transport.js'

/** The HTTP routes the relay serves beside the agent WebSocket. */
export interface ListenerRoutes {
  /** A new agent WebSocket, as a transport. */
  onAgent: (transport: UwsTransport) => void
  healthz: (res: uWS.HttpResponse) => void
  metrics: (res: uWS.HttpResponse) => void
  artifact: (res: uWS.HttpResponse, req: uWS.HttpRequest) => void
}

export interface ListenerOptions {
  host: string
  port: number
  /** -1: no TLS port. */
  tlsPort: number
  cert: { certFile: string, keyFile: string } | null
  logger: Logger
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
      const port = await l.listenOn(l.app(uWS.App(), routes), options.host, options.port)
      l.wsUrl = `ws://${advertisedHost(options.host)}:${port}`
      if (options.cert !== null && options.tlsPort >= 0) {
        const secure = uWS.SSLApp({ key_file_name: options.cert.keyFile, cert_file_name: options.cert.certFile })
        const tlsPort = await l.listenOn(l.app(secure, routes), options.host, options.tlsPort)
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

  private app (app: uWS.TemplatedApp, routes: ListenerRoutes): uWS.TemplatedApp {
    return app.ws('/agent', agentBehavior(routes.onAgent))
      .get('/healthz', routes.healthz)
      .get('/metrics', routes.metrics)
      .get('/artifacts/:sha256', routes.artifact)
      .any('/*', notFound)
  }

  private async listenOn (app: uWS.TemplatedApp, host: string, port: number): Promise<number> {
    const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
      app.listen(host, port, token => {
        if (token === false) reject(new RelaygateError('RG_ERR_CONFIG', `cannot listen on ${host}:${port}`))
        else resolve(token)
      })
    })
    this.sockets.push(socket)
    return uWS.us_socket_local_port(socket)
  }
}

function agentBehavior (onAgent: (transport: UwsTransport) => void): uWS.WebSocketBehavior<AgentSocketData> {
  return {
    compression: uWS.DISABLED,
    maxPayloadLength: 4 * (AGENT_MAX_PAYLOAD + HEADER_SIZE),
    maxBackpressure: 2 * 1024 * 1024,
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
