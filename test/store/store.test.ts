import t from 'tap'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import { openSqliteStore, SQLITE_SCHEMA_VERSION } from '../../server/sqlite-store.js'
import { openPgStore, PG_SCHEMA_VERSION } from '../../server/pg-store.js'
import { DEFAULT_JOB_DEADLINE_MS, type Store, type EndpointRecord } from '../../server/store.js'
import { tempDir, capturingLogger, type TapLike } from '../helpers/cluster.js'
import { startPostgres, type Postgres } from '../helpers/postgres.js'

/**
 * The store's rules, run on both backends: the embedded SQLite file and a
 * real PostgreSQL (one server for this file, a fresh database per test).
 */
const server: Postgres = await startPostgres(t)
let databases = 0

async function freshPgUrl (): Promise<string> {
  const name = `store_${++databases}`
  const admin = await openPgStoreRaw(server.url)
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  return server.url.replace(/\/[^/]*$/, `/${name}`)
}

async function openPgStoreRaw (url: string): Promise<{ query: (sql: string, args?: unknown[]) => Promise<unknown>, end: () => Promise<void> }> {
  const pg = (await import('pg')).default
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  return { query: async (sql, args) => await client.query(sql, args), end: async () => await client.end() }
}

const backends: Array<{ name: string, open: (t: TapLike) => Promise<Store> }> = [
  { name: 'sqlite', open: async t => await openSqliteStore(join(tempDir(t), 'relaygate.db')) },
  { name: 'postgres', open: async () => await openPgStore({ url: await freshPgUrl(), logger: capturingLogger().logger, poolSize: 8 }) }
]

function endpoint (id: string, patch: Partial<EndpointRecord> = {}): EndpointRecord {
  return { id, name: id, tunnelTarget: null, authKey: Buffer.alloc(32, 1), tunnelKey: Buffer.alloc(32, 2), edgeId: null, createdAt: 1, lastSeen: null, relayId: null, maxAgents: 1, ...patch }
}

async function withEndpoint (t: TapLike, open: (t: TapLike) => Promise<Store>): Promise<Store> {
  const s = await open(t)
  t.teardown(() => s.close())
  await s.createEndpoint(endpoint('e1'))
  return s
}

for (const { name, open } of backends) {
  t.test(`${name}: refusals: a flood of one code from many edge ids is aggregated and cannot push out another code's evidence`, async t => {
    const s = await withEndpoint(t, open)
    const clone = randomUUID()
    await s.recordRefusal('e1', clone, 'RG_ERR_EDGE_ID_MISMATCH', 1000)
    for (let i = 0; i < 100; i++) await s.recordRefusal('e1', randomUUID(), 'RG_ERR_AUTH', 2000 + i)
    const rows = await s.listRefusals(['e1'])
    const auth = rows.filter(r => r.code === 'RG_ERR_AUTH')
    t.equal(auth.length, 21, '20 edge ids, then one row for the rest')
    t.match(auth.find(r => r.edgeId === '*'), { count: 80, lastAt: 2099 })
    t.equal(auth.reduce((n, r) => n + r.count, 0), 100, 'every attempt counted')
    t.match(rows.find(r => r.code === 'RG_ERR_EDGE_ID_MISMATCH'), { edgeId: clone, count: 1 }, 'the clone\'s evidence stays')
    await s.recordRefusal('e1', clone, 'RG_ERR_EDGE_ID_MISMATCH', 3000)
    t.match((await s.listRefusals(['e1'])).find(r => r.code === 'RG_ERR_EDGE_ID_MISMATCH'), { count: 2, firstAt: 1000, lastAt: 3000 })
    await s.recordRefusal('gone', clone, 'RG_ERR_AUTH', 1)
    t.same(await s.listRefusals(['gone']), [], 'no row for an endpoint that does not exist')
  })

  t.test(`${name}: jobs: overdue targets are those not finished whose deadline passed; a result applies once per attempt`, async t => {
    const s = await withEndpoint(t, open)
    await s.createJob({ id: 'j1', artifact: 'a', sha256: 'a'.repeat(64), size: 1, path: 'a', run: null, createdAt: 1, deadline: 100 }, ['e1'])
    await s.createJob({ id: 'j2', artifact: 'a', sha256: 'a'.repeat(64), size: 1, path: 'a', run: ['sh', 'x'], createdAt: 1, deadline: 500 }, ['e1'])
    t.same((await s.overdueTargets(99, 10)).map(r => r.jobId), [])
    t.same((await s.overdueTargets(100, 10)).map(r => r.jobId), ['j1'])
    t.same((await s.overdueTargets(1000, 10)).map(r => r.jobId), ['j1', 'j2'])
    t.equal(await s.nextAttempt('j1', 'e1', 'r1', 10), 1)
    t.equal(await s.nextAttempt('j1', 'e1', 'r1', 11), 2)
    t.notOk(await s.updateJobTarget('j1', 'e1', { state: 'succeeded' }, 1), 'a result of an earlier attempt is not applied')
    t.ok(await s.updateJobTarget('j1', 'e1', { state: 'succeeded', progress: 1 }, 2))
    t.notOk(await s.updateJobTarget('j1', 'e1', { state: 'failed' }, 2), 'a replayed result finds it final')
    t.equal(await s.nextAttempt('j1', 'e1', 'r1', 12), undefined, 'a finished target gets no new attempt')
    t.match(await s.getJobTarget('j1', 'e1'), { state: 'succeeded', progress: 1, attempt: 2, relayId: 'r1', updatedAt: 11 })
    t.same((await s.overdueTargets(1000, 10)).map(r => r.jobId), ['j2'], 'a finished target is not overdue')
    t.same((await s.unfinishedTargets(['nobody', 'e1'])).map(r => r.jobId), ['j2'], 'unfinished targets of several endpoints at once')
    t.same((await s.overdueTargets(1000, 1)).length, 1, 'bounded')
    t.same((await s.getJob('j2'))?.run, ['sh', 'x'])
    t.same(await s.countJobTargets(), { succeeded: 1, queued: 1 })
    t.ok(await s.digestInUse('a'.repeat(64)), 'an unfinished job holds its digest')
  })

  t.test(`${name}: endpoint tags: kept, found whole (a tag is not a part of another), renamed and replaced`, async t => {
    const s = await withEndpoint(t, open)
    await s.createEndpoint(endpoint('e2', { name: 'a', createdAt: 2, tags: ['site-a', 'db_1'] }))
    await s.createEndpoint(endpoint('e3', { name: 'b', createdAt: 3, tags: ['site-ab'] }))
    const tagged = async (tags: string[], q = ''): Promise<string[]> => (await s.findEndpoints({ q, offset: 0, limit: 100, tags })).page.map(e => e.id)
    t.same((await s.getEndpoint('e2'))?.tags, ['site-a', 'db_1'])
    t.same((await s.getEndpoint('e1'))?.tags, [], 'none by default')
    t.same(await tagged(['site-a']), ['e2'], 'site-a is not a part of site-ab')
    t.same(await tagged(['db_1', 'site-a']), ['e2'], 'every tag')
    t.same(await tagged(['db%1']), [], 'LIKE wildcards in a tag are plain characters')
    t.same(await tagged(['site-ab'], 'b'), ['e3'])
    t.ok(await s.updateEndpoint('e3', { name: 'renamed', tags: ['site-a'] }))
    t.match(await s.getEndpoint('e3'), { name: 'renamed', tags: ['site-a'] })
    t.same(await tagged(['site-a']), ['e2', 'e3'])
    t.notOk(await s.updateEndpoint('nope', { name: 'x' }), 'false for an endpoint that does not exist')
  })

  t.test(`${name}: rollouts: targets change only from the states named; ending them leaves finished ones alone`, async t => {
    const s = await open(t)
    t.teardown(() => s.close())
    const u = s.updates
    await u.createRollout({ id: 'u1', kind: 'agents', artifact: 'x', sha256: 'a'.repeat(64), size: 10, version: '1.2.3', state: 'running', reason: null, healthSeconds: 60, maxParallel: 5, createdAt: 1, deadline: 100 }, [{ id: 'e1', canary: true }, { id: 'e2', canary: false }, { id: 'e3', canary: false }])
    t.same((await u.listUpdateTargets('u1')).map(x => [x.targetId, x.canary, x.state]), [['e1', true, 'pending'], ['e2', false, 'pending'], ['e3', false, 'pending']], 'canaries first')
    t.ok(await u.updateUpdateTarget('u1', 'e1', { state: 'sent', sentAt: 5, updatedAt: 5 }, ['pending']))
    t.notOk(await u.updateUpdateTarget('u1', 'e1', { state: 'sent' }, ['pending']), 'a second dispatch loses')
    t.ok(await u.updateUpdateTarget('u1', 'e2', { state: 'succeeded', progress: 1, updatedAt: 6 }))
    t.equal(await u.endUpdateTargets('u1', 'cancelled', 'RG_ERR_UPDATE_ABORTED', 'aborted', 7, ['pending']), 1, 'only the pending one')
    t.match(await u.getUpdateTarget('u1', 'e3'), { state: 'cancelled', errorCode: 'RG_ERR_UPDATE_ABORTED' })
    t.equal(await u.endUpdateTargets('u1', 'failed', 'RG_ERR_UPDATE_TIMEOUT', 'late', 8), 1, 'every unfinished one: the sent one')
    t.match(await u.getUpdateTarget('u1', 'e2'), { state: 'succeeded' }, 'a finished target stays')
    t.ok(await u.setRolloutState('u1', 'paused', 'why', ['running']))
    t.notOk(await u.setRolloutState('u1', 'paused', 'why', ['running']), 'only from the states named')
    t.same((await u.activeRollouts()).map(r => r.id), ['u1'])
    t.ok(await s.digestInUse('a'.repeat(64)), 'an active rollout holds its build')
    t.ok(await u.setRolloutState('u1', 'aborted', null, ['running', 'paused']))
    t.same(await u.activeRollouts(), [])
    t.match(await u.getRollout('u1'), { state: 'aborted', healthSeconds: 60, maxParallel: 5, size: 10 })
  })

  t.test(`${name}: endpoints: search and paging in SQL (name, id, any admitted edge id; LIKE wildcards are plain characters)`, async t => {
    const s = await withEndpoint(t, open)
    await s.createEndpoint(endpoint('e2', { name: 'Web_50%', createdAt: 2, maxAgents: 4 }))
    await s.createEndpoint(endpoint('e3', { name: 'web-b', createdAt: 3, maxAgents: 4 }))
    await s.createEndpoint(endpoint('e4', { name: 'db', createdAt: 4, maxAgents: 4 }))
    await s.admitEdgeId('e4', 'aaaa-EDGE-bbbb', 5)
    await s.admitEdgeId('e4', 'cccc-second-dddd', 6)
    const names = async (q: string, offset = 0, limit = 100): Promise<{ total: number, names: string[] }> => {
      const r = await s.findEndpoints({ q, offset, limit })
      return { total: r.total, names: r.page.map(e => e.name) }
    }
    t.same(await names(''), { total: 4, names: ['e1', 'Web_50%', 'web-b', 'db'] }, 'all, in creation order')
    t.same(await names('WEB'), { total: 2, names: ['Web_50%', 'web-b'] }, 'case-insensitive')
    t.same(await names('web', 1, 1), { total: 2, names: ['web-b'] }, 'one page, with the total')
    t.same(await names('_'), { total: 1, names: ['Web_50%'] }, '_ is a plain character')
    t.same(await names('%'), { total: 1, names: ['Web_50%'] }, '% is a plain character')
    t.same(await names('edge'), { total: 1, names: ['db'] }, 'the first edge id')
    t.same(await names('SECOND'), { total: 1, names: ['db'] }, 'another admitted edge id of a cluster')
    t.same(await names('e3'), { total: 1, names: ['web-b'] }, 'the id')
    t.same(await names('nothing'), { total: 0, names: [] })
    const e4 = await s.getEndpoint('e4')
    t.same(e4?.authKey, Buffer.alloc(32, 1), 'keys come back as the bytes stored')
    t.equal(e4?.edgeId, 'aaaa-EDGE-bbbb')
    const many = [...Array.from({ length: 1200 }, (_, i) => `x${i}`), 'e4', 'e1']
    t.same((await s.listEndpointAgents(many)).map(a => a.edgeId), ['aaaa-EDGE-bbbb', 'cccc-second-dddd'], 'agents of many endpoints at once (ids beyond one IN list)')
    t.same(await s.listEndpointAgents([]), [])
  })

  t.test(`${name}: deleting an endpoint leaves a tombstone with its keys; presence is written in batches`, async t => {
    const s = await withEndpoint(t, open)
    t.ok(await s.admitEdgeId('e1', 'edge-a', 10))
    t.ok(await s.admitEdgeId('e1', 'edge-a', 20), 'an admitted edge id again')
    t.match(await s.getEndpointForAgent('e1', 'edge-a'), { endpoint: { id: 'e1' }, admitted: true })
    t.match(await s.getEndpointForAgent('e1', 'edge-b'), { endpoint: { id: 'e1' }, admitted: false })
    t.equal(await s.getEndpointForAgent('missing', 'edge-a'), undefined)
    await s.touchEndpoints([{ id: 'e1', edgeId: 'edge-a', lastSeen: 50, relayId: 'r1' }, { id: 'missing', edgeId: null, lastSeen: 1, relayId: null }])
    await s.touchEndpoints([{ id: 'e1', edgeId: 'edge-a', lastSeen: 60, relayId: null }, { id: 'e1', edgeId: null, lastSeen: 55, relayId: 'r2' }])
    t.match(await s.getEndpoint('e1'), { lastSeen: 60, relayId: 'r2' }, 'the latest touch of an endpoint counts; a null relay keeps the one named')
    t.match(await s.listEndpointAgents(['e1']), [{ edgeId: 'edge-a', admittedAt: 10, lastSeen: 60 }], 'the agent\'s last seen time is written with presence')
    const many = Array.from({ length: 1200 }, (_, i) => ({ id: i === 700 ? 'e1' : `none${i}`, edgeId: null, lastSeen: 70 + i, relayId: 'r3' }))
    await s.touchEndpoints(many)
    t.match(await s.getEndpoint('e1'), { lastSeen: 770, relayId: 'r3' }, 'more touches than one statement takes')
    t.ok(await s.deleteEndpoint('e1'))
    t.notOk(await s.deleteEndpoint('e1'))
    t.equal(await s.getEndpoint('e1'), undefined)
    t.same((await s.getTombstone('e1'))?.tunnelKey, Buffer.alloc(32, 2))
  })

  t.test(`${name}: settings, meta, relays, artifacts, security events, snapshots`, async t => {
    const s = await withEndpoint(t, open)
    t.equal((await s.updateSettings({ snapshotIntervalSeconds: 77 })).snapshotIntervalSeconds, 77)
    t.equal((await s.getSettings()).snapshotIntervalSeconds, 77)
    await s.createRelay({ id: 'r1', name: 'site', tokenHash: 'h1', createdAt: 1, revokedAt: null, fingerprint: null, wsUrl: null, wssUrl: null, version: null, lastSeen: null })
    await s.updateRelay('r1', { wsUrl: 'ws://x', lastSeen: 9 })
    t.match(await s.findRelayByTokenHash('h1'), { id: 'r1', wsUrl: 'ws://x', lastSeen: 9 })
    t.ok(await s.revokeRelay('r1', 10))
    t.notOk(await s.revokeRelay('r1', 11), 'revoked once')
    await s.putArtifact({ name: 'a', sha256: 'b'.repeat(64), size: 5_000_000_000, createdAt: 1 })
    t.equal((await s.getArtifact('a'))?.size, 5_000_000_000, 'sizes above 4 GiB')
    for (let i = 0; i < 3; i++) await s.recordSecurityEvent({ relayId: 'r1', endpointId: 'e1', edgeId: null, code: 'RG_ERR_REPORT_FORGED', kind: 'job-result', ref: `j${i}`, message: 'm', count: 1, firstAt: i, lastAt: i })
    t.equal(await s.countSecurityEvents('r1'), 3)
    t.match(await s.listSecurityEvents(10, { relayId: 'r1' }), [{ count: 3, ref: 'j2', edgeId: null }])
    t.same(await s.listSecurityEvents(10, { endpointId: 'other' }), [])
    await s.saveSnapshots([
      { endpointId: 'e1', edgeId: 'x', receivedAt: 5, reason: 'connect', snapshot: { hostname: 'h' } },
      { endpointId: 'deleted-meanwhile', edgeId: 'y', receivedAt: 5, reason: 'connect', snapshot: {} }
    ])
    t.match(await s.getSnapshot('e1'), { reason: 'connect', snapshot: { hostname: 'h' } })
    t.equal(await s.getSnapshot('deleted-meanwhile'), undefined, 'a snapshot of an endpoint that is gone is skipped, the others written')
    await s.saveSnapshots([{ endpointId: 'e1', edgeId: 'x', receivedAt: 6, reason: 'interval', snapshot: { hostname: 'h2', takenAt: 100 } }])
    t.match(await s.getSnapshot('e1'), { reason: 'interval', receivedAt: 6, snapshot: { hostname: 'h2' } }, 'replaced')
    await s.saveSnapshots([{ endpointId: 'e1', edgeId: 'x', receivedAt: 7, reason: 'interval', snapshot: { hostname: 'replayed', takenAt: 90 } }])
    t.match(await s.getSnapshot('e1'), { snapshot: { hostname: 'h2' } }, 'an older one from the same agent (a replay) does not win')
    await s.saveSnapshots([{ endpointId: 'e1', edgeId: 'other-node', receivedAt: 8, reason: 'connect', snapshot: { hostname: 'n2', takenAt: 50 } }])
    t.match(await s.getSnapshot('e1'), { edgeId: 'other-node', snapshot: { hostname: 'n2' } }, 'another agent of the endpoint (a cluster) replaces it')
  })

  t.test(`${name}: a transaction is all or nothing, and others do not see it half done`, async t => {
    const s = await withEndpoint(t, open)
    await t.rejects(s.transaction(async tx => {
      await tx.createEndpoint(endpoint('e2'))
      throw new Error('changed my mind')
    }), /changed my mind/)
    t.equal(await s.getEndpoint('e2'), undefined, 'rolled back')
    const done = s.transaction(async tx => {
      await tx.createEndpoint(endpoint('e3'))
      await new Promise(resolve => setTimeout(resolve, 50))
      await tx.createEndpoint(endpoint('e4'))
    })
    const seen = (await s.listEndpoints()).map(e => e.id)
    await done
    t.ok(seen.includes('e3') === seen.includes('e4'), `a reader sees both or neither (${seen.join(',')})`)
    t.same((await s.listEndpoints()).map(e => e.id).sort(), ['e1', 'e3', 'e4'])
  })
}

t.test('postgres: concurrent writers from several connections: edge ids admitted up to maxAgents, a credential spent once, a result applied once', async t => {
  const url = await freshPgUrl()
  const stores = await Promise.all([1, 2, 3, 4].map(async () => await openPgStore({ url, logger: capturingLogger().logger, poolSize: 4 })))
  t.teardown(async () => { for (const s of stores) await s.close() })
  const [a] = stores
  await a.createEndpoint(endpoint('single'))
  await a.createEndpoint(endpoint('cluster', { maxAgents: 3 }))
  const edgeIds = Array.from({ length: 16 }, (_, i) => `edge-${i}`)
  const admittedSingle = await Promise.all(edgeIds.map(async (id, i) => await stores[i % 4].admitEdgeId('single', id, i)))
  t.equal(admittedSingle.filter(Boolean).length, 1, 'one edge id wins a single endpoint')
  const admittedCluster = await Promise.all(edgeIds.map(async (id, i) => await stores[i % 4].admitEdgeId('cluster', id, i)))
  t.equal(admittedCluster.filter(Boolean).length, 3, 'a cluster takes exactly maxAgents')
  t.equal((await a.listEndpointAgents(['cluster'])).length, 3)

  const spent = await Promise.all(Array.from({ length: 16 }, async (_, i) => await stores[i % 4].spendCredential('tunnel-1', 1000 + i)))
  t.equal(spent.filter(Boolean).length, 1, 'a one-time credential is spent once')

  await a.createJob({ id: 'j', artifact: 'a', sha256: 'c'.repeat(64), size: 1, path: 'a', run: null, createdAt: 1, deadline: 1e13 }, ['single'])
  const attempts = await Promise.all(stores.map(async s => await s.nextAttempt('j', 'single', 'r', 2)))
  t.same([...attempts].sort(), [1, 2, 3, 4], 'concurrent dispatches get distinct attempts')
  const applied = await Promise.all(Array.from({ length: 12 }, async (_, i) => await stores[i % 4].updateJobTarget('j', 'single', { state: i % 2 === 0 ? 'succeeded' : 'failed' }, 4)))
  t.equal(applied.filter(Boolean).length, 1, 'a result is applied once per (job, endpoint, attempt)')

  await Promise.all(Array.from({ length: 12 }, async (_, i) => await stores[i % 4].putArtifact({ name: 'same', sha256: String(i % 10).repeat(64), size: i, createdAt: i })))
  t.equal((await a.listArtifacts()).filter(x => x.name === 'same').length, 1, 'uploads under one name leave one record')
})

t.test('postgres: a database of schema 1 (the first PostgreSQL store) is migrated at start and keeps its data', async t => {
  const url = await freshPgUrl()
  const first = await openPgStore({ url, logger: capturingLogger().logger })
  await first.createEndpoint(endpoint('kept'))
  await first.saveSnapshots([{ endpointId: 'kept', edgeId: 'x', receivedAt: 1, reason: 'connect', snapshot: { takenAt: 5 } }])
  await first.close()
  const raw = await openPgStoreRaw(url)
  await raw.query('ALTER TABLE snapshots DROP COLUMN taken_at')
  await raw.query('UPDATE meta SET value = \'1\' WHERE key = \'schemaVersion\'')
  await raw.end()
  const { logger, lines } = capturingLogger('info')
  const after = await openPgStore({ url, logger })
  t.teardown(() => after.close())
  t.ok(lines.some(l => l.includes('database schema migrated') && l.includes(`"to":${PG_SCHEMA_VERSION}`)), 'migrated from 1')
  t.equal(await after.getMeta('schemaVersion'), String(PG_SCHEMA_VERSION))
  t.match(await after.getSnapshot('kept'), { edgeId: 'x' }, 'the data is kept')
  await after.saveSnapshots([{ endpointId: 'kept', edgeId: 'x', receivedAt: 2, reason: 'interval', snapshot: { takenAt: 6 } }])
  t.match(await after.getSnapshot('kept'), { reason: 'interval' }, 'the new column works')
})

t.test('postgres: a database from before unique endpoint names keeps every endpoint: duplicates get their id appended', async t => {
  const url = await freshPgUrl()
  const first = await openPgStore({ url, logger: capturingLogger().logger })
  await first.close()
  const raw = await openPgStoreRaw(url)
  await raw.query('DROP INDEX endpoints_name; DROP TABLE api_tokens; DROP TABLE audit')
  await raw.query('UPDATE meta SET value = \'5\' WHERE key = \'schemaVersion\'')
  await raw.end()
  const before = await openPgStoreRaw(url)
  for (const [id, at] of [['e1', 1], ['e2', 2], ['e3', 3]] as const) {
    await before.query('INSERT INTO endpoints (id, name, auth_key, tunnel_key, created_at) VALUES ($1, $2, $3, $3, $4)', [id, id === 'e3' ? 'other' : 'db', Buffer.alloc(32), at])
  }
  await before.end()
  const after = await openPgStore({ url, logger: capturingLogger().logger })
  t.teardown(() => after.close())
  t.same([(await after.getEndpoint('e1'))?.name, (await after.getEndpoint('e2'))?.name, (await after.getEndpoint('e3'))?.name], ['db', 'db (e2)', 'other'], 'the oldest keeps its name')
  await t.rejects(after.createEndpoint(endpoint('e4', { name: 'db' })), { code: '23505' }, 'names are unique from now on')
})

t.test('postgres: servers starting together migrate once; a database from a newer schema is refused', async t => {
  const url = await freshPgUrl()
  const logs = [capturingLogger('info'), capturingLogger('info'), capturingLogger('info')]
  const stores = await Promise.all(logs.map(async l => await openPgStore({ url, logger: l.logger })))
  for (const s of stores) await s.close()
  t.equal(logs.filter(l => l.lines.some(line => line.includes('database schema migrated'))).length, 1, 'one of them migrated')
  const raw = await openPgStoreRaw(url)
  await raw.query(`UPDATE meta SET value = '${PG_SCHEMA_VERSION + 1}' WHERE key = 'schemaVersion'`)
  await raw.end()
  await t.rejects(openPgStore({ url, logger: capturingLogger().logger }), { code: 'RG_ERR_CONFIG', message: /newer than this server knows/ })
})

t.test('postgres: an unreachable database is tried for the retry time, then a coded error naming the URL without its password', async t => {
  const { logger, lines } = capturingLogger('info')
  const started = Date.now()
  const err = await openPgStore({ url: 'postgres://relaygate:s3cret-pw@127.0.0.1:1/relaygate', logger, connectRetryMs: 1500 }).then(() => null, (e: unknown) => e as Error & { code: string })
  t.match(err, { code: 'RG_ERR_STORE_UNAVAILABLE', message: /cannot reach the database at postgres:\/\/relaygate:\*\*\*@127\.0\.0\.1:1\/relaygate/ })
  t.ok(Date.now() - started >= 1400, 'it kept trying')
  t.ok(lines.some(l => l.includes('trying again')), 'each try is logged')
  t.notOk(lines.some(l => l.includes('s3cret-pw')) || err?.message.includes('s3cret-pw'), 'the password is never written')
})

t.test('sqlite: a data dir made by the schema before job deadlines is migrated: old jobs get the default deadline from their creation', async t => {
  const file = join(tempDir(t), 'relaygate.db')
  const before = await openSqliteStore(file)
  await before.createEndpoint(endpoint('e1'))
  await before.createJob({ id: 'j1', artifact: 'a', sha256: 'a'.repeat(64), size: 1, path: 'a', run: null, createdAt: 5000, deadline: 1 }, ['e1'])
  await before.close()
  const raw = new Database(file)
  raw.exec('DROP INDEX jobs_deadline; ALTER TABLE jobs DROP COLUMN deadline')
  raw.close()
  const after = await openSqliteStore(file)
  t.teardown(() => after.close())
  t.equal((await after.getJob('j1'))?.deadline, 5000 + DEFAULT_JOB_DEADLINE_MS)
})

t.test('sqlite: a data dir from before unique endpoint names keeps every endpoint: duplicates get their id appended', async t => {
  const file = join(tempDir(t), 'relaygate.db')
  const before = await openSqliteStore(file)
  await before.close()
  const raw = new Database(file)
  raw.exec('DROP INDEX endpoints_name; DROP TABLE api_tokens; DROP TABLE audit; UPDATE meta SET value = \'7\' WHERE key = \'schemaVersion\'')
  const insert = raw.prepare('INSERT INTO endpoints (id, name, auth_key, tunnel_key, created_at) VALUES (?, ?, ?, ?, ?)')
  for (const [id, at] of [['e1', 1], ['e2', 2], ['e3', 3]] as const) insert.run(id, id === 'e3' ? 'other' : 'db', Buffer.alloc(32), Buffer.alloc(32), at)
  raw.close()
  const after = await openSqliteStore(file)
  t.teardown(() => after.close())
  t.same([(await after.getEndpoint('e1'))?.name, (await after.getEndpoint('e2'))?.name, (await after.getEndpoint('e3'))?.name], ['db', 'db (e2)', 'other'], 'the oldest keeps its name')
  await t.rejects(after.createEndpoint(endpoint('e4', { name: 'db' })), { code: 'SQLITE_CONSTRAINT_UNIQUE' }, 'names are unique from now on')
  t.same(await after.access.listTokens(), [], 'the token table is back')
})

t.test('sqlite: a data dir of schema 3 (the store before spent credentials) opens, keeps its data and gains the table', async t => {
  const file = join(tempDir(t), 'relaygate.db')
  const before = await openSqliteStore(file)
  await before.createEndpoint(endpoint('e1', { name: 'kept' }))
  await before.close()
  const raw = new Database(file)
  raw.exec('DROP TABLE spent_credentials; ALTER TABLE snapshots DROP COLUMN taken_at; UPDATE meta SET value = \'3\' WHERE key = \'schemaVersion\'')
  raw.close()
  const after = await openSqliteStore(file)
  t.teardown(() => after.close())
  t.equal((await after.getEndpoint('e1'))?.name, 'kept')
  t.equal(await after.getMeta('schemaVersion'), String(SQLITE_SCHEMA_VERSION))
  t.ok(await after.spendCredential('t1', 1))
  t.notOk(await after.spendCredential('t1', 2))
})
