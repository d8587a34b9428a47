import Database from 'better-sqlite3'
import type { Database as DB } from 'better-sqlite3'
import { DEFAULT_SETTINGS, type Settings } from '../protocol/messages.js'
import type { Store, RelayRecord, EndpointRecord, RefusalRecord } from './store.js'

const SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS refusals (
  endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
  edge_id TEXT NOT NULL,
  code TEXT NOT NULL,
  count INTEGER NOT NULL,
  first_at INTEGER NOT NULL,
  last_at INTEGER NOT NULL,
  PRIMARY KEY (endpoint_id, edge_id, code)
);
`

interface RelayRow {
  id: string, name: string, token_hash: string, created_at: number, revoked_at: number | null,
  fingerprint: string | null, ws_url: string | null, wss_url: string | null, version: string | null, last_seen: number | null
}
interface EndpointRow {
  id: string, name: string, tunnel_target: string | null, auth_key: Buffer, tunnel_key: Buffer,
  edge_id: string | null, created_at: number, last_seen: number | null, relay_id: string | null
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
  relayId: r.relay_id
})

const relayColumns: Record<string, string> = {
  name: 'name', tokenHash: 'token_hash', createdAt: 'created_at', revokedAt: 'revoked_at', fingerprint: 'fingerprint',
  wsUrl: 'ws_url', wssUrl: 'wss_url', version: 'version', lastSeen: 'last_seen'
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
    const version = this.getMeta('schemaVersion')
    if (version === undefined) this.setMeta('schemaVersion', String(SCHEMA_VERSION))
  }

  getMeta (key: string): string | undefined {
    const row = this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined
    return row?.value
  }

  setMeta (key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value)
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
    this.db.prepare(`INSERT INTO relays (id, name, token_hash, created_at, revoked_at, fingerprint, ws_url, wss_url, version, last_seen)
      VALUES (@id, @name, @tokenHash, @createdAt, @revokedAt, @fingerprint, @wsUrl, @wssUrl, @version, @lastSeen)`).run(relay)
  }

  getRelay (id: string): RelayRecord | undefined {
    const row = this.db.prepare('SELECT * FROM relays WHERE id = ?').get(id) as RelayRow | undefined
    return row === undefined ? undefined : relayFromRow(row)
  }

  findRelayByTokenHash (tokenHash: string): RelayRecord | undefined {
    const row = this.db.prepare('SELECT * FROM relays WHERE token_hash = ?').get(tokenHash) as RelayRow | undefined
    return row === undefined ? undefined : relayFromRow(row)
  }

  listRelays (): RelayRecord[] {
    return (this.db.prepare('SELECT * FROM relays ORDER BY created_at, id').all() as RelayRow[]).map(relayFromRow)
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
    this.db.prepare(`UPDATE relays SET ${sets.join(', ')} WHERE id = @id`).run(values)
  }

  revokeRelay (id: string, at: number): boolean {
    return this.db.prepare('UPDATE relays SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at, id).changes > 0
  }

  createEndpoint (e: EndpointRecord): void {
    this.db.prepare(`INSERT INTO endpoints (id, name, tunnel_target, auth_key, tunnel_key, edge_id, created_at, last_seen, relay_id)
      VALUES (@id, @name, @tunnelTarget, @authKey, @tunnelKey, @edgeId, @createdAt, @lastSeen, @relayId)`).run(e)
  }

  getEndpoint (id: string): EndpointRecord | undefined {
    const row = this.db.prepare('SELECT * FROM endpoints WHERE id = ?').get(id) as EndpointRow | undefined
    return row === undefined ? undefined : endpointFromRow(row)
  }

  listEndpoints (): EndpointRecord[] {
    return (this.db.prepare('SELECT * FROM endpoints ORDER BY created_at, id').all() as EndpointRow[]).map(endpointFromRow)
  }

  associateEdgeId (endpointId: string, edgeId: string): string {
    this.db.prepare('UPDATE endpoints SET edge_id = ? WHERE id = ? AND edge_id IS NULL').run(edgeId, endpointId)
    const row = this.db.prepare('SELECT edge_id FROM endpoints WHERE id = ?').get(endpointId) as { edge_id: string | null } | undefined
    return row?.edge_id ?? edgeId
  }

  touchEndpoint (id: string, lastSeen: number, relayId: string | null): void {
    this.db.prepare('UPDATE endpoints SET last_seen = ?, relay_id = COALESCE(?, relay_id) WHERE id = ?').run(lastSeen, relayId, id)
  }

  deleteEndpoint (id: string): boolean {
    return this.db.prepare('DELETE FROM endpoints WHERE id = ?').run(id).changes > 0
  }

  recordRefusal (endpointId: string, edgeId: string, code: string, at: number): void {
    this.db.prepare(`INSERT INTO refusals (endpoint_id, edge_id, code, count, first_at, last_at) VALUES (?, ?, ?, 1, ?, ?)
      ON CONFLICT(endpoint_id, edge_id, code) DO UPDATE SET count = count + 1, last_at = excluded.last_at`).run(endpointId, edgeId, code, at, at)
    // Bounded: refusals are written for unauthenticated attempts too.
    this.db.prepare(`DELETE FROM refusals WHERE endpoint_id = ? AND rowid NOT IN
      (SELECT rowid FROM refusals WHERE endpoint_id = ? ORDER BY last_at DESC LIMIT 50)`).run(endpointId, endpointId)
  }

  listRefusals (endpointId: string): RefusalRecord[] {
    const rows = this.db.prepare('SELECT * FROM refusals WHERE endpoint_id = ? ORDER BY last_at DESC LIMIT 50').all(endpointId) as Array<{
      endpoint_id: string, edge_id: string, code: string, count: number, first_at: number, last_at: number
    }>
    return rows.map(r => ({ endpointId: r.endpoint_id, edgeId: r.edge_id, code: r.code, count: r.count, firstAt: r.first_at, lastAt: r.last_at }))
  }

  close (): void {
    if (this.db.open) this.db.close()
  }
}
