import { setClause, type SqlDriver } from './sql-store.js'

/**
 * The rollouts of self-updates (issue 16) as the store keeps them: one row
 * per rollout, one per target (an endpoint or a relay). The queries are
 * written once for both backends (sql-store.ts); the tables are in
 * sqlite-store.ts and pg-store.ts (migration 4).
 */
export type RolloutState = 'running' | 'paused' | 'aborted' | 'succeeded' | 'failed'
export type UpdateTargetState = 'pending' | 'sent' | 'downloading' | 'verifying' | 'installing' | 'restarting' | 'succeeded' | 'failed' | 'cancelled'
export const FINAL_TARGET_STATES: readonly UpdateTargetState[] = ['succeeded', 'failed', 'cancelled']

export interface RolloutRecord {
  id: string
  /** What is updated: endpoints' agents or relays. */
  kind: 'agents' | 'relays'
  artifact: string
  sha256: string
  size: number
  version: string
  state: RolloutState
  /** Why it is paused, failed or aborted. */
  reason: string | null
  /** A new version not online within this is rolled back (s). */
  healthSeconds: number
  /** Targets updating at once, at most. */
  maxParallel: number
  createdAt: number
  /** Targets not updated by then fail (ms since the epoch). */
  deadline: number
}

export interface UpdateTargetRecord {
  updateId: string
  /** An endpoint id (kind agents) or a relay id (kind relays). */
  targetId: string
  canary: boolean
  state: UpdateTargetState
  progress: number
  bytes: number
  /** The version it ran when the update was sent, and the one it reported last. */
  fromVersion: string | null
  running: string | null
  errorCode: string | null
  errorMessage: string | null
  sentAt: number | null
  updatedAt: number
}

export interface UpdateStore {
  createRollout: (rollout: RolloutRecord, targets: Array<{ id: string, canary: boolean }>) => Promise<void>
  getRollout: (id: string) => Promise<RolloutRecord | undefined>
  listRollouts: (limit: number) => Promise<RolloutRecord[]>
  /** Rollouts still running or paused, oldest first. */
  activeRollouts: () => Promise<RolloutRecord[]>
  /** Changes a rollout's state, only from one of `from` (one statement: two replicas cannot both win). */
  setRolloutState: (id: string, state: RolloutState, reason: string | null, from: readonly RolloutState[]) => Promise<boolean>
  listUpdateTargets: (updateId: string) => Promise<UpdateTargetRecord[]>
  getUpdateTarget: (updateId: string, targetId: string) => Promise<UpdateTargetRecord | undefined>
  /** Changes a target, only while its state is one of `from` (when given). */
  updateUpdateTarget: (updateId: string, targetId: string, patch: Partial<Omit<UpdateTargetRecord, 'updateId' | 'targetId'>>, from?: readonly UpdateTargetState[]) => Promise<boolean>
  /** Ends the unfinished targets of a rollout (or those in one of `from`): abort, canary failed, deadline. */
  endUpdateTargets: (updateId: string, state: 'failed' | 'cancelled', code: string, message: string, at: number, from?: readonly UpdateTargetState[]) => Promise<number>
}

interface RolloutRow {
  id: string, kind: string, artifact: string, sha256: string, size: number, version: string, state: string, reason: string | null,
  health_seconds: number, max_parallel: number, created_at: number, deadline: number
}
interface UpdateTargetRow {
  update_id: string, target_id: string, canary: number, state: string, progress: number, bytes: number, from_version: string | null,
  running: string | null, error_code: string | null, error_message: string | null, sent_at: number | null, updated_at: number
}

const rolloutFromRow = (r: RolloutRow): RolloutRecord => ({
  id: r.id,
  kind: r.kind as RolloutRecord['kind'],
  artifact: r.artifact,
  sha256: r.sha256,
  size: Number(r.size),
  version: r.version,
  state: r.state as RolloutState,
  reason: r.reason,
  healthSeconds: Number(r.health_seconds),
  maxParallel: Number(r.max_parallel),
  createdAt: Number(r.created_at),
  deadline: Number(r.deadline)
})

const targetFromRow = (r: UpdateTargetRow): UpdateTargetRecord => ({
  updateId: r.update_id,
  targetId: r.target_id,
  canary: Number(r.canary) === 1,
  state: r.state as UpdateTargetState,
  progress: Number(r.progress),
  bytes: Number(r.bytes),
  fromVersion: r.from_version,
  running: r.running,
  errorCode: r.error_code,
  errorMessage: r.error_message,
  sentAt: r.sent_at === null ? null : Number(r.sent_at),
  updatedAt: Number(r.updated_at)
})

const targetColumns: Record<string, string> = {
  state: 'state', progress: 'progress', bytes: 'bytes', fromVersion: 'from_version', running: 'running', canary: 'canary',
  errorCode: 'error_code', errorMessage: 'error_message', sentAt: 'sent_at', updatedAt: 'updated_at'
}

const placeholders = (values: readonly unknown[]): string => values.map(() => '?').join(', ')
const UNFINISHED = "state NOT IN ('succeeded', 'failed', 'cancelled')"

export class SqlUpdateStore implements UpdateStore {
  constructor (private readonly db: SqlDriver) {}

  async createRollout (u: RolloutRecord, targets: Array<{ id: string, canary: boolean }>): Promise<void> {
    await this.db.transaction(async tx => {
      await tx.run(`INSERT INTO updates (id, kind, artifact, sha256, size, version, state, reason, health_seconds, max_parallel, created_at, deadline)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [u.id, u.kind, u.artifact, u.sha256, u.size, u.version, u.state, u.reason, u.healthSeconds, u.maxParallel, u.createdAt, u.deadline])
      for (const t of targets) {
        await tx.run('INSERT INTO update_targets (update_id, target_id, canary, state, updated_at) VALUES (?, ?, ?, \'pending\', ?)', [u.id, t.id, t.canary ? 1 : 0, u.createdAt])
      }
    })
  }

  async getRollout (id: string): Promise<RolloutRecord | undefined> {
    const row = await this.db.get<RolloutRow>('SELECT * FROM updates WHERE id = ?', [id])
    return row === undefined ? undefined : rolloutFromRow(row)
  }

  async listRollouts (limit: number): Promise<RolloutRecord[]> {
    return (await this.db.all<RolloutRow>('SELECT * FROM updates ORDER BY created_at DESC, id LIMIT ?', [limit])).map(rolloutFromRow)
  }

  async activeRollouts (): Promise<RolloutRecord[]> {
    return (await this.db.all<RolloutRow>('SELECT * FROM updates WHERE state IN (\'running\', \'paused\') ORDER BY created_at, id')).map(rolloutFromRow)
  }

  async setRolloutState (id: string, state: RolloutState, reason: string | null, from: readonly RolloutState[]): Promise<boolean> {
    return await this.db.run(`UPDATE updates SET state = ?, reason = ? WHERE id = ? AND state IN (${placeholders(from)})`, [state, reason, id, ...from]) > 0
  }

  async listUpdateTargets (updateId: string): Promise<UpdateTargetRecord[]> {
    return (await this.db.all<UpdateTargetRow>('SELECT * FROM update_targets WHERE update_id = ? ORDER BY canary DESC, target_id', [updateId])).map(targetFromRow)
  }

  async getUpdateTarget (updateId: string, targetId: string): Promise<UpdateTargetRecord | undefined> {
    const row = await this.db.get<UpdateTargetRow>('SELECT * FROM update_targets WHERE update_id = ? AND target_id = ?', [updateId, targetId])
    return row === undefined ? undefined : targetFromRow(row)
  }

  async updateUpdateTarget (updateId: string, targetId: string, patch: Partial<Omit<UpdateTargetRecord, 'updateId' | 'targetId'>>, from?: readonly UpdateTargetState[]): Promise<boolean> {
    const set = setClause({ ...patch, canary: patch.canary === undefined ? undefined : (patch.canary ? 1 : 0) }, targetColumns)
    if (set.sql === '') return false
    const guard = from === undefined ? '' : ` AND state IN (${placeholders(from)})`
    return await this.db.run(`UPDATE update_targets SET ${set.sql} WHERE update_id = ? AND target_id = ?${guard}`, [...set.values, updateId, targetId, ...(from ?? [])]) > 0
  }

  async endUpdateTargets (updateId: string, state: 'failed' | 'cancelled', code: string, message: string, at: number, from?: readonly UpdateTargetState[]): Promise<number> {
    const which = from === undefined ? UNFINISHED : `state IN (${placeholders(from)})`
    return await this.db.run(`UPDATE update_targets SET state = ?, error_code = ?, error_message = ?, updated_at = ? WHERE update_id = ? AND ${which}`,
      [state, code, message, at, updateId, ...(from ?? [])])
  }
}

/** The tables, in SQLite's or PostgreSQL's types (the store's schema and migration 4). */
export function updateTables (dialect: 'sqlite' | 'pg'): string {
  const big = dialect === 'pg' ? 'BIGINT' : 'INTEGER'
  const real = dialect === 'pg' ? 'DOUBLE PRECISION' : 'REAL'
  return `
CREATE TABLE IF NOT EXISTS updates (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  artifact TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size ${big} NOT NULL,
  version TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT,
  health_seconds INTEGER NOT NULL,
  max_parallel INTEGER NOT NULL,
  created_at ${big} NOT NULL,
  deadline ${big} NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_state ON updates (state);
CREATE TABLE IF NOT EXISTS update_targets (
  update_id TEXT NOT NULL REFERENCES updates(id) ON DELETE CASCADE,
  target_id TEXT NOT NULL,
  canary INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  progress ${real} NOT NULL DEFAULT 0,
  bytes ${big} NOT NULL DEFAULT 0,
  from_version TEXT,
  running TEXT,
  error_code TEXT,
  error_message TEXT,
  sent_at ${big},
  updated_at ${big} NOT NULL,
  PRIMARY KEY (update_id, target_id)
);
`
}
