import { DEFAULT_SETTINGS, type Settings } from '../protocol/messages.js'
import { laterTouch } from './store.js'
import { SqlUpdateStore, type UpdateStore } from './update-store.js'
import { SqlAccessStore, type AccessStore } from './access-store.js'
import type {
  Store, RelayRecord, EndpointRecord, RefusalRecord, EndpointAgentRecord, SnapshotRecord, ArtifactRecord,
  JobRecord, JobTargetRecord, JobTargetState, SecurityEventRecord, EndpointTouch, AgentFacts
} from './store.js'

/**
 * What the two backends provide to the shared queries: positional `?`
 * parameters, rows as plain objects (integers as numbers, blobs as
 * Buffers), transactions.
 */
export interface SqlDriver {
  /** Appended to a SELECT that reads a row a transaction is about to change (' FOR UPDATE', or '' where transactions are serial). */
  readonly forUpdate: string
  all: <T>(sql: string, args?: unknown[]) => Promise<T[]>
  get: <T>(sql: string, args?: unknown[]) => Promise<T | undefined>
  /** Runs a statement; how many rows it changed. */
  run: (sql: string, args?: unknown[]) => Promise<number>
  /** `fn` in one transaction, on a driver bound to it (nested calls join it). */
  transaction: <T>(fn: (tx: SqlDriver) => Promise<T>) => Promise<T>
  close: () => Promise<void>
}

/** Distinct edge ids kept per (endpoint, refusal code); more count together as edge id '*'. */
const REFUSED_EDGE_IDS_PER_CODE = 20
/** Rows kept of tombstones and security events. */
const KEEP_ROWS = 10_000
/** Values per `IN (…)` list. */
const IN_CHUNK = 500
/** How long a spent tunnel credential id is remembered (credentials are retired well before). */
const SPENT_KEPT_MS = 24 * 3600 * 1000

interface RelayRow {
  id: string, name: string, token_hash: string, created_at: number, revoked_at: number | null,
  fingerprint: string | null, ws_url: string | null, wss_url: string | null, version: string | null, last_seen: number | null
}
interface EndpointRow {
  id: string, name: string, tunnel_target: string | null, auth_key: Buffer, tunnel_key: Buffer,
  edge_id: string | null, created_at: number, last_seen: number | null, relay_id: string | null, max_agents: number, tags: string | null
}
interface JobRow { id: string, artifact: string, sha256: string, size: number, path: string, run: string | null, created_at: number, deadline: number }
interface TargetRow {
  job_id: string, endpoint_id: string, state: string, progress: number, bytes: number, attempt: number, relay_id: string | null,
  exit_code: number | null, error_code: string | null, error_message: string | null, output: string | null, updated_at: number
}
interface ArtifactRow { name: string, sha256: string, size: number, created_at: number }

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
  maxAgents: r.max_agents,
  tags: r.tags === null || r.tags === '' ? [] : JSON.parse(r.tags) as string[]
})

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

const artifactFromRow = (r: ArtifactRow): ArtifactRecord => ({ name: r.name, sha256: r.sha256, size: r.size, createdAt: r.created_at })

const relayColumns: Record<string, string> = {
  name: 'name', tokenHash: 'token_hash', createdAt: 'created_at', revokedAt: 'revoked_at', fingerprint: 'fingerprint',
  wsUrl: 'ws_url', wssUrl: 'wss_url', version: 'version', lastSeen: 'last_seen'
}

const targetColumns: Record<string, string> = {
  state: 'state', progress: 'progress', bytes: 'bytes', attempt: 'attempt', relayId: 'relay_id', exitCode: 'exit_code',
  errorCode: 'error_code', errorMessage: 'error_message', output: 'output', updatedAt: 'updated_at'
}

/** `SET a = ?, b = ?` for the known keys of a patch, and their values. */
export function setClause (patch: Record<string, unknown>, columns: Record<string, string>): { sql: string, values: unknown[] } {
  const sets: string[] = []
  const values: unknown[] = []
  for (const [key, value] of Object.entries(patch)) {
    const column = columns[key]
    if (column === undefined || value === undefined) continue
    sets.push(`${column} = ?`)
    values.push(value)
  }
  return { sql: sets.join(', '), values }
}

/**
 * The store's queries, once, in the SQL both SQLite and PostgreSQL speak.
 * What must hold under concurrent writers (admitting edge ids, spending a
 * credential, applying a result once) is one statement or one transaction
 * that locks the row it decides on.
 */
export class SqlStore implements Store {
  protected readonly db: SqlDriver
  readonly updates: UpdateStore
  readonly access: AccessStore

  constructor (db: SqlDriver) {
    this.db = db
    this.updates = new SqlUpdateStore(db)
    this.access = new SqlAccessStore(db)
  }

  async transaction<T> (fn: (tx: Store) => Promise<T>): Promise<T> {
    return await this.db.transaction(async tx => await fn(new SqlStore(tx)))
  }

  async getMeta (key: string): Promise<string | undefined> {
    return (await this.db.get<{ value: string }>('SELECT value FROM meta WHERE key = ?', [key]))?.value
  }

  async setMeta (key: string, value: string): Promise<void> {
    await this.db.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value])
  }

  async getSettings (): Promise<Settings> {
    const text = await this.getMeta('settings')
    const stored = text === undefined ? {} : JSON.parse(text) as Partial<Settings>
    return { ...DEFAULT_SETTINGS, ...stored }
  }

  async updateSettings (patch: Partial<Settings>): Promise<Settings> {
    return await this.db.transaction(async tx => {
      const row = await tx.get<{ value: string }>(`SELECT value FROM meta WHERE key = 'settings'${tx.forUpdate}`)
      const next = { ...DEFAULT_SETTINGS, ...(row === undefined ? {} : JSON.parse(row.value) as Partial<Settings>), ...patch }
      await tx.run('INSERT INTO meta (key, value) VALUES (\'settings\', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [JSON.stringify(next)])
      return next
    })
  }

  async createRelay (r: RelayRecord): Promise<void> {
    await this.db.run(`INSERT INTO relays (id, name, token_hash, created_at, revoked_at, fingerprint, ws_url, wss_url, version, last_seen)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [r.id, r.name, r.tokenHash, r.createdAt, r.revokedAt, r.fingerprint, r.wsUrl, r.wssUrl, r.version, r.lastSeen])
  }

  async getRelay (id: string): Promise<RelayRecord | undefined> {
    const row = await this.db.get<RelayRow>('SELECT * FROM relays WHERE id = ?', [id])
    return row === undefined ? undefined : relayFromRow(row)
  }

  async findRelayByTokenHash (tokenHash: string): Promise<RelayRecord | undefined> {
    const row = await this.db.get<RelayRow>('SELECT * FROM relays WHERE token_hash = ?', [tokenHash])
    return row === undefined ? undefined : relayFromRow(row)
  }

  async listRelays (): Promise<RelayRecord[]> {
    return (await this.db.all<RelayRow>('SELECT * FROM relays ORDER BY created_at, id')).map(relayFromRow)
  }

  async updateRelay (id: string, patch: Partial<Omit<RelayRecord, 'id'>>): Promise<void> {
    const set = setClause(patch, relayColumns)
    if (set.sql !== '') await this.db.run(`UPDATE relays SET ${set.sql} WHERE id = ?`, [...set.values, id])
  }

  async revokeRelay (id: string, at: number): Promise<boolean> {
    return await this.db.run('UPDATE relays SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [at, id]) > 0
  }

  async createEndpoint (e: EndpointRecord): Promise<void> {
    await this.db.run(`INSERT INTO endpoints (id, name, tunnel_target, auth_key, tunnel_key, edge_id, created_at, last_seen, relay_id, max_agents, tags)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [e.id, e.name, e.tunnelTarget, e.authKey, e.tunnelKey, e.edgeId, e.createdAt, e.lastSeen, e.relayId, e.maxAgents, JSON.stringify(e.tags ?? [])])
  }

  async updateEndpoint (id: string, patch: { name?: string, tags?: string[], authKey?: Buffer, tunnelKey?: Buffer }): Promise<boolean> {
    const set = setClause({ ...patch, tags: patch.tags === undefined ? undefined : JSON.stringify(patch.tags) }, { name: 'name', tags: 'tags', authKey: 'auth_key', tunnelKey: 'tunnel_key' })
    if (set.sql === '') return await this.getEndpoint(id) !== undefined
    return await this.db.run(`UPDATE endpoints SET ${set.sql} WHERE id = ?`, [...set.values, id]) > 0
  }

  async getEndpoint (id: string): Promise<EndpointRecord | undefined> {
    const row = await this.db.get<EndpointRow>('SELECT * FROM endpoints WHERE id = ?', [id])
    return row === undefined ? undefined : endpointFromRow(row)
  }

  async getEndpointForAgent (id: string, edgeId: string): Promise<{ endpoint: EndpointRecord, admitted: boolean } | undefined> {
    const row = await this.db.get<EndpointRow & { admitted: number | boolean }>(`SELECT e.*,
      CASE WHEN EXISTS (SELECT 1 FROM endpoint_agents a WHERE a.endpoint_id = e.id AND a.edge_id = ?) THEN 1 ELSE 0 END AS admitted
      FROM endpoints e WHERE e.id = ?`, [edgeId, id])
    return row === undefined ? undefined : { endpoint: endpointFromRow(row), admitted: Number(row.admitted) === 1 }
  }

  async listEndpoints (): Promise<EndpointRecord[]> {
    return (await this.db.all<EndpointRow>('SELECT * FROM endpoints ORDER BY created_at, id')).map(endpointFromRow)
  }

  async findEndpoints ({ q, offset, limit, tags = [] }: { q: string, offset: number, limit: number, tags?: string[] }): Promise<{ total: number, page: EndpointRecord[] }> {
    // LIKE with its wildcards escaped: a search for "50%" or "a_b" means those characters.
    const escape = (text: string): string => text.replace(/[\\%_]/g, c => `\\${c}`)
    const like = `%${escape(q.toLowerCase())}%`
    // Tags are kept as a JSON list of strings of [A-Za-z0-9._:-]: "tag" with its quotes matches one whole tag.
    const tagged = tags.map(() => ` AND e.tags LIKE ? ESCAPE '\\'`).join('')
    const where = `WHERE (CAST(? AS TEXT) = '' OR lower(e.name) LIKE ? ESCAPE '\\' OR lower(e.id) LIKE ? ESCAPE '\\' OR lower(coalesce(e.edge_id, '')) LIKE ? ESCAPE '\\'
      OR e.id IN (SELECT a.endpoint_id FROM endpoint_agents a WHERE lower(a.edge_id) LIKE ? ESCAPE '\\'))${tagged}`
    const args = [q, like, like, like, like, ...tags.map(tag => `%${escape(JSON.stringify(tag))}%`)]
    const total = (await this.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM endpoints e ${where}`, args))!.n
    const rows = await this.db.all<EndpointRow>(`SELECT e.* FROM endpoints e ${where} ORDER BY e.created_at, e.id LIMIT ? OFFSET ?`, [...args, limit, offset])
    return { total, page: rows.map(endpointFromRow) }
  }

  async admitEdgeId (endpointId: string, edgeId: string, at: number): Promise<boolean> {
    // A known agent (every reconnect after the first) costs one read, no commit.
    if (await this.db.get('SELECT 1 AS one FROM endpoint_agents WHERE endpoint_id = ? AND edge_id = ?', [endpointId, edgeId]) !== undefined) return true
    return await this.db.transaction(async tx => {
      // The endpoint's row is locked first: concurrent admissions for it take turns.
      const endpoint = await tx.get<{ max: number }>(`SELECT max_agents AS max FROM endpoints WHERE id = ?${tx.forUpdate}`, [endpointId])
      if (endpoint === undefined) return false
      if (await tx.get('SELECT 1 AS one FROM endpoint_agents WHERE endpoint_id = ? AND edge_id = ?', [endpointId, edgeId]) !== undefined) return true
      const admitted = (await tx.get<{ n: number }>('SELECT COUNT(*) AS n FROM endpoint_agents WHERE endpoint_id = ?', [endpointId]))!.n
      if (admitted >= endpoint.max) return false
      await tx.run('INSERT INTO endpoint_agents (endpoint_id, edge_id, admitted_at, last_seen) VALUES (?, ?, ?, ?)', [endpointId, edgeId, at, at])
      await tx.run('UPDATE endpoints SET edge_id = ? WHERE id = ? AND edge_id IS NULL', [edgeId, endpointId])
      return true
    })
  }

  async listEndpointAgents (endpointIds: string[]): Promise<EndpointAgentRecord[]> {
    const rows = await this.allIn<{ endpoint_id: string, edge_id: string, admitted_at: number, last_seen: number | null }>(
      'SELECT * FROM endpoint_agents WHERE endpoint_id IN (?) ORDER BY admitted_at, edge_id', endpointIds)
    return rows.map(r => ({ endpointId: r.endpoint_id, edgeId: r.edge_id, admittedAt: r.admitted_at, lastSeen: r.last_seen }))
  }

  async removeEndpointAgent (endpointId: string, edgeId: string): Promise<boolean> {
    return await this.db.transaction(async tx => {
      await tx.get(`SELECT id FROM endpoints WHERE id = ?${tx.forUpdate}`, [endpointId])
      const gone = await tx.run('DELETE FROM endpoint_agents WHERE endpoint_id = ? AND edge_id = ?', [endpointId, edgeId]) > 0
      if (gone) {
        const next = await tx.get<{ edge_id: string }>('SELECT edge_id FROM endpoint_agents WHERE endpoint_id = ? ORDER BY admitted_at LIMIT 1', [endpointId])
        await tx.run('UPDATE endpoints SET edge_id = ? WHERE id = ?', [next?.edge_id ?? null, endpointId])
      }
      return gone
    })
  }

  async saveSnapshots (snaps: SnapshotRecord[]): Promise<void> {
    const sorted = [...snaps].sort((a, b) => a.endpointId < b.endpointId ? -1 : a.endpointId > b.endpointId ? 1 : 0)
    await this.db.transaction(async tx => {
      for (let at = 0; at < sorted.length; at += IN_CHUNK) {
        const chunk = sorted.slice(at, at + IN_CHUNK)
        // Only endpoints that still exist: one deleted meanwhile is skipped, not an error for the whole batch.
        // A snapshot replaces the kept one unless that one is from the same agent and not older (a replay by a relay).
        await tx.run(`INSERT INTO snapshots (endpoint_id, edge_id, received_at, reason, body, taken_at)
          SELECT v.endpoint_id, v.edge_id, v.received_at, v.reason, v.body, v.taken_at
          FROM (${rows(chunk.length, 'CAST(? AS TEXT) AS endpoint_id, CAST(? AS TEXT) AS edge_id, CAST(? AS BIGINT) AS received_at, CAST(? AS TEXT) AS reason, CAST(? AS TEXT) AS body, CAST(? AS BIGINT) AS taken_at')}) AS v
          WHERE v.endpoint_id IN (SELECT id FROM endpoints)
          ON CONFLICT (endpoint_id) DO UPDATE SET edge_id = excluded.edge_id, received_at = excluded.received_at, reason = excluded.reason, body = excluded.body, taken_at = excluded.taken_at
          WHERE snapshots.edge_id <> excluded.edge_id OR excluded.taken_at > snapshots.taken_at`,
        chunk.flatMap(s => [s.endpointId, s.edgeId, s.receivedAt, s.reason, JSON.stringify(s.snapshot), Number(s.snapshot.takenAt ?? 0)]))
      }
    })
  }

  async getSnapshot (endpointId: string): Promise<SnapshotRecord | undefined> {
    const row = await this.db.get<{ endpoint_id: string, edge_id: string, received_at: number, reason: string, body: string }>(
      'SELECT * FROM snapshots WHERE endpoint_id = ?', [endpointId])
    if (row === undefined) return undefined
    return { endpointId: row.endpoint_id, edgeId: row.edge_id, receivedAt: row.received_at, reason: row.reason, snapshot: JSON.parse(row.body) as Record<string, unknown> }
  }

  async touchEndpoints (touches: EndpointTouch[]): Promise<void> {
    if (touches.length === 0) return
    // In id order (two writers touching overlapping sets cannot deadlock), one statement per table and IN_CHUNK touches.
    const sorted = [...touches].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    const agents = sorted.filter(t => t.edgeId !== null)
    // One row per endpoint (the agents of a cluster touch it each): the latest, with the latest relay named.
    const latest = new Map<string, EndpointTouch>()
    for (const t of sorted) {
      const prev = latest.get(t.id)
      latest.set(t.id, prev === undefined ? t : laterTouch(prev, t))
    }
    const endpoints = [...latest.values()]
    await this.db.transaction(async tx => {
      for (let at = 0; at < endpoints.length; at += IN_CHUNK) {
        const chunk = endpoints.slice(at, at + IN_CHUNK)
        await tx.run(`UPDATE endpoints SET last_seen = v.last_seen, relay_id = COALESCE(v.relay_id, endpoints.relay_id)
          FROM (${rows(chunk.length, 'CAST(? AS TEXT) AS id, CAST(? AS BIGINT) AS last_seen, CAST(? AS TEXT) AS relay_id')}) AS v
          WHERE endpoints.id = v.id`, chunk.flatMap(t => [t.id, t.lastSeen, t.relayId]))
      }
      for (let at = 0; at < agents.length; at += IN_CHUNK) {
        const chunk = agents.slice(at, at + IN_CHUNK)
        await tx.run(`UPDATE endpoint_agents SET last_seen = v.last_seen
          FROM (${rows(chunk.length, 'CAST(? AS TEXT) AS endpoint_id, CAST(? AS TEXT) AS edge_id, CAST(? AS BIGINT) AS last_seen')}) AS v
          WHERE endpoint_agents.endpoint_id = v.endpoint_id AND endpoint_agents.edge_id = v.edge_id`, chunk.flatMap(t => [t.id, t.edgeId, t.lastSeen]))
      }
    })
  }

  async deleteEndpoint (id: string): Promise<boolean> {
    return await this.db.transaction(async tx => {
      const e = await tx.get<EndpointRow>(`SELECT * FROM endpoints WHERE id = ?${tx.forUpdate}`, [id])
      if (e === undefined) return false
      // Its keys stay behind for a while: an agent that was offline at deletion can still be told, verifiably, to stop.
      await tx.run(`INSERT INTO endpoint_tombstones (id, auth_key, tunnel_key, deleted_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET auth_key = excluded.auth_key, tunnel_key = excluded.tunnel_key, deleted_at = excluded.deleted_at`,
      [id, e.auth_key, e.tunnel_key, Date.now()])
      await tx.run(`DELETE FROM endpoint_tombstones WHERE deleted_at < (SELECT deleted_at FROM endpoint_tombstones ORDER BY deleted_at DESC LIMIT 1 OFFSET ${KEEP_ROWS})`)
      await tx.run('DELETE FROM endpoints WHERE id = ?', [id])
      return true
    })
  }

  async getTombstone (id: string): Promise<{ authKey: Buffer, tunnelKey: Buffer, deletedAt: number } | undefined> {
    const row = await this.db.get<{ auth_key: Buffer, tunnel_key: Buffer, deleted_at: number }>('SELECT auth_key, tunnel_key, deleted_at FROM endpoint_tombstones WHERE id = ?', [id])
    return row === undefined ? undefined : { authKey: row.auth_key, tunnelKey: row.tunnel_key, deletedAt: row.deleted_at }
  }

  /**
   * One counted row per (endpoint, edge id, code), at most
   * REFUSED_EDGE_IDS_PER_CODE edge ids per code; further edge ids count in
   * the code's '*' row. Bounded (refusals are written for unauthenticated
   * attempts too), and a flood of one code cannot push out the evidence of
   * another (a cloned join token's RG_ERR_EDGE_ID_MISMATCH).
   */
  async recordRefusal (endpointId: string, edgeId: string, code: string, at: number): Promise<void> {
    await this.db.transaction(async tx => {
      if (await tx.get(`SELECT id FROM endpoints WHERE id = ?${tx.forUpdate}`, [endpointId]) === undefined) return
      const known = await tx.get('SELECT 1 AS one FROM refusals WHERE endpoint_id = ? AND edge_id = ? AND code = ?', [endpointId, edgeId, code]) !== undefined
      const distinct = (await tx.get<{ n: number }>('SELECT COUNT(*) AS n FROM refusals WHERE endpoint_id = ? AND code = ? AND edge_id <> \'*\'', [endpointId, code]))!.n
      const as = known || distinct < REFUSED_EDGE_IDS_PER_CODE ? edgeId : '*'
      await tx.run(`INSERT INTO refusals (endpoint_id, edge_id, code, count, first_at, last_at) VALUES (?, ?, ?, 1, ?, ?)
        ON CONFLICT (endpoint_id, edge_id, code) DO UPDATE SET count = refusals.count + 1, last_at = excluded.last_at`, [endpointId, as, code, at, at])
    })
  }

  async recordSecurityEvent (e: SecurityEventRecord): Promise<void> {
    await this.db.run(`INSERT INTO security_events (relay_id, endpoint_id, edge_id, code, kind, ref, message, count, first_at, last_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
      ON CONFLICT (relay_id, endpoint_id, edge_id, code, kind) DO UPDATE SET count = security_events.count + 1, last_at = excluded.last_at, ref = excluded.ref, message = excluded.message`,
    [e.relayId, e.endpointId ?? '', e.edgeId ?? '', e.code, e.kind, e.ref, e.message, e.lastAt, e.lastAt])
    // Bounded: a flood from one relay updates its rows; only new combinations add rows.
    await this.db.run(`DELETE FROM security_events WHERE last_at < (SELECT last_at FROM security_events ORDER BY last_at DESC LIMIT 1 OFFSET ${KEEP_ROWS})`)
  }

  async listSecurityEvents (limit: number, filter: { relayId?: string, endpointId?: string }): Promise<SecurityEventRecord[]> {
    const relay = filter.relayId ?? null
    const endpoint = filter.endpointId ?? null
    const rows = await this.db.all<{
      relay_id: string, endpoint_id: string, edge_id: string, code: string, kind: string, ref: string, message: string, count: number, first_at: number, last_at: number
    }>('SELECT * FROM security_events WHERE (CAST(? AS TEXT) IS NULL OR relay_id = ?) AND (CAST(? AS TEXT) IS NULL OR endpoint_id = ?) ORDER BY last_at DESC LIMIT ?',
      [relay, relay, endpoint, endpoint, limit])
    return rows.map(r => ({
      relayId: r.relay_id, endpointId: r.endpoint_id === '' ? null : r.endpoint_id, edgeId: r.edge_id === '' ? null : r.edge_id,
      code: r.code, kind: r.kind, ref: r.ref, message: r.message, count: r.count, firstAt: r.first_at, lastAt: r.last_at
    }))
  }

  async countSecurityEvents (relayId: string): Promise<number> {
    return (await this.db.get<{ n: number }>('SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) AS n FROM security_events WHERE relay_id = ?', [relayId]))!.n
  }

  async listRefusals (endpointIds: string[]): Promise<RefusalRecord[]> {
    const rows = await this.allIn<{ endpoint_id: string, edge_id: string, code: string, count: number, first_at: number, last_at: number }>(
      'SELECT * FROM refusals WHERE endpoint_id IN (?) ORDER BY last_at DESC', endpointIds)
    return rows.map(r => ({ endpointId: r.endpoint_id, edgeId: r.edge_id, code: r.code, count: r.count, firstAt: r.first_at, lastAt: r.last_at }))
  }

  async listAgentVersions (endpointIds: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>()
    for (const [id, facts] of await this.listAgentFacts(endpointIds)) if (facts.version !== undefined) out.set(id, facts.version)
    return out
  }

  async listAgentFacts (endpointIds: string[]): Promise<Map<string, AgentFacts>> {
    const rows = await this.allIn<{ endpoint_id: string, body: string }>('SELECT endpoint_id, body FROM snapshots WHERE endpoint_id IN (?)', endpointIds)
    const out = new Map<string, AgentFacts>()
    for (const r of rows) {
      const body = JSON.parse(r.body) as { agentVersion?: unknown, allowExec?: unknown }
      const facts: AgentFacts = {}
      if (typeof body.agentVersion === 'string') facts.version = body.agentVersion
      if (typeof body.allowExec === 'boolean') facts.allowExec = body.allowExec
      out.set(r.endpoint_id, facts)
    }
    return out
  }

  async spendCredential (tunnelId: string, at: number): Promise<boolean> {
    const first = await this.db.run('INSERT INTO spent_credentials (tunnel_id, spent_at) VALUES (?, ?) ON CONFLICT (tunnel_id) DO NOTHING', [tunnelId, at]) > 0
    if (first) await this.db.run('DELETE FROM spent_credentials WHERE spent_at < ?', [at - SPENT_KEPT_MS])
    return first
  }

  async putArtifact (a: ArtifactRecord): Promise<void> {
    await this.db.run(`INSERT INTO artifacts (name, sha256, size, created_at) VALUES (?, ?, ?, ?)
      ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, created_at = excluded.created_at`, [a.name, a.sha256, a.size, a.createdAt])
  }

  async getArtifact (name: string): Promise<ArtifactRecord | undefined> {
    const r = await this.db.get<ArtifactRow>('SELECT * FROM artifacts WHERE name = ?', [name])
    return r === undefined ? undefined : artifactFromRow(r)
  }

  async listArtifacts (): Promise<ArtifactRecord[]> {
    return (await this.db.all<ArtifactRow>('SELECT * FROM artifacts ORDER BY name')).map(artifactFromRow)
  }

  async deleteArtifact (name: string): Promise<boolean> {
    return await this.db.run('DELETE FROM artifacts WHERE name = ?', [name]) > 0
  }

  async digestInUse (sha256: string): Promise<boolean> {
    if (await this.db.get('SELECT 1 AS one FROM artifacts WHERE sha256 = ? LIMIT 1', [sha256]) !== undefined) return true
    const running = await this.db.get(`SELECT 1 AS one FROM jobs j JOIN job_targets t ON t.job_id = j.id
      WHERE j.sha256 = ? AND t.state NOT IN ('succeeded', 'failed') LIMIT 1`, [sha256])
    if (running !== undefined) return true
    return await this.db.get('SELECT 1 AS one FROM updates WHERE sha256 = ? AND state IN (\'running\', \'paused\') LIMIT 1', [sha256]) !== undefined
  }

  async createJob (job: JobRecord, endpointIds: string[]): Promise<void> {
    await this.db.transaction(async tx => {
      await tx.run('INSERT INTO jobs (id, artifact, sha256, size, path, run, created_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        [job.id, job.artifact, job.sha256, job.size, job.path, job.run === null ? null : JSON.stringify(job.run), job.createdAt, job.deadline])
      for (const id of endpointIds) await tx.run('INSERT INTO job_targets (job_id, endpoint_id, state, updated_at) VALUES (?, ?, \'queued\', ?)', [job.id, id, job.createdAt])
    })
  }

  async getJob (id: string): Promise<JobRecord | undefined> {
    const r = await this.db.get<JobRow>('SELECT * FROM jobs WHERE id = ?', [id])
    return r === undefined ? undefined : jobFromRow(r)
  }

  async listJobs (limit: number): Promise<JobRecord[]> {
    return (await this.db.all<JobRow>('SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ?', [limit])).map(jobFromRow)
  }

  async listJobTargets (jobId: string): Promise<JobTargetRecord[]> {
    return (await this.db.all<TargetRow>('SELECT * FROM job_targets WHERE job_id = ? ORDER BY endpoint_id', [jobId])).map(targetFromRow)
  }

  async nextAttempt (jobId: string, endpointId: string, relayId: string, at: number): Promise<number | undefined> {
    const row = await this.db.get<{ attempt: number }>(`UPDATE job_targets SET attempt = attempt + 1, relay_id = ?, updated_at = ?
      WHERE job_id = ? AND endpoint_id = ? AND state NOT IN ('succeeded', 'failed') RETURNING attempt`, [relayId, at, jobId, endpointId])
    return row?.attempt
  }

  async countJobTargets (): Promise<Record<string, number>> {
    const rows = await this.db.all<{ state: string, n: number }>('SELECT state, COUNT(*) AS n FROM job_targets GROUP BY state')
    return Object.fromEntries(rows.map(r => [r.state, r.n]))
  }

  async getJobTarget (jobId: string, endpointId: string): Promise<JobTargetRecord | undefined> {
    const row = await this.db.get<TargetRow>('SELECT * FROM job_targets WHERE job_id = ? AND endpoint_id = ?', [jobId, endpointId])
    return row === undefined ? undefined : targetFromRow(row)
  }

  async unfinishedTargets (endpointIds: string[]): Promise<JobTargetRecord[]> {
    // Each endpoint's targets fall in one IN list: its oldest job still comes first.
    return (await this.allIn<TargetRow>(`SELECT t.* FROM job_targets t JOIN jobs j ON j.id = t.job_id
      WHERE t.endpoint_id IN (?) AND t.state NOT IN ('succeeded', 'failed') ORDER BY j.created_at, j.id`, endpointIds)).map(targetFromRow)
  }

  async overdueTargets (now: number, limit: number): Promise<JobTargetRecord[]> {
    return (await this.db.all<TargetRow>(`SELECT t.* FROM job_targets t JOIN jobs j ON j.id = t.job_id
      WHERE j.deadline <= ? AND t.state NOT IN ('succeeded', 'failed') ORDER BY j.deadline, j.id LIMIT ?`, [now, limit])).map(targetFromRow)
  }

  async updateJobTarget (jobId: string, endpointId: string, patch: Partial<Omit<JobTargetRecord, 'jobId' | 'endpointId'>>, onlyAttempt?: number): Promise<boolean> {
    const set = setClause(patch, targetColumns)
    if (set.sql === '') return false
    const guard = onlyAttempt === undefined ? '' : ' AND attempt = ? AND state NOT IN (\'succeeded\', \'failed\')'
    const args = [...set.values, jobId, endpointId, ...(onlyAttempt === undefined ? [] : [onlyAttempt])]
    return await this.db.run(`UPDATE job_targets SET ${set.sql} WHERE job_id = ? AND endpoint_id = ?${guard}`, args) > 0
  }

  async close (): Promise<void> {
    await this.db.close()
  }

  private async allIn<T> (sql: string, values: string[]): Promise<T[]> {
    return await selectIn<T>(this.db, sql, values)
  }
}

/** `sql` with its one `IN (?)` widened to `values` (after `before`), 500 at a time (both backends cap the parameters of a statement). */
export async function selectIn<T> (db: SqlDriver, sql: string, values: string[], before: unknown[] = []): Promise<T[]> {
  const rows: T[] = []
  for (let at = 0; at < values.length; at += IN_CHUNK) {
    const chunk = values.slice(at, at + IN_CHUNK)
    rows.push(...await db.all<T>(sql.replace('IN (?)', `IN (${chunk.map(() => '?').join(', ')})`), [...before, ...chunk]))
  }
  return rows
}

/** `n` rows of parameters as a table both dialects read: the first row names and types the columns, the others follow it. */
export function rows (n: number, first: string): string {
  const width = first.split('?').length - 1
  const rest = `SELECT ${Array(width).fill('?').join(', ')}`
  return [`SELECT ${first}`, ...Array(n - 1).fill(rest)].join(' UNION ALL ')
}

/** Whether a driver error is a unique-constraint violation (SQLite or PostgreSQL). */
export function isUniqueViolation (err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505'
}
