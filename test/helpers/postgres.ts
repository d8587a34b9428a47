import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import pg from 'pg'
import { freePort, type TapLike } from './cluster.js'

/**
 * A real PostgreSQL server from Debian's packages for a test (issue 13):
 * initdb into a temporary directory, started on a free loopback port (and a
 * unix socket in the same directory), stopped and removed in teardown.
 * PostgreSQL refuses to run as root, so under root (CI) it runs as the
 * `postgres` user. fsync is off: a test's database need not survive a
 * power cut, and it starts in about a second.
 */
export interface Postgres {
  /** postgres://relaygate@127.0.0.1:<port>/relaygate (trust authentication on loopback). */
  readonly url: string
  readonly port: number
  readonly dir: string
  /** Stops the server (fast: the connections are closed), as a database restart or outage would. */
  stop: () => void
  /** Starts it again on the same port and data. */
  start: () => void
}

const asRoot = userInfo().uid === 0

/** Debian keeps the server programs in /usr/lib/postgresql/<version>/bin (not on PATH): the newest there, else PATH. */
function pgBin (program: string): string {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root) ? readdirSync(root).filter(v => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : []
  for (const v of versions) {
    const path = join(root, v, 'bin', program)
    if (existsSync(path)) return path
  }
  return program
}

/** Runs a PostgreSQL program, as the postgres user when we are root. */
function pgRun (name: string, args: string[]): string {
  const program = pgBin(name)
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', program, ...args]] : [program, args]
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

export async function startPostgres (t: TapLike): Promise<Postgres> {
  const dir = mkdtempSync(join(tmpdir(), 'relaygate-pg-'))
  chmodSync(dir, 0o700)
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
    chownSync(dir, uid, gid)
  }
  const data = join(dir, 'data')
  pgRun('initdb', ['-D', data, '-U', 'relaygate', '-A', 'trust', '--no-sync', '-E', 'UTF8'])
  const port = await freePort()
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`
  const start = (): void => { pgRun('pg_ctl', ['-D', data, '-o', options, '-l', join(dir, 'log'), '-w', '-t', '30', 'start']) }
  const stop = (): void => { pgRun('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']) }
  start()
  pgRun('createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', 'relaygate', 'relaygate'])
  t.teardown(() => {
    try { pgRun('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']) } catch {}
    rmSync(dir, { recursive: true, force: true })
  })
  return { url: `postgres://relaygate@127.0.0.1:${port}/relaygate`, port, dir, stop, start }
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
