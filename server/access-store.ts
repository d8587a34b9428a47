import type { SqlDriver } from './sql-store.js'
import { newId } from './ids.js'

/**
 * Who may do what, and what they did (issue 17): named API tokens with a
 * role, and the audit log. The queries are written once for both backends
 * (sql-store.ts); the tables are in `accessTables()` (SQLite schema 8,
 * PostgreSQL migration 6).
 */
export const ROLES = ['viewer', 'operator', 'admin'] as const
export type Role = typeof ROLES[number]

/** Whether `role` may do what `needed` allows (viewer < operator < admin). */
export function roleAllows (role: Role, needed: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed)
}

export interface TokenRecord {
  id: string
  name: string
  role: Role
  /** sha256 of the token: the token itself is shown once and never stored. */
  tokenHash: string
  createdAt: number
  /** The token that created it (null: the server made it at first start). */
  createdBy: string | null
  lastUsedAt: number | null
  revokedAt: number | null
  /** The first-start admin token of a server (its <data-dir>/admin-token file). */
  builtin: boolean
}

export interface AuditEntry {
  at: number
  /** The token's name (null: no token, e.g. the server itself). */
  token: string | null
  /** What was done: endpoint.create, tunnel.open, token.revoke, … */
  action: string
  /** What it was done to: an id or a name. */
  target: string | null
  /** The caller's address. */
  source: string | null
  /** "ok" or the error code it failed with. */
  result: string
  /** More about it (no secrets): a name, a role, bytes each way. */
  detail: Record<string, unknown> | null
}

export interface AuditRecord extends AuditEntry { id: number }

export interface AuditFilter { action?: string, token?: string, target?: string, limit: number, before?: { id?: number, at?: number } }

export interface AccessStore {
  /** Throws a unique violation when an active token has the name. */
  createToken: (token: TokenRecord) => Promise<void>
  listTokens: () => Promise<TokenRecord[]>
  getToken: (id: string) => Promise<TokenRecord | undefined>
  /** Revokes it (false: no such token, or revoked already). */
  revokeToken: (id: string, at: number) => Promise<boolean>
  /** Active admin tokens other than `id`. */
  otherAdmins: (id: string) => Promise<number>
  touchTokens: (ids: string[], at: number) => Promise<void>
  /** A server's first-start token: found by its hash, or added under `name` (else `fallbackName` when taken). */
  ensureBuiltinToken: (tokenHash: string, names: string[], at: number, reactivate: boolean) => Promise<TokenRecord>
  addAudit: (entries: AuditEntry[]) => Promise<void>
  /** Newest first. */
  listAudit: (filter: AuditFilter) => Promise<AuditRecord[]>
  /** Deletes entries older than `before` (ms); returns how many. */
  pruneAudit: (before: number) => Promise<number>
}

interface TokenRow {
  id: string, name: string, role: string, token_hash: string, created_at: number | string, created_by: string | null,
  last_used_at: number | string | null, revoked_at: number | string | null, builtin: number | boolean
}

interface AuditRow {
  id: number | string, at: number | string, token_name: string | null, action: string, target: string | null, source: string | null, result: string, detail: string | null
}

const num = (v: number | string | null): number | null => v === null ? null : Number(v)

const tokenFromRow = (r: TokenRow): TokenRecord => ({
  id: r.id,
  name: r.name,
  role: r.role as Role,
  tokenHash: r.token_hash,
  createdAt: Number(r.created_at),
  createdBy: r.created_by,
  lastUsedAt: num(r.last_used_at),
  revokedAt: num(r.revoked_at),
  builtin: r.builtin === true || r.builtin === 1
})

const auditFromRow = (r: AuditRow): AuditRecord => ({
  id: Number(r.id),
  at: Number(r.at),
  token: r.token_name,
  action: r.action,
  target: r.target,
  source: r.source,
  result: r.result,
  detail: r.detail === null ? null : JSON.parse(r.detail) as Record<string, unknown>
})

export class SqlAccessStore implements AccessStore {
  constructor (private readonly db: SqlDriver) {}

  async createToken (t: TokenRecord): Promise<void> {
    await this.db.run(`INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, last_used_at, revoked_at, builtin)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [t.id, t.name, t.role, t.tokenHash, t.createdAt, t.createdBy, t.lastUsedAt, t.revokedAt, t.builtin ? 1 : 0])
  }

  async listTokens (): Promise<TokenRecord[]> {
    return (await this.db.all<TokenRow>('SELECT * FROM api_tokens ORDER BY created_at, id')).map(tokenFromRow)
  }

  async getToken (id: string): Promise<TokenRecord | undefined> {
    const row = await this.db.get<TokenRow>('SELECT * FROM api_tokens WHERE id = ?', [id])
    return row === undefined ? undefined : tokenFromRow(row)
  }

  async revokeToken (id: string, at: number): Promise<boolean> {
    return await this.db.run('UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [at, id]) > 0
  }

  async otherAdmins (id: string): Promise<number> {
    const row = await this.db.get<{ n: number | string }>('SELECT count(*) AS n FROM api_tokens WHERE role = \'admin\' AND revoked_at IS NULL AND id <> ?', [id])
    return Number(row?.n ?? 0)
  }

  async touchTokens (ids: string[], at: number): Promise<void> {
    for (const id of ids) await this.db.run('UPDATE api_tokens SET last_used_at = ? WHERE id = ?', [at, id])
  }

  async ensureBuiltinToken (tokenHash: string, names: string[], at: number, reactivate: boolean): Promise<TokenRecord> {
    return await this.db.transaction(async tx => {
      const found = await tx.get<TokenRow>(`SELECT * FROM api_tokens WHERE token_hash = ?${tx.forUpdate}`, [tokenHash])
      if (found !== undefined) {
        if (reactivate && found.revoked_at !== null) await tx.run('UPDATE api_tokens SET revoked_at = NULL WHERE id = ?', [found.id])
        return tokenFromRow({ ...found, revoked_at: reactivate ? null : found.revoked_at })
      }
      const taken = new Set((await tx.all<{ name: string }>('SELECT name FROM api_tokens WHERE revoked_at IS NULL')).map(r => r.name))
      const name = names.find(n => !taken.has(n)) ?? `${names[0]}-${tokenHash.slice(0, 8)}`
      const record: TokenRecord = {
        id: newId('t'), name, role: 'admin', tokenHash, createdAt: at, createdBy: null, lastUsedAt: null, revokedAt: null, builtin: true
      }
      await new SqlAccessStore(tx).createToken(record)
      return record
    })
  }

  async addAudit (entries: AuditEntry[]): Promise<void> {
    if (entries.length === 0) return
    await this.db.transaction(async tx => {
      for (const e of entries) {
        await tx.run('INSERT INTO audit (at, token_name, action, target, source, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?)',
          [e.at, e.token, e.action, e.target, e.source, e.result, e.detail === null ? null : JSON.stringify(e.detail)])
      }
    })
  }

  async listAudit (f: AuditFilter): Promise<AuditRecord[]> {
    const where: string[] = []
    const args: unknown[] = []
    if (f.action !== undefined) {
      // "tunnel" matches tunnel.open and tunnel.close; "tunnel.open" only itself.
      where.push('(action = ? OR action LIKE ?)')
      args.push(f.action, `${f.action}.%`)
    }
    if (f.token !== undefined) { where.push('token_name = ?'); args.push(f.token) }
    if (f.target !== undefined) { where.push('target = ?'); args.push(f.target) }
    if (f.before?.id !== undefined) { where.push('id < ?'); args.push(f.before.id) }
    if (f.before?.at !== undefined) { where.push('at < ?'); args.push(f.before.at) }
    const sql = `SELECT * FROM audit${where.length === 0 ? '' : ` WHERE ${where.join(' AND ')}`} ORDER BY id DESC LIMIT ?`
    return (await this.db.all<AuditRow>(sql, [...args, f.limit])).map(auditFromRow)
  }

  async pruneAudit (before: number): Promise<number> {
    return await this.db.run('DELETE FROM audit WHERE at < ?', [before])
  }
}

/** The tables (and the endpoint-name rule) in each dialect. */
export function accessTables (dialect: 'sqlite' | 'pg'): string {
  const big = dialect === 'pg' ? 'BIGINT' : 'INTEGER'
  const serial = dialect === 'pg' ? 'BIGSERIAL PRIMARY KEY' : 'INTEGER PRIMARY KEY AUTOINCREMENT'
  return `
CREATE TABLE IF NOT EXISTS api_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at ${big} NOT NULL,
  created_by TEXT,
  last_used_at ${big},
  revoked_at ${big},
  builtin ${dialect === 'pg' ? 'SMALLINT' : 'INTEGER'} NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS audit (
  id ${serial},
  at ${big} NOT NULL,
  token_name TEXT,
  action TEXT NOT NULL,
  target TEXT,
  source TEXT,
  result TEXT NOT NULL,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target);
UPDATE endpoints SET name = name || ' (' || id || ')' WHERE EXISTS (
  SELECT 1 FROM endpoints o WHERE o.name = endpoints.name AND (o.created_at < endpoints.created_at OR (o.created_at = endpoints.created_at AND o.id < endpoints.id)));
CREATE UNIQUE INDEX IF NOT EXISTS endpoints_name ON endpoints (name);`
}
