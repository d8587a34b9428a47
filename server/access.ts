import type { IncomingMessage } from 'node:http'
import type { Logger } from 'pino'
import { hashToken } from '../protocol/auth.js'
import { RelaygateError } from '../protocol/errors.js'
import { roleAllows, type AccessStore, type AuditEntry, type AuditFilter, type AuditRecord, type Role, type TokenRecord } from './access-store.js'
import { WriteBehind } from './write-behind.js'
import type { TunnelSessionEvent } from './tunnels.js'

/** Who sent a request: the named token it carried. */
export interface Principal { tokenId: string, name: string, role: Role }

/** Throws RG_ERR_UNAUTHORIZED without a valid token, RG_ERR_FORBIDDEN when its role is below `needed`. */
export type Authorize = (req: IncomingMessage, needed?: Role) => Principal

/**
 * The API tokens in force, kept in memory by hash (every request is checked;
 * the store is read only when they change, here or at another replica).
 */
export class AccessControl {
  private byHash = new Map<string, TokenRecord>()
  private readonly touches: WriteBehind<{ id: string, at: number }>
  private readonly lastTouch = new Map<string, number>()

  constructor (private readonly store: AccessStore, logger: Logger) {
    this.touches = new WriteBehind({
      what: 'token last-used times',
      logger,
      key: t => t.id,
      merge: (_prev, next) => next,
      write: async batch => {
        const at = Math.max(...batch.map(t => t.at))
        await this.store.touchTokens(batch.map(t => t.id), at)
      }
    })
  }

  /** Reads the tokens again (after a change here or at another replica). */
  async reload (): Promise<void> {
    const next = new Map<string, TokenRecord>()
    for (const t of await this.store.listTokens()) if (t.revokedAt === null) next.set(t.tokenHash, t)
    this.byHash = next
  }

  readonly authorize: Authorize = (req, needed = 'viewer') => {
    const header = req.headers.authorization ?? ''
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match === null) throw new RelaygateError('RG_ERR_UNAUTHORIZED', 'send Authorization: Bearer <API token>')
    const token = this.byHash.get(hashToken(match[1]))
    if (token === undefined) throw new RelaygateError('RG_ERR_UNAUTHORIZED', 'unknown or revoked API token')
    const principal: Principal = { tokenId: token.id, name: token.name, role: token.role }
    this.touch(token.id)
    if (!roleAllows(token.role, needed)) throw forbidden(principal, needed, `${req.method ?? '?'} ${(req.url ?? '').split('?')[0]}`)
    return principal
  }

  /** Last-used times: written at most once a minute per token. */
  private touch (id: string): void {
    const now = Date.now()
    if (now - (this.lastTouch.get(id) ?? 0) < 60_000) return
    this.lastTouch.set(id, now)
    this.touches.add({ id, at: now })
  }

  async close (): Promise<void> {
    await this.touches.close()
  }
}

export function forbidden (who: Principal, needed: Role, what: string): RelaygateError {
  return new RelaygateError('RG_ERR_FORBIDDEN', `token "${who.name}" has role ${who.role}; ${what} needs ${needed}${needed === 'admin' ? '' : ' or admin'}`)
}

export interface AuditOptions {
  store: AccessStore
  /** Where the retention is kept (the store's meta table, shared by replicas). */
  meta: { get: (key: string) => Promise<string | undefined>, set: (key: string, value: string) => Promise<void> }
  logger: Logger
  /** Tells the dashboards (GET /api/events). */
  publish: () => void
}

/** Entries are kept this many days unless the setting says otherwise. */
export const DEFAULT_AUDIT_RETENTION_DAYS = 365
const RETENTION_KEY = 'auditRetentionDays'

/** Entries waiting to be written, at most (the database away): more are counted and logged, their log lines kept. */
const MAX_WAITING_ENTRIES = 100_000
/** A refusal or failure repeated (same token, action, target, source, result) within this window is counted, not stored again. */
const REPEAT_WINDOW_MS = 10_000
/** Kinds of repeated refusals counted at once, at most (more are stored one by one). */
const MAX_REPEAT_KINDS = 10_000

/**
 * The audit log: every change made through the API and every tunnel
 * session, kept in the store (written in batches, retried while the
 * database is away) and logged at once as one pino line each
 * (`"audit": {…}`) for log shippers. Entries never carry secrets.
 */
export class AuditLog {
  private readonly writer: WriteBehind<{ seq: number, entry: AuditEntry }>
  private seq = 0
  private readonly pruneTimer: NodeJS.Timeout
  private readonly logger: Logger
  /** Refusals seen in this window, by kind, with how often they came again. */
  private readonly repeats = new Map<string, { entry: AuditEntry, again: number }>()
  private repeatTimer: NodeJS.Timeout | null = null
  /** Entries are kept this many days (hourly, and when it changes): the setting auditRetentionDays. */
  retentionDays = DEFAULT_AUDIT_RETENTION_DAYS

  constructor (private readonly opts: AuditOptions) {
    this.logger = opts.logger
    this.writer = new WriteBehind({
      what: 'audit entries',
      logger: opts.logger,
      maxPending: MAX_WAITING_ENTRIES,
      key: e => String(e.seq),
      merge: prev => prev,
      write: async batch => {
        await opts.store.addAudit(batch.sort((a, b) => a.seq - b.seq).map(e => e.entry))
        opts.publish()
      }
    })
    this.pruneTimer = setInterval(() => { void this.prune() }, 3600_000)
    this.pruneTimer.unref()
  }

  /**
   * Records an entry: logged at once, stored within a moment. A refusal or
   * failure that repeats one of the last 10 s (same token, action, target,
   * source and result) is only counted: at the end of the window one more
   * entry says how many times it came again (`detail.repeated`). A script
   * hammering a forbidden route costs two rows per 10 s, not one per request.
   */
  record (entry: Omit<AuditEntry, 'at'> & { at?: number }): void {
    const full: AuditEntry = { ...entry, at: entry.at ?? Date.now() }
    if (full.result !== 'ok') {
      const kind = [full.token, full.action, full.target, full.source, full.result].join('\n')
      const seen = this.repeats.get(kind)
      if (seen !== undefined) {
        seen.again++
        seen.entry = full
        return
      }
      if (this.repeats.size < MAX_REPEAT_KINDS) this.repeats.set(kind, { entry: full, again: 0 })
      this.repeatTimer ??= setTimeout(() => this.endRepeatWindow(), REPEAT_WINDOW_MS).unref()
    }
    this.store(full)
  }

  private store (entry: AuditEntry): void {
    this.logger.info({ audit: { ...entry, at: new Date(entry.at).toISOString() } }, `audit ${entry.action} ${entry.result}`)
    this.writer.add({ seq: ++this.seq, entry })
  }

  /** The window's repeats become one entry each (the latest time, and how many came again). */
  private endRepeatWindow (): void {
    if (this.repeatTimer !== null) clearTimeout(this.repeatTimer)
    this.repeatTimer = null
    for (const { entry, again } of this.repeats.values()) {
      if (again > 0) this.store({ ...entry, detail: { ...entry.detail, repeated: again } })
    }
    this.repeats.clear()
  }

  /** A tunnel session opened or closed (by whom it was asked for; bytes each way at close). */
  tunnelSession (e: TunnelSessionEvent): void {
    this.record({
      token: e.by?.token ?? null,
      action: `tunnel.${e.kind}`,
      target: e.endpointId,
      source: e.by?.source ?? null,
      result: 'ok',
      detail: { tunnelId: e.tunnelId, edgeId: e.edgeId, relayId: e.relayId, ...(e.kind === 'close' ? { bytesToAgent: e.bytesToAgent, bytesFromAgent: e.bytesFromAgent, seconds: e.seconds, reason: e.reason } : {}) }
    })
  }

  /** Newest first; entries recorded here and not yet written (repeats counted so far too) are written first. */
  async list (filter: AuditFilter): Promise<AuditRecord[]> {
    this.endRepeatWindow()
    await this.writer.flush()
    return await this.opts.store.listAudit(filter)
  }

  /** Reads the retention setting (at start, and when another replica changed it), then prunes. */
  async loadRetention (): Promise<void> {
    const stored = Number(await this.opts.meta.get(RETENTION_KEY))
    this.retentionDays = Number.isInteger(stored) && stored > 0 ? stored : DEFAULT_AUDIT_RETENTION_DAYS
    await this.prune()
  }

  /** Changes the retention (PATCH /api/settings) and deletes what is now too old. */
  async setRetention (days: number): Promise<void> {
    await this.opts.meta.set(RETENTION_KEY, String(days))
    this.retentionDays = days
    await this.prune()
  }

  /** Deletes what is older than the retention; returns how many. */
  async prune (now = Date.now()): Promise<number> {
    try {
      const removed = await this.opts.store.pruneAudit(now - this.retentionDays * 86_400_000)
      if (removed > 0) this.logger.info({ removed, retentionDays: this.retentionDays }, 'old audit entries deleted')
      return removed
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'old audit entries not deleted; trying again in an hour')
      return 0
    }
  }

  async close (): Promise<void> {
    clearInterval(this.pruneTimer)
    this.endRepeatWindow()
    await this.writer.close()
  }
}
