import type { Logger } from 'pino'
import { Backoff } from '../common/backoff.js'
import type { Store, EndpointTouch } from './store.js'

/** How long touches wait to be written together (ms). */
const FLUSH_MS = 200
/** Endpoints with a touch waiting, at most; more are counted as lost and logged. */
const MAX_PENDING = 1_000_000

/**
 * Presence writes (an endpoint's last seen time and relay), merged per
 * endpoint and written together: a relay with 15,000 agents coming back
 * costs a few transactions, not 15,000 commits. A write that fails (the
 * database restarting) is merged back and tried again with backoff; the
 * latest value per endpoint is what counts, so nothing is lost by waiting.
 */
export class PresenceWriter {
  private readonly store: Store
  private readonly logger: Logger
  private pending = new Map<string, EndpointTouch>()
  private timer: NodeJS.Timeout | null = null
  private writing: Promise<void> | null = null
  private readonly backoff = new Backoff({ baseMs: 250, maxMs: 10_000 })
  private closed = false
  /** Touches dropped because MAX_PENDING endpoints were waiting. */
  lost = 0

  constructor (store: Store, logger: Logger) {
    this.store = store
    this.logger = logger
  }

  touch (id: string, lastSeen: number, relayId: string | null): void {
    if (this.closed) return
    this.merge({ id, lastSeen, relayId })
    this.schedule(FLUSH_MS)
  }

  /** Writes what waits (once; a failure is merged back for the next try). */
  async flush (): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    while (this.writing !== null) await this.writing
    if (this.pending.size === 0) return
    const batch = [...this.pending.values()]
    this.pending = new Map()
    this.writing = this.store.touchEndpoints(batch).then(() => {
      this.backoff.reset()
    }, (err: Error) => {
      // Newer touches that arrived meanwhile win over the ones merged back.
      const newer = this.pending
      this.pending = new Map()
      for (const t of batch) this.merge(t)
      for (const t of newer.values()) this.merge(t)
      const delay = this.backoff.next() ?? 10_000
      this.logger.warn({ err: err.message, endpoints: this.pending.size, retryInMs: delay }, 'presence not written; trying again')
      if (!this.closed) this.schedule(delay)
    }).finally(() => { this.writing = null })
    await this.writing
  }

  /** Writes what waits, then takes no more. */
  async close (): Promise<void> {
    await this.flush()
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    if (this.pending.size > 0) this.logger.error({ endpoints: this.pending.size }, 'presence of these endpoints not written at shutdown')
  }

  private merge (t: EndpointTouch): void {
    const prev = this.pending.get(t.id)
    if (prev === undefined && this.pending.size >= MAX_PENDING) {
      if (this.lost++ % 10_000 === 0) this.logger.error({ lost: this.lost }, 'presence writes lost: too many endpoints waiting')
      return
    }
    if (prev !== undefined && prev.lastSeen > t.lastSeen) return
    this.pending.set(t.id, { id: t.id, lastSeen: t.lastSeen, relayId: t.relayId ?? prev?.relayId ?? null })
  }

  private schedule (delay: number): void {
    if (this.timer !== null) return
    this.timer = setTimeout(() => { this.timer = null; void this.flush() }, delay)
    this.timer.unref()
  }
}
