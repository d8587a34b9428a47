import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { freePort } from './sample.js'

/**
 * A real PostgreSQL server from Debian's packages, for tests and benches
 * (issue 13): initdb into a temporary directory, started on a free loopback
 * port (and a unix socket in the same directory). PostgreSQL refuses to run
 * as root, so under root (CI) it runs as the `postgres` user. Unless
 * `durable`, fsync is off: a test's database need not survive a power cut,
 * and it starts in about a second; a bench measures with the defaults.
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
  /** Stops it at once and removes its directory. */
  destroy: () => void
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

export async function startPostgresServer (options: { durable?: boolean } = {}): Promise<Postgres> {
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
  const fast = options.durable === true ? '' : ' -c fsync=off -c synchronous_commit=off -c full_page_writes=off'
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200${fast}`
  const start = (): void => { pgRun('pg_ctl', ['-D', data, '-o', serverOptions, '-l', join(dir, 'log'), '-w', '-t', '30', 'start']) }
  const stop = (): void => { pgRun('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']) }
  start()
  pgRun('createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', 'relaygate', 'relaygate'])
  const destroy = (): void => {
    try { pgRun('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']) } catch {}
    rmSync(dir, { recursive: true, force: true })
  }
  return { url: `postgres://relaygate@127.0.0.1:${port}/relaygate`, port, dir, stop, start, destroy }
}

