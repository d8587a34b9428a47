/**
 * Failures allowed per key (a peer address, an endpoint): a burst, refilled
 * at a steady rate, like a token bucket that only failures drain, so
 * legitimate traffic (which does not fail) is never slowed, however much of
 * it there is. Bounded: at most `maxKeys` keys are remembered; a new one
 * pushes out the key that failed least recently.
 */
export interface FailureLimiterOptions {
  burst: number
  perSecond: number
  maxKeys: number
  now?: () => number
}

interface Bucket { tokens: number, at: number }

export class FailureLimiter {
  private readonly buckets = new Map<string, Bucket>()
  private readonly opts: Required<FailureLimiterOptions>

  constructor (options: FailureLimiterOptions) {
    this.opts = { now: Date.now, ...options }
  }

  /** True while `key` may still try. */
  allows (key: string): boolean {
    return this.level(key) >= 1
  }

  /** Seconds until `key` may try again (0 if it may now). */
  retryAfter (key: string): number {
    const missing = 1 - this.level(key)
    return missing <= 0 ? 0 : Math.ceil(missing / this.opts.perSecond)
  }

  /** Counts one failure of `key`. */
  fail (key: string): void {
    const tokens = this.level(key)
    this.buckets.delete(key)
    this.buckets.set(key, { tokens: Math.max(0, tokens - 1), at: this.opts.now() })
    if (this.buckets.size > this.opts.maxKeys) this.buckets.delete(this.buckets.keys().next().value!)
  }

  get size (): number {
    return this.buckets.size
  }

  private level (key: string): number {
    const b = this.buckets.get(key)
    if (b === undefined) return this.opts.burst
    return Math.min(this.opts.burst, b.tokens + (this.opts.now() - b.at) / 1000 * this.opts.perSecond)
  }
}
