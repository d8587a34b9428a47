import type { Logger } from 'pino'
import { Backoff } from '../common/backoff.js'
import { laterTouch, type EndpointTouch, type SnapshotRecord, type Store } from './store.js'

/** How long writes wait to be written together (ms). */
const FLUSH_MS = 200
/** Keys with a write waiting, at most; more are counted as lost and logged. */
const MAX_PENDING = 1_000_000

export interface WriteBehindOptions<T> {
  /** What the log calls these writes. */
  what: string
  logger: Logger
  /** Writes with the same key are merged: only the result is written. */
  key: (item: T) => string
  /** The write that stands when `next` arrives while `prev` waits (or is merged back after a failure). */
  merge: (prev: T, next: T) => T
  /** Writes a batch (one transaction, or a few statements). */
  write: (batch: T[]) => Promise<void>
  /** Keys waiting at most (default MAX_PENDING); more are counted as lost and logged. */
  maxPending?: number
}

/**
 * Writes that may wait a moment (presence, snapshots): merged per key and
 * written together, so a relay bringing back 15,000 agents costs a few
 * transactions, not 15,000 commits. A write that fails (the database
 * restarting) is merged back and tried again with backoff; the latest value
 * per key is what counts, so nothing is lost by waiting.
 */
export class WriteBehind<T> {
  private readonly opts: WriteBehindOptions<T>
  private pending = new Map<string, T>()
  private timer: NodeJS.Timeout | null = null
  private writing: Promise<void> | null = null
  private readonly backoff = new Backoff({ baseMs: 250, maxMs: 10_000 })
  private closed = false
  /** Writes dropped because maxPending keys were waiting. */
  lost = 0

  constructor (options: WriteBehindOptions<T>) {
    this.opts = options
  }

  add (item: T): void {
    if (this.closed) return
    this.merge(item)
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
    this.writing = this.opts.write(batch).then(() => {
      this.backoff.reset()
    }, (err: Error) => {
      // Newer writes that arrived meanwhile win over the ones merged back.
      const newer = this.pending
      this.pending = new Map()
      for (const item of batch) this.merge(item)
      for (const item of newer.values()) this.merge(item)
      const delay = this.backoff.next() ?? 10_000
      this.opts.logger.warn({ err: err.message, waiting: this.pending.size, retryInMs: delay }, `${this.opts.what} not written; trying again`)
      if (!this.closed) this.schedule(delay)
    }).finally(() => { this.writing = null })
    await this.writing
  }

  /** Writes what waits, then takes no more. */
  async close (): Promise<void> {
    await this.flush()
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    if (this.pending.size > 0) this.opts.logger.error({ waiting: this.pending.size }, `${this.opts.what} not written at shutdown`)
  }

  private merge (item: T): void {
    const key = this.opts.key(item)
    const prev = this.pending.get(key)
    if (prev === undefined && this.pending.size >= (this.opts.maxPending ?? MAX_PENDING)) {
      if (this.lost++ % 10_000 === 0) this.opts.logger.error({ lost: this.lost }, `${this.opts.what} lost: too many waiting`)
      return
    }
    this.pending.set(key, prev === undefined ? item : this.opts.merge(prev, item))
  }

  private schedule (delay: number): void {
    if (this.timer !== null) return
    this.timer = setTimeout(() => { this.timer = null; void this.flush() }, delay)
    this.timer.unref()
  }
}

/** Presence: an endpoint's (and its agent's) last seen time and relay; the latest counts, a null relay keeps the one named. */
export function presenceWriter (store: Store, logger: Logger): WriteBehind<EndpointTouch> {
  return new WriteBehind<EndpointTouch>({
    what: 'presence',
    logger,
    key: t => `${t.id}\n${t.edgeId ?? ''}`,
    merge: laterTouch,
    write: async batch => await store.touchEndpoints(batch)
  })
}

/** Snapshots: one per endpoint, the last to arrive, unless it was taken before the one it would replace from the same agent (a replay). */
export function snapshotWriter (store: Store, logger: Logger): WriteBehind<SnapshotRecord> {
  return new WriteBehind<SnapshotRecord>({
    what: 'snapshots',
    logger,
    key: s => s.endpointId,
    merge: (prev, next) => next.edgeId === prev.edgeId && Number(prev.snapshot.takenAt ?? 0) >= Number(next.snapshot.takenAt ?? 0) ? prev : next,
    write: async batch => await store.saveSnapshots(batch)
  })
}
