import { RelaygateError } from '../protocol/index.js'
import type { AgentRegistry } from './agents.js'

/**
 * The check-in interval agents are told, and the longest one some may
 * still be using after a change (they learn it at their next check-in), so
 * the liveness sweep does not drop them in between.
 */
export class IntervalTracker {
  current = 5
  private longest = 5
  private changedAt = Date.now()

  change (seconds: number): boolean {
    if (seconds === this.current) return false
    this.longest = Math.max(this.longest, seconds, this.current)
    this.changedAt = Date.now()
    this.current = seconds
    return true
  }

  /** Silence after which an agent counts as gone (ms). */
  deadline (now: number): number {
    const deadline = 3 * this.longest * 1000 + 1000
    if (now - this.changedAt > deadline) this.longest = this.current
    return deadline
  }
}

/** Drops agents that did not authenticate in time or stopped checking in. */
export function sweep (agents: AgentRegistry, intervals: IntervalTracker, authTimeoutMs: number, now = Date.now()): void {
  const deadline = intervals.deadline(now)
  for (const s of agents.sessions.values()) {
    if (!s.ready) {
      if (now - s.createdAt > authTimeoutMs) s.fail(new RelaygateError('RG_ERR_LIVENESS', 'authentication did not finish in time'))
    } else if (now - s.lastCheckin > deadline) {
      s.fail(new RelaygateError('RG_ERR_LIVENESS', `no check-in for ${Math.round((now - s.lastCheckin) / 1000)} s`))
    }
  }
}

/** Agents gone offline, sent to the server in one message per 100 ms: a site whose network blips sends one, not thousands. */
export class OfflineBatch {
  private sids: number[] = []
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly flush: (sids: number[]) => void) {}

  add (sid: number): void {
    this.sids.push(sid)
    this.timer ??= setTimeout(() => this.sendNow(), 100)
  }

  /** Sends what is gathered at once (before anything that must come after it). */
  sendNow (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    const sids = this.sids
    this.sids = []
    if (sids.length > 0) this.flush(sids)
  }

  clear (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.sids = []
  }
}
