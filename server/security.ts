import type { Logger } from 'pino'

/** Something a relay (or the network) did that end-to-end authentication caught. */
export interface SecurityEvent {
  at: number
  /** RG_ERR_REPORT_FORGED (the server refused a report), RG_ERR_ORDER_FORGED / RG_ERR_ORDER_REPLAYED (an agent refused an order). */
  code: string
  /** The relay the message came through. */
  relayId: string
  endpointId: string | null
  edgeId: string | null
  /** The message kind (job, job-result, snapshot, tunnel-offer, ...). */
  kind: string
  /** What it was about: a job id, a tunnel id, or ''. */
  ref: string
  message: string
}

/**
 * The server's record of tampering caught end to end, newest first, bounded
 * (`GET /api/security-events`, a count per relay in `GET /api/relays`, and a
 * warn log line each). Kept in memory: a restart starts a new record.
 */
export class SecurityLog {
  private readonly events: SecurityEvent[] = []
  private readonly perRelay = new Map<string, number>()
  private readonly listeners: Array<(e: SecurityEvent) => void> = []

  constructor (private readonly logger: Logger, private readonly max = 1000) {}

  record (event: Omit<SecurityEvent, 'at'>): void {
    const e: SecurityEvent = { at: Date.now(), ...event }
    this.events.unshift(e)
    if (this.events.length > this.max) this.events.pop()
    this.perRelay.set(e.relayId, (this.perRelay.get(e.relayId) ?? 0) + 1)
    this.logger.warn({ code: e.code, relayId: e.relayId, endpointId: e.endpointId, edgeId: e.edgeId, kind: e.kind, ref: e.ref }, `tampering caught: ${e.message}`)
    for (const l of this.listeners) l(e)
  }

  list (limit = 100, filter: { relayId?: string, endpointId?: string } = {}): SecurityEvent[] {
    return this.events.filter(e => (filter.relayId === undefined || e.relayId === filter.relayId) && (filter.endpointId === undefined || e.endpointId === filter.endpointId)).slice(0, limit)
  }

  countFor (relayId: string): number {
    return this.perRelay.get(relayId) ?? 0
  }

  get total (): number {
    let n = 0
    for (const c of this.perRelay.values()) n += c
    return n
  }

  onEvent (listener: (e: SecurityEvent) => void): void {
    this.listeners.push(listener)
  }
}
