import type { Logger } from 'pino'
import { proxyFor } from '../common/proxy.js'
import {
  Mux, DEFAULT_MAX_PAYLOAD, HEADER_SIZE, RelaygateError, ErrorCode, FATAL_CLOSE_CODES, toRelaygateError, type Frame, type MuxStream
} from '../protocol/index.js'
import { WsTransport } from '../protocol/ws-transport.js'
import { dialWebSocket, toWsUrl } from '../common/dial.js'
import { Backoff } from '../common/backoff.js'
import {
  DEFAULT_SETTINGS, Hellos, helloFrame, readHello, controlFrame, readControl, encodeStreamMeta, ServerToRelay,
  type RelayHello, type RelayToServer, type RelayStreamMeta, type Settings
} from '../protocol/messages.js'

export interface ServerLinkOptions {
  /** One or more server URLs (replicas): one link at a time, the next one after a failure or a go-away. */
  serverUrls: string[]
  /** Accepted certificate fingerprints for https/wss servers (any one). */
  serverFingerprints: string[]
  /** --proxy: an HTTP CONNECT proxy to the server (else HTTPS_PROXY and the like, with NO_PROXY). */
  proxy?: string
  hello: () => RelayHello
  logger: Logger
  keepAliveMs: number
  livenessTimeoutMs: number
  giveUpAfterMs: number
  onReady: (relayId: string, settings: Settings) => void
  onMessage: (msg: ServerToRelay) => void
  /** The server opened a stream (a tunnel stream for one of our agents). */
  onStream: (stream: MuxStream) => void
  onDown: (err: RelaygateError | undefined) => void
  /** The server refused us for good (revoked token, wrong version) or we gave up. */
  onFatal: (err: RelaygateError) => void
}

/**
 * The relay's one link to the server, re-established with jittered
 * exponential backoff until the relay closes or gives up. With several
 * server URLs (replicas), a failed dial or a dropped link moves on to the
 * next URL, so a dead or leaving replica costs one backoff step.
 */
export class ServerLink {
  private readonly opts: ServerLinkOptions
  private readonly backoff: Backoff
  private mux: Mux | null = null
  private ready = false
  private stopped = false
  private retryTimer: NodeJS.Timeout | null = null
  relayId: string | null = null
  /** The version of the server replica linked to (from its hello). */
  serverVersion: string | null = null
  settings: Settings = DEFAULT_SETTINGS
  connects = 0
  /** Which of the server URLs is dialed next. */
  private at = 0
  /** The server URL of the current (or last) link. */
  url: string

  constructor (options: ServerLinkOptions) {
    this.opts = options
    if (options.serverUrls.length === 0) throw new RelaygateError('RG_ERR_CONFIG', 'no server URL')
    this.url = options.serverUrls[0]
    this.backoff = new Backoff({ baseMs: 200, maxMs: 15_000, giveUpAfterMs: options.giveUpAfterMs })
  }

  get isReady (): boolean {
    return this.ready
  }

  /** Bytes over the server link since start, over every connection (monotonic). */
  get bytes (): { in: number, out: number } {
    return { in: this.closedBytes.in + (this.mux?.bytesIn ?? 0), out: this.closedBytes.out + (this.mux?.bytesOut ?? 0) }
  }

  private readonly closedBytes = { in: 0, out: 0 }

  start (): void {
    void this.connect()
  }

  /** Sends a control message; false when the link is down. */
  send (msg: RelayToServer): boolean {
    if (!this.ready || this.mux === null) return false
    this.mux.send(controlFrame(msg))
    return true
  }

  /** Opens a stream to the server (an artifact fill). Throws when the link is down. */
  openStream (meta: RelayStreamMeta): MuxStream {
    if (!this.ready || this.mux === null) throw new RelaygateError('RG_ERR_UPSTREAM_UNAVAILABLE', 'no link to the server')
    return this.mux.openStream(encodeStreamMeta(meta))
  }

  async close (): Promise<void> {
    this.stopped = true
    if (this.retryTimer !== null) clearTimeout(this.retryTimer)
    this.retryTimer = null
    if (this.mux !== null) await this.mux.close(ErrorCode.RG_ERR_GOING_AWAY.close, 'relay shutting down')
  }

  private async connect (): Promise<void> {
    if (this.stopped) return
    this.url = this.opts.serverUrls[this.at % this.opts.serverUrls.length]
    const url = `${toWsUrl(this.url)}/relay`
    const log = this.opts.logger
    let ws
    try {
      ws = await dialWebSocket(url, {
        fingerprints: this.opts.serverFingerprints,
        maxPayload: DEFAULT_MAX_PAYLOAD + HEADER_SIZE,
        pinFlag: '--server-fingerprint',
        proxy: proxyFor(url, this.opts.proxy)
      })
    } catch (err) {
      const coded = toRelaygateError(err, 'RG_ERR_UPSTREAM_UNAVAILABLE')
      log.warn({ url, code: coded.code, message: coded.message }, 'cannot reach the server')
      if (coded.code === 'RG_ERR_PIN_MISMATCH') return this.opts.onFatal(coded)
      return this.retry()
    }
    if (this.stopped) {
      ws.terminate()
      return
    }
    const mux: Mux = new Mux(new WsTransport(ws, url), {
      role: 'dialer',
      maxPayload: DEFAULT_MAX_PAYLOAD,
      keepAliveMs: this.opts.keepAliveMs,
      livenessTimeoutMs: this.opts.livenessTimeoutMs,
      logger: log,
      maxStreams: 8192,
      onStream: stream => {
        if (this.ready) this.opts.onStream(stream)
        else stream.destroy(new RelaygateError('RG_ERR_STREAM_REFUSED', 'hello first'))
      },
      onFrame: frame => this.onFrame(frame),
      onClose: ({ code, reason, error }) => {
        const wasReady = this.ready
        this.ready = false
        if (this.mux === mux) {
          this.closedBytes.in += mux.bytesIn
          this.closedBytes.out += mux.bytesOut
        }
        this.mux = null
        log.warn({ code, reason }, 'server link closed')
        if (wasReady) this.opts.onDown(error)
        if (this.stopped) return
        if (FATAL_CLOSE_CODES.has(code)) return this.opts.onFatal(error ?? new RelaygateError('RG_ERR_RELAY_REVOKED', reason))
        this.retry()
      }
    })
    this.mux = mux
    mux.send(helloFrame(this.opts.hello()))
  }

  private retry (): void {
    if (this.stopped) return
    this.at = (this.at + 1) % this.opts.serverUrls.length
    const delay = this.backoff.next()
    if (delay === undefined) {
      this.opts.onFatal(new RelaygateError('RG_ERR_UPSTREAM_UNAVAILABLE', `gave up reaching the server after ${this.opts.giveUpAfterMs} ms`))
      return
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      void this.connect()
    }, delay)
  }

  /** Frames from the server; a throw closes the link with the protocol-error code (the mux catches it). */
  private onFrame (frame: Frame): void {
    if (!this.ready) return this.onHello(frame)
    const msg = readControl(frame, ServerToRelay)
    if (msg.t === 'settings') this.settings = msg.settings
    this.opts.onMessage(msg)
  }

  private onHello (frame: Frame): void {
    const hello = readHello(frame, Hellos.fromServer)
    this.relayId = hello.relayId
    this.serverVersion = hello.version
    this.settings = hello.settings
    this.ready = true
    this.connects++
    this.backoff.reset()
    this.opts.logger.info({ relayId: this.relayId, server: this.url }, 'linked to the server')
    this.opts.onReady(this.relayId, this.settings)
  }
}
