import type { Logger } from 'pino'
import type { Store, SecurityEventRecord } from './store.js'

/** Something a relay (or the network) did that end-to-end authentication caught. */
export interface SecurityEvent {
  /** RG_ERR_REPORT_FORGED (the server refused a report), RG_ERR_ORDER_FORGED / RG_ERR_ORDER_REPLAYED (an agent refused an order), RG_ERR_TUNNEL_TAMPERED. */
  code: string
  /** The relay the message came through. */
  relayId: string
  endpointId: string | null
  edgeId: string | null
  /** The message kind (job, job-result, snapshot, tunnel-offer, tunnel-stream, ...). */
  kind: string
  /** What it was about: a job id, a tunnel id, or ''. */
  ref: string
  message: string
}

/**
 * The server's record of tampering caught end to end: kept in the store,
 * aggregated per (relay, endpoint, edge id, code, kind) with a count, so a
 * relay flooding forgeries updates rows instead of adding them and cannot
 * push older evidence out (`GET /api/security-events`, a count per relay in
 * `GET /api/relays`, and a warn log line each).
 */
export class SecurityLog {
  private readonly listeners: Array<(e: SecurityEvent) => void> = []

  constructor (private readonly store: Store, private readonly logger: Logger) {}

  /** Logs and stores one event, then tells the listeners; never rejects (a store failure is logged). */
  async record (e: SecurityEvent): Promise<void> {
    this.logger.warn({ code: e.code, relayId: e.relayId, endpointId: e.endpointId, edgeId: e.edgeId, kind: e.kind, ref: e.ref }, `tampering caught: ${e.message}`)
    try {
      await this.store.recordSecurityEvent({ ...e, count: 1, firstAt: Date.now(), lastAt: Date.now() })
    } catch (err) {
      this.logger.error({ err: (err as Error).message }, 'could not store a security event')
    }
    for (const l of this.listeners) l(e)
  }

  async list (limit = 100, filter: { relayId?: string, endpointId?: string } = {}): Promise<SecurityEventRecord[]> {
    return await this.store.listSecurityEvents(limit, filter)
  }

  async countFor (relayId: string): Promise<number> {
    return await this.store.countSecurityEvents(relayId)
  }

  onEvent (listener: (e: SecurityEvent) => void): void {
    this.listeners.push(listener)
  }
}
