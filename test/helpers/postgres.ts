import { createHash } from 'node:crypto'
import pg from 'pg'
import { startPostgresServer, type Postgres } from '../../bench/lib/postgres.js'
import type { TapLike } from './cluster.js'

export type { Postgres } from '../../bench/lib/postgres.js'

/** A real PostgreSQL for a test (bench/lib/postgres.ts), stopped and removed in teardown. */
export async function startPostgres (t: TapLike): Promise<Postgres> {
  const server = await startPostgresServer()
  t.teardown(() => server.destroy())
  return server
}

let shared: Promise<Postgres> | null = null
const created = new Map<string, Promise<string>>()

/**
 * A database of its own for a test server's data dir (the same one again
 * for the same dir, so a restarted server finds its state), on one
 * PostgreSQL server per test process, stopped when the process's tests end.
 */
export async function databaseFor (dataDir: string): Promise<string> {
  shared ??= import('tap').then(async ({ default: root }) => await startPostgres(root))
  const server = await shared
  const name = `t_${createHash('sha256').update(dataDir).digest('hex').slice(0, 20)}`
  let url = created.get(name)
  if (url === undefined) {
    url = (async () => {
      const client = new pg.Client({ connectionString: server.url })
      await client.connect()
      try {
        await client.query(`CREATE DATABASE ${name}`)
      } finally {
        await client.end()
      }
      return server.url.replace(/\/[^/]*$/, `/${name}`)
    })()
    created.set(name, url)
  }
  return await url
}
