import type BetterSqlite3 from 'better-sqlite3'
import type { Database as DB, Statement } from 'better-sqlite3'
import { RelaygateError } from '../protocol/errors.js'
import { DEFAULT_JOB_DEADLINE_MS } from './store.js'
import { SqlStore, type SqlDriver } from './sql-store.js'
import { updateTables } from './update-store.js'
import { accessTables } from './access-store.js'

/** 4: spent tunnel credentials. 5: snapshots.taken_at. 6: self-update rollouts. 7: endpoints.tags. */
export const SQLITE_SCHEMA_VERSION = 8

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
CREATE TABLE IF NOT EXISTS spent_credentials (
  tunnel_id TEXT PRIMARY KEY,
  spent_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spent_credentials_at ON spent_credentials(spent_at);
CREATE TABLE IF NOT EXISTS endpoint_tombstones (
  id TEXT PRIMARY KEY,
  auth_key BLOB NOT NULL,
  tunnel_key BLOB NOT NULL,
  deleted_at INTEGER NOT NULL
);
${updateTables('sqlite')}
${accessTables('sqlite')}`

/** One better-sqlite3 connection, shared by the driver and its transactions. */
class SqliteConnection {
  readonly db: DB
  /** Settles when the open transaction ends; null when none is open. */
  active: Promise<void> | null = null
  /** Settles when the last transaction begun or waiting ends: each waits for the one before. */
  tail: Promise<void> = Promise.resolve()
  private readonly statements = new Map<string, Statement>()

  constructor (Database: typeof BetterSqlite3, file: string) {
    this.db = new Database(file)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('foreign_keys = ON')
    this.db.pragma('busy_timeout = 5000')
  }

  /** Prepared statements are cached: preparing one costs more than running it. */
  stmt (sql: string): Statement {
    let st = this.statements.get(sql)
    if (st === undefined) {
      st = this.db.prepare(sql)
      this.statements.set(sql, st)
    }
    return st
  }
}

/**
 * The SQLite driver. better-sqlite3 runs each statement at once; a
 * transaction holds the connection across its awaits, so calls from
 * outside it wait until it ends instead of joining it by accident.
 */
class SqliteDriver implements SqlDriver {
  readonly forUpdate = ''
  private readonly conn: SqliteConnection
  private readonly inTransaction: boolean

  constructor (conn: SqliteConnection, inTransaction: boolean) {
    this.conn = conn
    this.inTransaction = inTransaction
  }

  // Each statement runs in the same turn as the check that no transaction
  // is open (no await between them), so it never lands inside one.

  async all<T> (sql: string, args: unknown[] = []): Promise<T[]> {
    while (!this.inTransaction && this.conn.active !== null) await this.conn.active
    return this.conn.stmt(sql).all(...args) as T[]
  }

  async get<T> (sql: string, args: unknown[] = []): Promise<T | undefined> {
    while (!this.inTransaction && this.conn.active !== null) await this.conn.active
    return this.conn.stmt(sql).get(...args) as T | undefined
  }

  async run (sql: string, args: unknown[] = []): Promise<number> {
    while (!this.inTransaction && this.conn.active !== null) await this.conn.active
    return this.conn.stmt(sql).run(...args).changes
  }

  async transaction<T> (fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    if (this.inTransaction) return await fn(this)
    // Transactions queue in order; the queue's place is taken before the first await.
    const before = this.conn.tail
    let end!: () => void
    const mine = new Promise<void>(resolve => { end = resolve })
    this.conn.tail = mine
    await before
    this.conn.active = mine
    try {
      this.conn.db.exec('BEGIN IMMEDIATE')
      try {
        const result = await fn(new SqliteDriver(this.conn, true))
        this.conn.db.exec('COMMIT')
        return result
      } catch (err) {
        if (this.conn.db.inTransaction) this.conn.db.exec('ROLLBACK')
        throw err
      }
    } finally {
      this.conn.active = null
      end()
    }
  }

  async close (): Promise<void> {
    await this.conn.tail
    if (this.conn.db.open) this.conn.db.close()
  }
}

/** Brings a data dir from any earlier schema version to this one (idempotent steps, in order). */
function migrate (conn: SqliteConnection): void {
  const { db } = conn
  db.exec(schema)
  const columns = (conn.stmt('PRAGMA table_info(endpoints)').all() as Array<{ name: string }>).map(c => c.name)
  if (!columns.includes('max_agents')) db.exec('ALTER TABLE endpoints ADD COLUMN max_agents INTEGER NOT NULL DEFAULT 1')
  if (!columns.includes('tags')) db.exec('ALTER TABLE endpoints ADD COLUMN tags TEXT NOT NULL DEFAULT \'[]\'')
  const jobColumns = (conn.stmt('PRAGMA table_info(jobs)').all() as Array<{ name: string }>).map(c => c.name)
  if (!jobColumns.includes('deadline')) {
    // Jobs from before deadlines: the default one, from their creation.
    db.exec(`ALTER TABLE jobs ADD COLUMN deadline INTEGER NOT NULL DEFAULT 0;
      UPDATE jobs SET deadline = created_at + ${DEFAULT_JOB_DEADLINE_MS}`)
  }
  db.exec('CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs (deadline)')
  const snapshotColumns = (conn.stmt('PRAGMA table_info(snapshots)').all() as Array<{ name: string }>).map(c => c.name)
  if (!snapshotColumns.includes('taken_at')) db.exec('ALTER TABLE snapshots ADD COLUMN taken_at INTEGER NOT NULL DEFAULT 0')
  // Version 1 kept only endpoints.edge_id: admit those edge ids.
  db.exec(`INSERT OR IGNORE INTO endpoint_agents (endpoint_id, edge_id, admitted_at, last_seen)
    SELECT id, edge_id, created_at, last_seen FROM endpoints WHERE edge_id IS NOT NULL`)
  conn.stmt('INSERT INTO meta (key, value) VALUES (\'schemaVersion\', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(String(SQLITE_SCHEMA_VERSION))
}

/** The embedded store: one SQLite file in the data dir, WAL mode, migrated on open. */
/**
 * better-sqlite3 is a native addon that only the server uses, and only with
 * the embedded store: it is an optional dependency (a relay or an agent
 * installs without a C++ toolchain) loaded on first use.
 */
async function loadSqlite (): Promise<typeof BetterSqlite3> {
  try {
    return (await import('better-sqlite3')).default
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    throw new RelaygateError('RG_ERR_CONFIG', `the embedded SQLite store needs the optional package better-sqlite3, which could not be loaded (${why}): install it where the server runs (npm install better-sqlite3, which needs a C++ toolchain if no prebuilt binary fits), or run the server on PostgreSQL with --database-url`)
  }
}

export async function openSqliteStore (file: string): Promise<SqlStore> {
  const conn = new SqliteConnection(await loadSqlite(), file)
  // One writer at a time: a second server on the same data dir waits here instead of migrating alongside.
  conn.db.exec('BEGIN IMMEDIATE')
  try {
    migrate(conn)
    conn.db.exec('COMMIT')
  } catch (err) {
    conn.db.exec('ROLLBACK')
    conn.db.close()
    throw err
  }
  return new SqlStore(new SqliteDriver(conn, false))
}
