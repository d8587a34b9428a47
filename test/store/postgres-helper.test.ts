import t from 'tap'
import { execFileSync } from 'node:child_process'
import { startPostgres } from '../helpers/postgres.js'

/**
 * The test helper behind the PostgreSQL store (issue 13): a real server from
 * Debian's packages, reachable on loopback, that keeps its data across a
 * stop and start (the database restarts of the fault tests).
 */
function psql (url: string, sql: string): string {
  return execFileSync('psql', [url, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
}

t.test('a real PostgreSQL starts for a test, answers on loopback, and keeps its data across a restart', async t => {
  const pg = await startPostgres(t)
  t.match(psql(pg.url, 'SHOW server_version'), /^1[5-9]\./, 'PostgreSQL 15 or later')
  psql(pg.url, 'CREATE TABLE kept (id int PRIMARY KEY, v text)')
  psql(pg.url, "INSERT INTO kept VALUES (1, 'before the restart')")
  pg.stop()
  t.throws(() => psql(pg.url, 'SELECT 1'), 'unreachable while stopped')
  pg.start()
  t.equal(psql(pg.url, 'SELECT v FROM kept WHERE id = 1'), 'before the restart')
})

t.test('two helpers at once get separate servers', async t => {
  const [a, b] = await Promise.all([startPostgres(t), startPostgres(t)])
  t.not(a.port, b.port)
  psql(a.url, 'CREATE TABLE only_in_a (x int)')
  t.equal(psql(b.url, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"), '0')
})
