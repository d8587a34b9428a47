import type { Duplex } from 'node:stream'
import { RelaygateError } from '../protocol/errors.js'

export interface StreamPoolLimits {
  /** Streams in use at once; more requests wait (node's http.Agent had 64 sockets). */
  maxActive: number
  /** Requests waiting for a stream; more are refused with RG_ERR_QUEUE_FULL. */
  maxWaiting: number
  /** Kept-alive streams between requests, each for at most `idleMs`. */
  maxIdle: number
  idleMs: number
}

export interface Lease { stream: Duplex, reused: boolean }

interface Idle { stream: Duplex, timer: NodeJS.Timeout, drop: () => void }

function discard (stream: Duplex): void {
  stream.on('error', () => {})
  stream.destroy()
}

/**
 * The tunnel streams of one tunnel's proxied HTTP requests (http-splice.ts):
 * at most `maxActive` in use (the agent's link takes 256 streams), the rest
 * of the requests wait in order; streams whose last response completed stay
 * open for the next request unless the target closes them or sends
 * anything meanwhile.
 */
export class TunnelStreamPool {
  private readonly idle: Idle[] = []
  private readonly waiting: Array<{ resolve: (lease: Lease) => void, reject: (err: Error) => void }> = []
  private active = 0
  private closed = false
  private readonly limits: StreamPoolLimits

  constructor (private readonly open: () => Duplex, limits: Partial<StreamPoolLimits> = {}) {
    this.limits = { maxActive: 64, maxWaiting: 1024, maxIdle: 8, idleMs: 60_000, ...limits }
  }

  /** An idle stream, a new one, or the next one released (rejects when the tunnel closes or too many wait). */
  async acquire (): Promise<Lease> {
    if (this.closed) throw new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel closed')
    const entry = this.idle.at(-1)
    if (entry !== undefined) {
      this.unpark(entry)
      this.active++
      return { stream: entry.stream, reused: true }
    }
    if (this.active < this.limits.maxActive) {
      const stream = this.open()
      this.active++
      return { stream, reused: false }
    }
    if (this.waiting.length >= this.limits.maxWaiting) {
      throw new RelaygateError('RG_ERR_QUEUE_FULL', `${this.limits.maxWaiting} requests already wait for one of this tunnel's ${this.limits.maxActive} streams`)
    }
    return await new Promise<Lease>((resolve, reject) => this.waiting.push({ resolve, reject }))
  }

  /**
   * A request is done with its stream: `reusable` when its response was
   * complete and the target keeps the connection, for at most `idleMs`
   * (a second less than the target's Keep-Alive timeout); else destroyed.
   */
  release (stream: Duplex, reusable: boolean, idleMs = this.limits.idleMs): void {
    this.active--
    if (!reusable || this.closed || stream.destroyed || idleMs <= 0) {
      discard(stream)
    } else {
      const waiter = this.waiting.shift()
      if (waiter !== undefined) {
        this.active++
        waiter.resolve({ stream, reused: true })
        return
      }
      this.park(stream, Math.min(idleMs, this.limits.idleMs))
    }
    while (this.waiting.length > 0 && this.active < this.limits.maxActive) {
      const next = this.waiting.shift()!
      try {
        const fresh = this.open()
        this.active++
        next.resolve({ stream: fresh, reused: false })
      } catch (err) {
        next.reject(err as Error)
      }
    }
  }

  get counts (): { active: number, idle: number, waiting: number } {
    return { active: this.active, idle: this.idle.length, waiting: this.waiting.length }
  }

  destroy (): void {
    this.closed = true
    for (const entry of [...this.idle]) entry.drop()
    for (const waiter of this.waiting.splice(0)) waiter.reject(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel closed'))
  }

  private park (stream: Duplex, idleMs: number): void {
    if (this.idle.length >= this.limits.maxIdle) {
      discard(stream)
      return
    }
    const entry: Idle = {
      stream,
      timer: setTimeout(() => entry.drop(), idleMs),
      drop: () => {
        this.unpark(entry)
        discard(stream)
      }
    }
    entry.timer.unref()
    stream.on('data', entry.drop).once('end', entry.drop).once('close', entry.drop).on('error', entry.drop)
    this.idle.push(entry)
  }

  /** Takes an idle stream out of the idle list, its timer and its watchers. */
  private unpark (entry: Idle): void {
    const at = this.idle.indexOf(entry)
    if (at >= 0) this.idle.splice(at, 1)
    clearTimeout(entry.timer)
    entry.stream.off('data', entry.drop).off('end', entry.drop).off('close', entry.drop).off('error', entry.drop)
  }
}
