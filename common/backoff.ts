/**
 * Exponential backoff with full jitter (AWS architecture blog), capped, and
 * with an end: `next()` returns undefined once `giveUpAfterMs` has passed
 * since the first failure of the current streak.
 */
export interface BackoffOptions {
  baseMs?: number
  maxMs?: number
  /** 0 means never give up. */
  giveUpAfterMs?: number
  random?: () => number
  now?: () => number
}

export class Backoff {
  private attempt = 0
  private streakStart = 0
  private readonly baseMs: number
  private readonly maxMs: number
  private readonly giveUpAfterMs: number
  private readonly random: () => number
  private readonly now: () => number

  constructor (options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 250
    this.maxMs = options.maxMs ?? 30_000
    this.giveUpAfterMs = options.giveUpAfterMs ?? 0
    this.random = options.random ?? Math.random
    this.now = options.now ?? Date.now
  }

  get attempts (): number {
    return this.attempt
  }

  /** Delay before the next try, or undefined when it is time to give up. */
  next (): number | undefined {
    const now = this.now()
    if (this.attempt === 0) this.streakStart = now
    if (this.giveUpAfterMs > 0 && now - this.streakStart >= this.giveUpAfterMs) return undefined
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30))
    this.attempt++
    return Math.round(ceiling / 2 + this.random() * ceiling / 2)
  }

  /** A success ends the streak. */
  reset (): void {
    this.attempt = 0
  }
}
