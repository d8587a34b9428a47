import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { startSite, startAgent, eventually, tempDir, testLogger } from '../helpers/cluster.js'
import { openPgStore } from '../../server/pg-store.js'
import type { RelaygateError } from '../../protocol/errors.js'
import { run } from '../helpers/child.js'
import { startPostgres } from '../helpers/postgres.js'

/**
 * The server on PostgreSQL while the database restarts (issue 13): the
 * relays keep answering check-ins, the API answers 503 with a code, the
 * server reconnects by itself, and what was acknowledged is still there.
 */
t.test('the database restarts under a running server: check-ins go on, the API says 503 with a code, then everything is back', async t => {
  const pg = await startPostgres(t)
  const { api } = await startSite(t, { server: { databaseUrl: pg.url } })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'through-the-outage' })
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 1 })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()

  pg.stop()
  const during = await api.request('GET', '/api/endpoints')
  t.equal(during.status, 503)
  t.equal(during.body?.error?.code, 'RG_ERR_STORE_UNAVAILABLE', 'a coded error, not a hang or a 500')
  const write = await api.request('POST', '/api/endpoints', { name: 'not-now' })
  t.equal(write.status, 503, 'a write during the outage is refused, not half done')
  const checkins = agent.checkins
  await eventually(() => agent.checkins > checkins + 1 || undefined, 15_000)
  t.equal(agent.state, 'online', 'the agent stays online: its relay answers check-ins without the server\'s database')

  pg.start()
  const back = await eventually(async () => {
    const res = await api.request('GET', `/api/endpoints/${ep.id as string}`)
    return res.status === 200 ? res.body : undefined
  }, 30_000)
  t.equal(back.name, 'through-the-outage', 'the endpoint written before the outage is there')
  t.equal(back.status, 'online')
  const after = await api.ok('POST', '/api/endpoints', { name: 'after' })
  t.match(after, { name: 'after' }, 'writes work again without a server restart')
})

t.test('relaygate server with an unreachable database: tries for --database-retry, then one line naming the URL without its password, exit 2', async t => {
  const dataDir = tempDir(t)
  const res = await run(t, ['server', '--data-dir', dataDir, '--http-port', '0', '--https-port', 'off', '--database-retry', '1'],
    { RELAYGATE_DATABASE_URL: 'postgres://fleet:hunter2-secret@127.0.0.1:1/fleet' })
  t.equal(res.code, 2)
  const lines = res.stderr.trim().split('\n')
  t.match(lines.at(-1), /RG_ERR_STORE_UNAVAILABLE.*postgres:\/\/fleet:\*\*\*@127\.0\.0\.1:1\/fleet|postgres:\/\/fleet:\*\*\*@127\.0\.0\.1:1\/fleet.*RG_ERR_STORE_UNAVAILABLE/)
  t.notMatch(res.stderr + res.stdout, /hunter2/, 'the password is never printed')
  t.notOk(existsSync(join(dataDir, 'relaygate.db')), 'no SQLite file is made when a database URL is given')
})

t.test('a connection that dies inside a transaction fails that transaction with a code; nothing crashes and the store goes on', async t => {
  const pg = await startPostgres(t)
  const store = await openPgStore({ url: pg.url, logger: testLogger() })
  t.teardown(async () => { await store.close() })
  const psql = (sql: string): string => execFileSync('psql', [pg.url, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  let entered!: () => void
  const inside = new Promise<void>(resolve => { entered = resolve })
  const failed = store.transaction(async tx => {
    await tx.getMeta('schemaVersion')
    entered()
    // The database ends this connection (as a restart or an administrator does) while the transaction holds it.
    await new Promise(resolve => setTimeout(resolve, 500))
    return await tx.getMeta('schemaVersion')
  }).then(() => 'committed', (err: RelaygateError) => err.code)
  await inside
  const killed = psql("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'relaygate' AND state = 'idle in transaction') k")
  t.equal(killed, '1', 'the transaction\'s connection was terminated')
  t.equal(await failed, 'RG_ERR_STORE_UNAVAILABLE', 'the transaction fails with a code (before, the dead client\'s error event crashed the process)')
  t.match(await store.getMeta('schemaVersion'), /^\d+$/, 'the next query works: the pool replaced the connection')
})
