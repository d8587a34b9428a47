import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { sendError } from './http-util.js'

/**
 * Topics the dashboard listens to. A notification says only "this changed,
 * fetch it again": it carries no data, so nothing leaks through it and a lost
 * notification costs one stale view until the next one (or a reconnect).
 */
export type EventTopic = 'endpoints' | 'relays' | 'settings' | 'artifacts' | 'jobs' | 'updates' | 'tokens' | 'audit'

export interface EventHubOptions {
  logger: Logger
  /** Open streams at most; more get 503 RG_ERR_QUEUE_FULL. */
  maxClients?: number
  /** A comment line this often keeps proxies and browsers from timing the stream out (ms). */
  keepAliveMs?: number
  /** Changes within this window go out as one notification per topic (ms). */
  coalesceMs?: number
  /** A client that has this many bytes unsent (it stopped reading) is dropped. */
  maxBufferedBytes?: number
}

interface Client {
  res: ServerResponse
  id: number
}

/**
 * `GET /api/events`: a Server-Sent Events stream of small change
 * notifications (`event: change`, `data: {"topic":"endpoints"}`). Producers
 * call `publish(topic)` as often as they like; each topic goes out at most
 * once per `coalesceMs`, so a fleet of 10,000 agents coming online costs a
 * few notifications per second, not 10,000.
 */
export class EventHub {
  private readonly opts: Required<EventHubOptions>
  private readonly clients = new Set<Client>()
  private readonly pending = new Set<EventTopic>()
  private flushTimer: NodeJS.Timeout | null = null
  private keepAliveTimer: NodeJS.Timeout | null = null
  private nextId = 1
  private closed = false
  /** Notifications written (one per topic per flush), for tests and metrics. */
  sent = 0

  constructor (options: EventHubOptions) {
    this.opts = { maxClients: 100, keepAliveMs: 15_000, coalesceMs: 250, maxBufferedBytes: 64 * 1024, ...options }
  }

  get clientCount (): number {
    return this.clients.size
  }

  /** Notes that `topic` changed; listeners hear of it within `coalesceMs`. */
  publish (topic: EventTopic): void {
    if (this.closed || this.clients.size === 0) return
    this.pending.add(topic)
    if (this.flushTimer === null) {
      this.flushTimer = setTimeout(() => this.flush(), this.opts.coalesceMs)
      this.flushTimer.unref()
    }
  }

  /**
   * Serves `/api/events` (returns false for any other path). `authorize`
   * throws RG_ERR_UNAUTHORIZED without the admin bearer token.
   */
  handle (req: IncomingMessage, res: ServerResponse, authorize: (req: IncomingMessage) => void): boolean {
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '')
    if (path !== '/api/events') return false
    try {
      authorize(req)
      if (req.method !== 'GET') throw new RelaygateError('RG_ERR_METHOD_NOT_ALLOWED', `${req.method ?? '?'} is not allowed on /api/events`)
      if (this.closed) throw new RelaygateError('RG_ERR_CLOSED', 'server is shutting down')
      if (this.clients.size >= this.opts.maxClients) {
        throw new RelaygateError('RG_ERR_QUEUE_FULL', `too many event streams open (at most ${this.opts.maxClients}); close another dashboard tab`)
      }
    } catch (err) {
      sendError(res, toRelaygateError(err))
      return true
    }
    this.accept(req, res)
    return true
  }

  /** Ends every stream; later requests get 503. Idempotent. */
  close (): void {
    if (this.closed) return
    this.closed = true
    this.pending.clear()
    if (this.flushTimer !== null) clearTimeout(this.flushTimer)
    if (this.keepAliveTimer !== null) clearInterval(this.keepAliveTimer)
    this.flushTimer = null
    this.keepAliveTimer = null
    for (const client of [...this.clients]) this.drop(client, true)
  }

  private accept (req: IncomingMessage, res: ServerResponse): void {
    const client: Client = { res, id: this.nextId++ }
    this.clients.add(client)
    req.socket.setNoDelay(true)
    req.socket.setTimeout(0)
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      connection: 'keep-alive'
    })
    // `ready` tells the client it is subscribed: every change from now on reaches it.
    res.write('retry: 2000\n\nevent: ready\ndata: {}\n\n')
    res.once('close', () => this.drop(client, false))
    this.opts.logger.debug({ client: client.id, clients: this.clients.size }, 'event stream open')
    if (this.keepAliveTimer === null) {
      this.keepAliveTimer = setInterval(() => this.broadcast(': keep-alive\n\n'), this.opts.keepAliveMs)
      this.keepAliveTimer.unref()
    }
  }

  private drop (client: Client, end: boolean): void {
    if (!this.clients.delete(client)) return
    if (end) client.res.end()
    else client.res.destroy()
    this.opts.logger.debug({ client: client.id, clients: this.clients.size }, 'event stream closed')
    if (this.clients.size === 0 && this.keepAliveTimer !== null) {
      clearInterval(this.keepAliveTimer)
      this.keepAliveTimer = null
    }
  }

  private flush (): void {
    this.flushTimer = null
    const topics = [...this.pending]
    this.pending.clear()
    if (topics.length === 0) return
    this.sent += topics.length
    this.broadcast(topics.map(topic => `event: change\ndata: ${JSON.stringify({ topic })}\n\n`).join(''))
  }

  private broadcast (text: string): void {
    for (const client of [...this.clients]) {
      // A reader that stopped reading is dropped rather than buffered for without bound.
      if (client.res.writableLength > this.opts.maxBufferedBytes) {
        this.opts.logger.info({ client: client.id }, 'event stream not read: dropped')
        this.drop(client, false)
        continue
      }
      client.res.write(text)
    }
  }
}
