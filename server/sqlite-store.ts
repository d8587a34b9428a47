import Database from 'better-sqlite3'
import type { Database as DB, Statement } from 'better-sqlite3'
import { DEFAULT_SETTINGS, type Settings } from '../protocol/messages.js'
import { DEFAULT_JOB_DEADLINE_MS } from './store.js'
import type { Store, RelayRecord, EndpointRecord, RefusalRecord, EndpointAgentRecord, SnapshotRecord, ArtifactRecord, JobRecord, JobTargetRecord, JobTargetState, SecurityEventRecord } from './store.js'

const SCHEMA_VERSION = 3
/** Distinct edge ids kept per (endpoint, refusal code); more count together as edge id '*'. */
const REFUSED_EDGE_IDS_PER_CODE = 20

const schema = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS relays (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER,
  fingerprint TEXT,
  ws_url TEXT,
  wss_url TEXT,
  version TEXT,
  last_seen INTEGER
);
CREATE TABLE IF NOT EXISTS endpoints (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  tunnel_target TEXT,
  auth_key BLOB NOT NULL,
  tunnel_key BLOB NOT NULL,
  edge_id TEXT,
  created_at INTEGER NOT NULL,
  last_seen INTEGER,
  relay_id TEXT
);
CREATE TABLE IF NOT EXISTS endpoint_agents (
  endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
  edge_id TEXT NOT NULL,
  admitted_at INTEGER NOT NULL,
  last_seen INTEGER,
  PRIMARY KEY (endpoint_id, edge_id)
);
CREATE TABLE IF NOT EXISTS snapshots (
  endpoint_id TEXT PRIMARY KEY REFERENCES endpoints(id) ON DELETE CASCADE,
  edge_id TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  reason TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
  name TEXT PRIMARY KEY,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  artifact TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  path TEXT NOT NULL,
  run TEXT,
  created_at INTEGER NOT NULL,
  deadline INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS job_targets (
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  endpoint_id TEXT NOT NULL,
  state TEXT NOT NULL,
  progress REAL NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 0,
  relay_id TEXT,
  exit_code INTEGER,
  error_code TEXT,
  error_message TEXT,
  output TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS job_targets_endpoint ON job_targets(endpoint_id, state);
CREATE TABLE IF NOT EXISTS refusals (
  endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
  edge_id TEXT NOT NULL,
  code TEXT NOT NULL,
  count INTEGER NOT NULL,
  first_at INTEGER NOT NULL,
  last_at INTEGER NOT NULL,
  PRIMARY KEY (endpoint_id, edge_id, code)
);
CREATE TABLE IF NOT EXISTS security_events (
  relay_id TEXT NOT NULL,
  endpoint_id TEXT NOT NULL,
  edge_id TEXT NOT NULL,
  code TEXT NOT NULL,
  kind TEXT NOT NULL,
  ref TEXT NOT NULL,
  message TEXT NOT NULL,
  count INTEGER NOT NULL,
  first_at INTEGER NOT NULL,
  last_at INTEGER NOT NULL,
  PRIMARY KEY (relay_id, endpoint_id, edge_id, code, kind)
);
CREATE INDEX IF NOT EXISTS security_events_last ON security_events(last_at);
CREATE TABLE IF NOT EXISTS endpoint_tombstones (
  id TEXT PRIMARY KEY,
  auth_key BLOB NOT NULL,
  tunnel_key BLOB NOT NULL,
  deleted_at INTEGER NOT NULL
);
`

interface RelayRow {
  id: string, name: string, token_hash: string, created_at: number, revoked_at: number | null,
  fingerprint: string | null, ws_url: string | null, wss_url: string | null, version: string | null, last_seen: number | null
}
interface EndpointRow {
  id: string, name: string, tunnel_target: string | null, auth_key: Buffer, tunnel_key: Buffer,
  edge_id: string | null, created_at: number, last_seen: number | null, relay_id: string | null, max_agents: number
}

const relayFromRow = (r: RelayRow): RelayRecord => ({
  id: r.id,
  name: r.name,
  tokenHash: r.token_hash,
  createdAt: r.created_at,
  revokedAt: r.revoked_at,
  fingerprint: r.fingerprint,
  wsUrl: r.ws_url,
  wssUrl: r.wss_url,
  version: r.version,
  lastSeen: r.last_seen
})

const endpointFromRow = (r: EndpointRow): EndpointRecord => ({
  id: r.id,
  name: r.name,
  tunnelTarget: r.tunnel_target,
  authKey: r.auth_key,
  tunnelKey: r.tunnel_key,
  edgeId: r.edge_id,
  createdAt: r.created_at,
  lastSeen: r.last_seen,
  relayId: r.relay_id,
  maxAgents: r.max_agents
})

const relayColumns: Record<string, string> = {
  name: 'name', tokenHash: 'token_hash', createdAt: 'created_at', revokedAt: 'revoked_at', fingerprint: 'fingerprint',
  wsUrl: 'ws_url', wssUrl: 'wss_url', version: 'version', lastSeen: 'last_seen'
}

interface JobRow { id: string, artifact: string, sha256: string, size: number, path: string, run: string | null, created_at: number, deadline: number }
interface TargetRow {
  job_id: string, endpoint_id: string, state: string, progress: number, bytes: number, attempt: number, relay_id: string | null,
  exit_code: number | null, error_code: string | null, error_message: string | null, output: string | null, updated_at: number
}

const jobFromRow = (r: JobRow): JobRecord => ({
  id: r.id, artifact: r.artifact, sha256: r.sha256, size: r.size, path: r.path, run: r.run === null ? null : JSON.parse(r.run) as string[], createdAt: r.created_at, deadline: r.deadline
})

const targetFromRow = (r: TargetRow): JobTargetRecord => ({
  jobId: r.job_id,
  endpointId: r.endpoint_id,
  state: r.state as JobTargetState,
  progress: r.progress,
  bytes: r.bytes,
  attempt: r.attempt,
  relayId: r.relay_id,
  exitCode: r.exit_code,
  errorCode: r.error_code,
  errorMessage: r.error_message,
  output: r.output,
  updatedAt: r.updated_at
})

const targetColumns: Record<string, string> = {
  state: 'state', progress: 'progress', bytes: 'bytes', attempt: 'attempt', relayId: 'relay_id', exitCode: 'exit_code',
  errorCode: 'error_code', errorMessage: 'error_message', output: 'output', updatedAt: 'updated_at'
}

/** The embedded store: one SQLite file in the data dir, WAL mode. */
export class SqliteStore implements Store {
  private readonly db: DB

  constructor (file: string) {
    this.db = new Database(file)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('foreign_keys = ON')
    this.db.pragma('busy_timeout = 5000')
    this.db.exec(schema)
    this.migrate()
  }

  /** Brings a data dir from any earlier schema version to this one. */
  private migrate (): void {
    const columns = (this.stmt('PRAGMA table_info(endpoints)').all() as Array<{ name: string }>).map(c => c.name)
    if (!columns.includes('max_agents')) this.db.exec('ALTER TABLE endpoints ADD COLUMN max_agents INTEGER NOT NULL DEFAULT 1')
    const jobColumns = (this.stmt('PRAGMA table_info(jobs)').all() as Array<{ name: string }>).map(c => c.name)
    if (!jobColumns.includes('deadline')) {
      // Jobs from before deadlines: the default one, from their creation.
      this.db.exec(`ALTER TABLE jobs ADD COLUMN deadline INTEGER NOT NULL DEFAULT 0;
        UPDATE jobs SET deadline = created_at + ${DEFAULT_JOB_DEADLINE_MS}`)
    }
    this.db.exec('CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs (deadline)')
    // Version 1 kept only endpoints.edge_id: admit those edge ids.
    this.db.exec(`INSERT OR IGNORE INTO endpoint_agents (endpoint_id, edge_id, admitted_at, last_seen)
      SELECT id, edge_id, created_at, last_seen FROM endpoints WHERE edge_id IS NOT NULL`)
    this.setMeta('schemaVersion', String(SCHEMA_VERSION))
  }

  private readonly statements = new Map<string, Statement>()

  /** Prepared statements are cached: preparing one costs more than running it. */
  private stmt (sql: string): Statement {
    let st = this.statements.get(sql)
    if (st === undefined) {
      st = this.db.prepare(sql)
      this.statements.set(sql, st)
    }
    return st
  }

  batch<T> (fn: () => T): T {
    if (this.db.inTransaction) return fn()
    return this.db.transaction(fn)()
  }

  getMeta (key: string): string | undefined {
    const row = this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined
    return row?.value
  }

  setMeta (key: string, value: string): void {
    this.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value)
  }

  getSettings (): Settings {
    const text = this.getMeta('settings')
    const stored = text === undefined ? {} : JSON.parse(text) as Partial<Settings>
    return { ...DEFAULT_SETTINGS, ...stored }
  }

  updateSettings (patch: Partial<Settings>): Settings {
    const next = { ...this.getSettings(), ...patch }
    this.setMeta('settings', JSON.stringify(next))
    return next
  }

  createRelay (relay: RelayRecord): void {
    this.stmt(`INSERT INTO relays (id, name, token_hash, created_at, revoked_at, fingerprint, ws_url, wss_url, version, last_seen)
      VALUES (@id, @name, @tokenHash, @createdAt, @revokedAt, @fingerprint, @wsUrl, @wssUrl, @version, @lastSeen)`).run(relay)
  }

  getRelay (id: string): RelayRecord | undefined {
    const row = this.stmt('SELECT * FROM relays WHERE id = ?').get(id) as RelayRow | undefined
    return row === undefined ? undefined : relayFromRow(row)
  }

  findRelayByTokenHash (tokenHash: string): RelayRecord | undefined {
    const row = this.stmt('SELECT * FROM relays WHERE token_hash = ?').get(tokenHash) as RelayRow | undefined
    return row === undefined ? undefined : relayFromRow(row)
  }

  listRelays (): RelayRecord[] {
    return (this.stmt('SELECT * FROM relays ORDER BY created_at, id').all() as RelayRow[]).map(relayFromRow)
  }

  updateRelay (id: string, patch: Partial<Omit<RelayRecord, 'id'>>): void {
    const sets: string[] = []
    const values: Record<string, unknown> = { id }
    for (const [key, value] of Object.entries(patch)) {
      const column = relayColumns[key]
      if (column === undefined) continue
      sets.push(`${column} = @${key}`)
      values[key] = value
    }
    if (sets.length === 0) return
    this.stmt(`UPDATE relays SET ${sets.join(', ')} WHERE id = @id`).run(values)
  }

  revokeRelay (id: string, at: number): boolean {
    return this.stmt('UPDATE relays SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at, id).changes > 0
  }

  createEndpoint (e: EndpointRecord): void {
    this.stmt(`INSERT INTO endpoints (id, name, tunnel_target, auth_key, tunnel_key, edge_id, created_at, last_seen, relay_id, max_agents)
      VALUES (@id, @name, @tunnelTarget, @authKey, @tunnelKey, @edgeId, @createdAt, @lastSeen, @relayId, @maxAgents)`).run(e)
  }

  getEndpoint (id: string): EndpointRecord | undefined {
    const row = this.stmt('SELECT * FROM endpoints WHERE id = ?').get(id) as EndpointRow | undefined
    return row === undefined ? undefined : endpointFromRow(row)
  }

  listEndpoints (): EndpointRecord[] {
    return (this.stmt('SELECT * FROM endpoints ORDER BY created_at, id').all() as EndpointRow[]).map(endpointFromRow)
  }

  findEndpoints ({ q, offset, limit }: { q: string, offset: number, limit: number }): { total: number, page: EndpointRecord[] } {
    // LIKE with its wildcards escaped: a search for "50%" or "a_b" means those characters.
    const like = `%${q.toLowerCase().replace(/[\\%_]/g, c => `\\${c}`)}%`
    const where = `WHERE ? = '' OR lower(e.name) LIKE ? ESCAPE '\\' OR lower(e.id) LIKE ? ESCAPE '\\' OR lower(coalesce(e.edge_id, '')) LIKE ? ESCAPE '\\'
      OR e.id IN (SELECT a.endpoint_id FROM endpoint_agents a WHERE lower(a.edge_id) LIKE ? ESCAPE '\\')`
    const args = [q, like, like, like, like]
    const total = (this.stmt(`SELECT COUNT(*) AS n FROM endpoints e ${where}`).get(...args) as { n: number }).n
    const rows = this.stmt(`SELECT e.* FROM endpoints e ${where} ORDER BY e.created_at, e.id LIMIT ? OFFSET ?`).all(...args, limit, offset) as EndpointRow[]
    return { total, page: rows.map(endpointFromRow) }
  }

  admitEdgeId (endpointId: string, edgeId: string, at: number): boolean {
    return this.db.transaction(() => {
      const known = this.stmt('SELECT 1 FROM endpoint_agents WHERE endpoint_id = ? AND edge_id = ?').get(endpointId, edgeId)
      if (known !== undefined) {
        this.stmt('UPDATE endpoint_agents SET last_seen = ? WHERE endpoint_id = ? AND edge_id = ?').run(at, endpointId, edgeId)
        return true
      }
      const row = this.stmt(`SELECT max_agents AS max, (SELECT COUNT(*) FROM endpoint_agents WHERE endpoint_id = endpoints.id) AS admitted
        FROM endpoints WHERE id = ?`).get(endpointId) as { max: number, admitted: number } | undefined
      if (row === undefined || row.admitted >= row.max) return false
      this.stmt('INSERT INTO endpoint_agents (endpoint_id, edge_id, admitted_at, last_seen) VALUES (?, ?, ?, ?)').run(endpointId, edgeId, at, at)
      this.stmt('UPDATE endpoints SET edge_id = ? WHERE id = ? AND edge_id IS NULL').run(edgeId, endpointId)
      return true
    })()
  }

  listEndpointAgents (endpointId: string): EndpointAgentRecord[] {
    const rows = this.stmt('SELECT * FROM endpoint_agents WHERE endpoint_id = ? ORDER BY admitted_at, edge_id').all(endpointId) as Array<{
      endpoint_id: string, edge_id: string, admitted_at: number, last_seen: number | null
    }>
    return rows.map(r => ({ endpointId: r.endpoint_id, edgeId: r.edge_id, admittedAt: r.admitted_at, lastSeen: r.last_seen }))
  }

  removeEndpointAgent (endpointId: string, edgeId: string): boolean {
    return this.db.transaction(() => {
      const gone = this.stmt('DELETE FROM endpoint_agents WHERE endpoint_id = ? AND edge_id = ?').run(endpointId, edgeId).changes > 0
      if (gone) {
        const next = this.stmt('SELECT edge_id FROM endpoint_agents WHERE endpoint_id = ? ORDER BY admitted_at LIMIT 1').get(endpointId) as { edge_id: string } | undefined
        this.stmt('UPDATE endpoints SET edge_id = ? WHERE id = ?').run(next?.edge_id ?? null, endpointId)
      }
      return gone
    })()
  }

  saveSnapshot (snap: SnapshotRecord): void {
    this.stmt(`INSERT INTO snapshots (endpoint_id, edge_id, received_at, reason, body) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT(endpoint_id) DO UPDATE SET edge_id = excluded.edge_id, received_at = excluded.received_at, reason = excluded.reason, body = excluded.body`)
      .run(snap.endpointId, snap.edgeId, snap.receivedAt, snap.reason, JSON.stringify(snap.snapshot))
  }

  getSnapshot (endpointId: string): SnapshotRecord | undefined {
    const row = this.stmt('SELECT * FROM snapshots WHERE endpoint_id = ?').get(endpointId) as {
      endpoint_id: string, edge_id: string, received_at: number, reason: string, body: string
    } | undefined
    if (row === undefined) return undefined
    return { endpointId: row.endpoint_id, edgeId: row.edge_id, receivedAt: row.received_at, reason: row.reason, snapshot: JSON.parse(row.body) as Record<string, unknown> }
  }

  touchEndpoint (id: string, lastSeen: number, relayId: string | null): void {
    this.stmt('UPDATE endpoints SET last_seen = ?, relay_id = COALESCE(?, relay_id) WHERE id = ?').run(lastSeen, relayId, id)
  }

  deleteEndpoint (id: string): boolean {
    const e = this.getEndpoint(id)
    if (e === undefined) return false
    // Its keys stay behind for a while: an agent that was offline at deletion can still be told, verifiably, to stop.
    this.db.transaction(() => {
      this.stmt('INSERT OR REPLACE INTO endpoint_tombstones (id, auth_key, tunnel_key, deleted_at) VALUES (?, ?, ?, ?)').run(id, e.authKey, e.tunnelKey, Date.now())
      this.stmt('DELETE FROM endpoint_tombstones WHERE rowid NOT IN (SELECT rowid FROM endpoint_tombstones ORDER BY deleted_at DESC LIMIT 10000)').run()
      this.stmt('DELETE FROM endpoints WHERE id = ?').run(id)
    })()
    return true
  }

  getTombstone (id: string): { authKey: Buffer, tunnelKey: Buffer, deletedAt: number } | undefined {
    const row = this.stmt('SELECT auth_key, tunnel_key, deleted_at FROM endpoint_tombstones WHERE id = ?').get(id) as { auth_key: Buffer, tunnel_key: Buffer, deleted_at: number } | undefined
    return row === undefined ? undefined : { authKey: row.auth_key, tunnelKey: row.tunnel_key, deletedAt: row.deleted_at }
  }

  /**
   * One counted row per (endpoint, edge id, code), at most
   * REFUSED_EDGE_IDS_PER_CODE edge ids per code; further edge ids count in
   * the code's '*' row. Bounded (refusals are written for unauthenticated
   * attempts too), and a flood of one code cannot push out the evidence of
   * another (a cloned join token's RG_ERR_EDGE_ID_MISMATCH).
   */
  recordRefusal (endpointId: string, edgeId: string, code: string, at: number): void {
    this.db.transaction(() => {
      const known = this.stmt('SELECT 1 FROM refusals WHERE endpoint_id = ? AND edge_id = ? AND code = ?').get(endpointId, edgeId, code) !== undefined
      const distinct = (this.stmt('SELECT COUNT(*) AS n FROM refusals WHERE endpoint_id = ? AND code = ? AND edge_id <> \'*\'').get(endpointId, code) as { n: number }).n
      const as = known || distinct < REFUSED_EDGE_IDS_PER_CODE ? edgeId : '*'
      this.stmt(`INSERT INTO refusals (endpoint_id, edge_id, code, count, first_at, last_at) VALUES (?, ?, ?, 1, ?, ?)
        ON CONFLICT(endpoint_id, edge_id, code) DO UPDATE SET count = count + 1, last_at = excluded.last_at`).run(endpointId, as, code, at, at)
    })()
  }

  recordSecurityEvent (e: SecurityEventRecord): void {
    this.stmt(`INSERT INTO security_events (relay_id, endpoint_id, edge_id, code, kind, ref, message, count, first_at, last_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
      ON CONFLICT(relay_id, endpoint_id, edge_id, code, kind) DO UPDATE SET count = count + 1, last_at = excluded.last_at, ref = excluded.ref, message = excluded.message`)
      .run(e.relayId, e.endpointId ?? '', e.edgeId ?? '', e.code, e.kind, e.ref, e.message, e.lastAt, e.lastAt)
    // Bounded: a flood from one relay updates its rows; only new combinations add rows.
    this.stmt('DELETE FROM security_events WHERE rowid NOT IN (SELECT rowid FROM security_events ORDER BY last_at DESC LIMIT 10000)').run()
  }

  listSecurityEvents (limit: number, filter: { relayId?: string, endpointId?: string }): SecurityEventRecord[] {
    const rows = this.stmt(`SELECT * FROM security_events WHERE (? IS NULL OR relay_id = ?) AND (? IS NULL OR endpoint_id = ?) ORDER BY last_at DESC LIMIT ?`)
      .all(filter.relayId ?? null, filter.relayId ?? null, filter.endpointId ?? null, filter.endpointId ?? null, limit) as Array<{
        relay_id: string, endpoint_id: string, edge_id: string, code: string, kind: string, ref: string, message: string, count: number, first_at: number, last_at: number
      }>
    return rows.map(r => ({
      relayId: r.relay_id, endpointId: r.endpoint_id === '' ? null : r.endpoint_id, edgeId: r.edge_id === '' ? null : r.edge_id,
      code: r.code, kind: r.kind, ref: r.ref, message: r.message, count: r.count, firstAt: r.first_at, lastAt: r.last_at
    }))
  }

  countSecurityEvents (relayId: string): number {
    const row = this.stmt('SELECT COALESCE(SUM(count), 0) AS n FROM security_events WHERE relay_id = ?').get(relayId) as { n: number }
    return row.n
  }

  listRefusals (endpointId: string): RefusalRecord[] {
    const rows = this.stmt('SELECT * FROM refusals WHERE endpoint_id = ? ORDER BY last_at DESC').all(endpointId) as Array<{
      endpoint_id: string, edge_id: string, code: string, count: number, first_at: number, last_at: number
    }>
    return rows.map(r => ({ endpointId: r.endpoint_id, edgeId: r.edge_id, code: r.code, count: r.count, firstAt: r.first_at, lastAt: r.last_at }))
  }

  putArtifact (a: ArtifactRecord): void {
    this.stmt(`INSERT INTO artifacts (name, sha256, size, created_at) VALUES (@name, @sha256, @size, @createdAt)
      ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, created_at = excluded.created_at`).run(a)
  }

  getArtifact (name: string): ArtifactRecord | undefined {
    const r = this.stmt('SELECT * FROM artifacts WHERE name = ?').get(name) as { name: string, sha256: string, size: number, created_at: number } | undefined
    return r === undefined ? undefined : { name: r.name, sha256: r.sha256, size: r.size, createdAt: r.created_at }
  }

  listArtifacts (): ArtifactRecord[] {
    const rows = this.stmt('SELECT * FROM artifacts ORDER BY name').all() as Array<{ name: string, sha256: string, size: number, created_at: number }>
    return rows.map(r => ({ name: r.name, sha256: r.sha256, size: r.size, createdAt: r.created_at }))
  }

  deleteArtifact (name: string): boolean {
    return this.stmt('DELETE FROM artifacts WHERE name = ?').run(name).changes > 0
  }

  digestInUse (sha256: string): boolean {
    const named = this.stmt('SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1').get(sha256)
    if (named !== undefined) return true
    const running = this.stmt(`SELECT 1 FROM jobs j JOIN job_targets t ON t.job_id = j.id
      WHERE j.sha256 = ? AND t.state NOT IN ('succeeded', 'failed') LIMIT 1`).get(sha256)
    return running !== undefined
  }

  createJob (job: JobRecord, endpointIds: string[]): void {
    this.db.transaction(() => {
      this.stmt('INSERT INTO jobs (id, artifact, sha256, size, path, run, created_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(job.id, job.artifact, job.sha256, job.size, job.path, job.run === null ? null : JSON.stringify(job.run), job.createdAt, job.deadline)
      const insert = this.stmt('INSERT INTO job_targets (job_id, endpoint_id, state, updated_at) VALUES (?, ?, \'queued\', ?)')
      for (const id of endpointIds) insert.run(job.id, id, job.createdAt)
    })()
  }

  getJob (id: string): JobRecord | undefined {
    const r = this.stmt('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined
    return r === undefined ? undefined : jobFromRow(r)
  }

  listJobs (limit: number): JobRecord[] {
    return (this.stmt('SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ?').all(limit) as JobRow[]).map(jobFromRow)
  }

  listJobTargets (jobId: string): JobTargetRecord[] {
    return (this.stmt('SELECT * FROM job_targets WHERE job_id = ? ORDER BY endpoint_id').all(jobId) as TargetRow[]).map(targetFromRow)
  }

  countJobTargets (): Record<string, number> {
    const rows = this.stmt('SELECT state, COUNT(*) AS n FROM job_targets GROUP BY state').all() as Array<{ state: string, n: number }>
    return Object.fromEntries(rows.map(r => [r.state, r.n]))
  }

  getJobTarget (jobId: string, endpointId: string): JobTargetRecord | undefined {
    const row = this.stmt('SELECT * FROM job_targets WHERE job_id = ? AND endpoint_id = ?').get(jobId, endpointId) as TargetRow | undefined
    return row === undefined ? undefined : targetFromRow(row)
  }

  unfinishedTargets (endpointId: string): JobTargetRecord[] {
    return (this.stmt(`SELECT t.* FROM job_targets t JOIN jobs j ON j.id = t.job_id
      WHERE t.endpoint_id = ? AND t.state NOT IN ('succeeded', 'failed') ORDER BY j.created_at, j.id`).all(endpointId) as TargetRow[]).map(targetFromRow)
  }

  overdueTargets (now: number, limit: number): JobTargetRecord[] {
    return (this.stmt(`SELECT t.* FROM job_targets t JOIN jobs j ON j.id = t.job_id
      WHERE j.deadline <= ? AND t.state NOT IN ('succeeded', 'failed') ORDER BY j.deadline, j.id LIMIT ?`).all(now, limit) as TargetRow[]).map(targetFromRow)
  }

  updateJobTarget (jobId: string, endpointId: string, patch: Partial<Omit<JobTargetRecord, 'jobId' | 'endpointId'>>): void {
    const sets: string[] = []
    const values: Record<string, unknown> = { jobId, endpointId }
    for (const [key, value] of Object.entries(patch)) {
      const column = targetColumns[key]
      if (column === undefined) continue
      sets.push(`${column} = @${key}`)
      values[key] = value
    }
    if (sets.length === 0) return
    this.stmt(`UPDATE job_targets SET ${sets.join(', ')} WHERE job_id = @jobId AND endpoint_id = @endpointId`).run(values)
  }

  close (): void {
    if (this.db.open) this.db.close()
  }
}
