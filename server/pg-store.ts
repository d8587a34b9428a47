import pg from 'pg'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/errors.js'
import { Backoff } from '../common/backoff.js'
import { updateTables } from './update-store.js'
import { accessTables } from './access-store.js'
import { SqlStore, type SqlDriver } from './sql-store.js'
import { ClusterStore } from './cluster-store.js'

/**
 * The PostgreSQL store (`--database-url`): the same queries as the
 * embedded SQLite file (sql-store.ts) over node-postgres and its pool.
 * Rows a transaction decides on are locked (SELECT … FOR UPDATE); the
 * schema is migrated at start under an advisory lock, so servers starting
 * together take turns.
 */

/** Schema steps, in order; the database records the last one applied (meta.schemaVersion). */
const MIGRATIONS: string[] = [
  // 1: everything as of SQLite schema 4.
  `CREATE TABLE IF NOT EXISTS relays (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    fingerprint TEXT,
    ws_url TEXT,
    wss_url TEXT,
    version TEXT,
    last_seen BIGINT
  );
  CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tunnel_target TEXT,
    auth_key BYTEA NOT NULL,
    tunnel_key BYTEA NOT NULL,
    edge_id TEXT,
    created_at BIGINT NOT NULL,
    last_seen BIGINT,
    relay_id TEXT,
    max_agents INTEGER NOT NULL DEFAULT 1
  );
  CREATE INDEX IF NOT EXISTS endpoints_created ON endpoints (created_at, id);
  CREATE TABLE IF NOT EXISTS endpoint_agents (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    edge_id TEXT NOT NULL,
    admitted_at BIGINT NOT NULL,
    last_seen BIGINT,
    PRIMARY KEY (endpoint_id, edge_id)
  );
  CREATE TABLE IF NOT EXISTS snapshots (
    endpoint_id TEXT PRIMARY KEY REFERENCES endpoints(id) ON DELETE CASCADE,
    edge_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS artifacts_sha256 ON artifacts (sha256);
  CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    artifact TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    path TEXT NOT NULL,
    run TEXT,
    created_at BIGINT NOT NULL,
    deadline BIGINT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs (deadline);
  CREATE TABLE IF NOT EXISTS job_targets (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    relay_id TEXT,
    exit_code INTEGER,
    error_code TEXT,
    error_message TEXT,
    output TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, endpoint_id)
  );
  CREATE INDEX IF NOT EXISTS job_targets_endpoint ON job_targets (endpoint_id, state);
  CREATE TABLE IF NOT EXISTS refusals (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    edge_id TEXT NOT NULL,
    code TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
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
    count BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (relay_id, endpoint_id, edge_id, code, kind)
  );
  CREATE INDEX IF NOT EXISTS security_events_last ON security_events (last_at);
  CREATE TABLE IF NOT EXISTS endpoint_tombstones (
    id TEXT PRIMARY KEY,
    auth_key BYTEA NOT NULL,
    tunnel_key BYTEA NOT NULL,
    deleted_at BIGINT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS endpoint_tombstones_deleted ON endpoint_tombstones (deleted_at);
  CREATE TABLE IF NOT EXISTS spent_credentials (
    tunnel_id TEXT PRIMARY KEY,
    spent_at BIGINT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS spent_credentials_at ON spent_credentials (spent_at);`,
  // 2: when a snapshot was taken, so that the write itself keeps the newer one (SQLite schema 5).
  'ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS taken_at BIGINT NOT NULL DEFAULT 0',
  // 3: several server replicas (cluster-store.ts): the registry, where each relay is linked, who is online, open tunnels, admin tokens.
  `CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    peer_url TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
  );
  CREATE SEQUENCE IF NOT EXISTS relay_fence;
  CREATE TABLE IF NOT EXISTS relay_links (
    relay_id TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    fence BIGINT NOT NULL,
    linked_at BIGINT NOT NULL,
    figures TEXT
  );
  CREATE INDEX IF NOT EXISTS relay_links_replica ON relay_links (replica_id);
  CREATE TABLE IF NOT EXISTS presence (
    endpoint_id TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    relay_id TEXT NOT NULL,
    fence BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, edge_id, relay_id)
  );
  CREATE INDEX IF NOT EXISTS presence_relay ON presence (relay_id, fence);
  CREATE TABLE IF NOT EXISTS cluster_tunnels (
    endpoint_id TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    info TEXT NOT NULL,
    updated_at BIGINT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS admin_tokens (
    token_hash TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );`,
  // 4: self-update rollouts (issue 16).
  updateTables('pg'),
  // 5: endpoint tags (a JSON list of strings).
  'ALTER TABLE endpoints ADD COLUMN IF NOT EXISTS tags TEXT NOT NULL DEFAULT \'[]\'',
  // 6: named API tokens, the audit log, unique endpoint names (issue 17).
  accessTables('pg')
]
export const PG_SCHEMA_VERSION = MIGRATIONS.length
/** The advisory lock migrations hold (any constant; "rgate" in ASCII). */
const MIGRATION_LOCK = 0x7267617465

/** The URL with its password replaced, for logs and errors. */
export function redactDatabaseUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    for (const key of [...u.searchParams.keys()]) if (/pass/i.test(key)) u.searchParams.set(key, '***')
    return u.toString()
  } catch {
    return '(a database URL that does not parse)'
  }
}

/** Errors that mean "the database is not reachable now" rather than "the query is wrong". */
function unavailable (err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  if (typeof code !== 'string') return /terminat|Connection|connect|timeout/i.test((err as Error).message ?? '')
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || /^E(CONNREFUSED|CONNRESET|PIPE|HOSTUNREACH|NETUNREACH|TIMEDOUT|AI_AGAIN)$/.test(code) || code === 'ENOTFOUND'
}

function coded (err: unknown): Error {
  if (err instanceof RelaygateError || !unavailable(err)) return err as Error
  return new RelaygateError('RG_ERR_STORE_UNAVAILABLE', `the database is not reachable: ${(err as Error).message}`)
}

/**
 * A statement for node-postgres: `?` placeholders (outside quoted strings)
 * as `$1, $2, …`, and a name, so each connection parses and plans it once
 * (a reconnect storm runs the same few statements thousands of times).
 * The first 1,000 distinct statements are kept; others run unnamed.
 */
const statements = new Map<string, { name: string, text: string }>()
function statement (sql: string): { name?: string, text: string } {
  const known = statements.get(sql)
  if (known !== undefined) return known
  let n = 0
  let quoted = false
  let text = ''
  for (const ch of sql) {
    if (ch === '\'') quoted = !quoted
    text += ch === '?' && !quoted ? `$${++n}` : ch
  }
  if (statements.size >= 1000) return { text }
  const named = { name: `rg${statements.size}`, text }
  statements.set(sql, named)
  return named
}

/** BIGINT and COUNT(*) as numbers (timestamps and sizes stay far below 2^53). */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser
}

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>

class PgDriver implements SqlDriver {
  readonly forUpdate = ' FOR UPDATE'
  private readonly pool: pg.Pool
  private readonly on: Queryable
  private readonly inTransaction: boolean

  constructor (pool: pg.Pool, on: Queryable, inTransaction: boolean) {
    this.pool = pool
    this.on = on
    this.inTransaction = inTransaction
  }

  private async query (sql: string, args: unknown[]): Promise<pg.QueryResult> {
    try {
      return await this.on.query({ ...statement(sql), values: args })
    } catch (err) {
      throw coded(err)
    }
  }

  async all<T> (sql: string, args: unknown[] = []): Promise<T[]> {
    return (await this.query(sql, args)).rows as T[]
  }

  async get<T> (sql: string, args: unknown[] = []): Promise<T | undefined> {
    return (await this.query(sql, args)).rows[0] as T | undefined
  }

  async run (sql: string, args: unknown[] = []): Promise<number> {
    return (await this.query(sql, args)).rowCount ?? 0
  }

  async transaction<T> (fn: (tx: SqlDriver) => Promise<T>): Promise<T> {
    if (this.inTransaction) return await fn(this)
    try {
      return await withTransaction(await this.pool.connect(), async held => await fn(new PgDriver(this.pool, held, true)))
    } catch (err) {
      throw coded(err)
    }
  }

  async close (): Promise<void> {
    await this.pool.end()
  }
}

export interface PgStoreOptions {
  url: string
  /** Overrides the URL's password (from --database-password-file). */
  password?: string
  logger: Logger
  /** How long to keep trying to reach the database at start (ms). */
  connectRetryMs?: number
  /** Connections in the pool. */
  poolSize?: number
}

/**
 * `fn` in one transaction on a client checked out of the pool, released
 * after. A checked-out client has no listener of the pool's: its connection
 * dying (the database restarting, the backend terminated) emitted 'error'
 * with nobody listening, and the server process crashed. Here it fails `fn`
 * instead, and a connection that died or failed to roll back is closed, not
 * reused.
 */
async function withTransaction<T> (client: pg.PoolClient, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  let broken: Error | undefined
  const lost = (err: Error): void => { broken = err }
  client.on('error', lost)
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    await client.query('ROLLBACK').catch((e: Error) => { broken ??= e })
    throw err
  } finally {
    client.removeListener('error', lost)
    client.release(broken)
  }
}

/** Applies the schema steps this database lacks, holding the advisory lock: one server migrates, the others wait and find it done. */
async function migrate (pool: pg.Pool, logger: Logger): Promise<void> {
  const from = await withTransaction(await pool.connect(), async client => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
    await client.query('CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
    const row = (await client.query('SELECT value FROM meta WHERE key = \'schemaVersion\'')).rows[0] as { value: string } | undefined
    const version = row === undefined ? 0 : Number(row.value)
    if (version > MIGRATIONS.length) throw new RelaygateError('RG_ERR_CONFIG', `the database has schema ${version}, newer than this server knows (${MIGRATIONS.length}); run the newer server`)
    for (let v = version; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v])
    await client.query('INSERT INTO meta (key, value) VALUES (\'schemaVersion\', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [String(MIGRATIONS.length)])
    return version
  })
  if (from < MIGRATIONS.length) logger.info({ from, to: MIGRATIONS.length }, 'database schema migrated')
}

/**
 * Connects (trying again with backoff for `connectRetryMs`), migrates, and
 * returns the store. Unreachable for that long: RG_ERR_STORE_UNAVAILABLE,
 * naming the URL without its password.
 */
export async function openPgStore (options: PgStoreOptions): Promise<SqlStore> {
  const where = redactDatabaseUrl(options.url)
  const pool = new pg.Pool({
    connectionString: options.url,
    ...(options.password === undefined ? {} : { password: options.password }),
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    types,
    application_name: 'relaygate'
  })
  // An idle connection that dies (the database restarted) must not crash the server: the pool replaces it.
  pool.on('error', err => options.logger.warn({ err: err.message, database: where }, 'database connection lost; the pool reconnects'))
  const backoff = new Backoff({ baseMs: 250, maxMs: 5000, giveUpAfterMs: options.connectRetryMs ?? 30_000 })
  for (;;) {
    try {
      await migrate(pool, options.logger)
      break
    } catch (err) {
      if (err instanceof RelaygateError || !unavailable(err)) {
        await pool.end().catch(() => {})
        throw err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_CONFIG', `database ${where}: ${(err as Error).message}`)
      }
      const delay = backoff.next()
      if (delay === undefined) {
        await pool.end().catch(() => {})
        throw new RelaygateError('RG_ERR_STORE_UNAVAILABLE', `cannot reach the database at ${where}: ${(err as Error).message}`)
      }
      options.logger.warn({ database: where, err: (err as Error).message, retryInMs: delay }, 'database not reachable yet; trying again')
      await new Promise(resolve => setTimeout(resolve, delay))
    }
  }
  options.logger.info({ database: where }, 'using PostgreSQL')
  return new PgStore(new PgDriver(pool, pool, false), options, where)
}

/**
 * The PostgreSQL store, with what only it offers: the cluster's tables
 * (several replicas on one database) and LISTEN/NOTIFY.
 */
export class PgStore extends SqlStore {
  readonly cluster: ClusterStore
  private readonly options: PgStoreOptions
  private readonly where: string

  constructor (driver: SqlDriver, options: PgStoreOptions, where: string) {
    super(driver)
    this.cluster = new ClusterStore(driver)
    this.options = options
    this.where = where
  }

  /** Announces `payload` (at most 8,000 bytes) on `channel` to every listener, in commit order. */
  async notify (channel: string, payload: string): Promise<void> {
    await this.db.run('SELECT pg_notify(?, ?)', [channel, payload])
  }

  /**
   * Listens on `channel` over a connection of its own, reconnected with
   * jittered backoff when it drops; `onResync` runs after each reconnect
   * (notifications sent meanwhile are lost: the listener reads the state
   * again). Resolves once listening (or retrying) with the function that
   * stops listening.
   */
  async listen (channel: string, onPayload: (payload: string) => void, onResync: () => void): Promise<() => Promise<void>> {
    const log = this.options.logger
    const backoff = new Backoff({ baseMs: 250, maxMs: 5000 })
    let client: pg.Client | null = null
    let stopped = false
    let timer: NodeJS.Timeout | null = null
    const connect = async (again: boolean): Promise<void> => {
      const c = new pg.Client({
        connectionString: this.options.url,
        ...(this.options.password === undefined ? {} : { password: this.options.password }),
        connectionTimeoutMillis: 5000,
        keepAlive: true,
        application_name: 'relaygate-listen'
      })
      const retry = (err: Error): void => {
        if (client === c) client = null
        c.end().catch(() => {})
        if (stopped) return
        const delay = backoff.next() ?? 5000
        log.warn({ database: this.where, err: err.message, retryInMs: delay }, 'notification connection lost; listening again')
        timer = setTimeout(() => { timer = null; void connect(true) }, delay)
      }
      c.on('error', retry)
      c.on('notification', n => { if (n.channel === channel && n.payload !== undefined) onPayload(n.payload) })
      try {
        await c.connect()
        await c.query(`LISTEN "${channel.replace(/"/g, '')}"`)
      } catch (err) {
        c.removeListener('error', retry)
        retry(err as Error)
        return
      }
      if (stopped) {
        await c.end().catch(() => {})
        return
      }
      client = c
      backoff.reset()
      if (again) onResync()
    }
    await connect(false)
    return async () => {
      stopped = true
      if (timer !== null) clearTimeout(timer)
      await client?.end().catch(() => {})
      client = null
    }
  }
}
