import t from 'tap'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../server/sqlite-store.js'
import { DEFAULT_JOB_DEADLINE_MS } from '../../server/store.js'
import { tempDir } from '../helpers/cluster.js'

/** The SQLite store's own rules, on a real database file. */
function store (t: Parameters<typeof tempDir>[0]): SqliteStore {
  const s = new SqliteStore(join(tempDir(t), 'relaygate.db'))
  t.teardown(() => s.close())
  s.createEndpoint({ id: 'e1', name: 'e1', tunnelTarget: null, authKey: Buffer.alloc(32), tunnelKey: Buffer.alloc(32), edgeId: null, createdAt: 1, lastSeen: null, relayId: null, maxAgents: 1 })
  return s
}

t.test('refusals: a flood of one code from many edge ids is aggregated and cannot push out another code\'s evidence', async t => {
  const s = store(t)
  const clone = randomUUID()
  s.recordRefusal('e1', clone, 'RG_ERR_EDGE_ID_MISMATCH', 1000)
  for (let i = 0; i < 500; i++) s.recordRefusal('e1', randomUUID(), 'RG_ERR_AUTH', 2000 + i)
  const rows = s.listRefusals('e1')
  const auth = rows.filter(r => r.code === 'RG_ERR_AUTH')
  t.equal(auth.length, 21, '20 edge ids, then one row for the rest')
  t.match(auth.find(r => r.edgeId === '*'), { count: 480, lastAt: 2499 })
  t.equal(auth.reduce((n, r) => n + r.count, 0), 500, 'every attempt counted')
  t.match(rows.find(r => r.code === 'RG_ERR_EDGE_ID_MISMATCH'), { edgeId: clone, count: 1 }, 'the clone\'s evidence stays')
  s.recordRefusal('e1', clone, 'RG_ERR_EDGE_ID_MISMATCH', 3000)
  t.match(s.listRefusals('e1').find(r => r.code === 'RG_ERR_EDGE_ID_MISMATCH'), { count: 2, firstAt: 1000, lastAt: 3000 })
})

t.test('jobs: overdue targets are those not finished whose deadline passed', async t => {
  const s = store(t)
  s.createJob({ id: 'j1', artifact: 'a', sha256: 'a'.repeat(64), size: 1, path: 'a', run: null, createdAt: 1, deadline: 100 }, ['e1'])
  s.createJob({ id: 'j2', artifact: 'a', sha256: 'a'.repeat(64), size: 1, path: 'a', run: null, createdAt: 1, deadline: 500 }, ['e1'])
  t.same(s.overdueTargets(99, 10).map(r => r.jobId), [])
  t.same(s.overdueTargets(100, 10).map(r => r.jobId), ['j1'])
  t.same(s.overdueTargets(1000, 10).map(r => r.jobId), ['j1', 'j2'])
  s.updateJobTarget('j1', 'e1', { state: 'succeeded' })
  t.same(s.overdueTargets(1000, 10).map(r => r.jobId), ['j2'], 'a finished target is not overdue')
  t.same(s.overdueTargets(1000, 1).length, 1, 'bounded')
})

t.test('a data dir from before job deadlines is migrated: old jobs get the default deadline from their creation', async t => {
  const file = join(tempDir(t), 'relaygate.db')
  const before = new SqliteStore(file)
  before.createEndpoint({ id: 'e1', name: 'e1', tunnelTarget: null, authKey: Buffer.alloc(32), tunnelKey: Buffer.alloc(32), edgeId: null, createdAt: 1, lastSeen: null, relayId: null, maxAgents: 1 })
  before.createJob({ id: 'j1', artifact: 'a', sha256: 'a'.repeat(64), size: 1, path: 'a', run: null, createdAt: 5000, deadline: 1 }, ['e1'])
  before.close()
  const raw = new Database(file)
  raw.exec('DROP INDEX jobs_deadline; ALTER TABLE jobs DROP COLUMN deadline')
  raw.close()
  const after = new SqliteStore(file)
  t.teardown(() => after.close())
  t.equal(after.getJob('j1')?.deadline, 5000 + DEFAULT_JOB_DEADLINE_MS)
})

t.test('endpoints: search and paging in SQL (name, id, any admitted edge id; LIKE wildcards are plain characters)', async t => {
  const s = store(t)
  const add = (id: string, name: string, createdAt: number): void => s.createEndpoint({ id, name, tunnelTarget: null, authKey: Buffer.alloc(32), tunnelKey: Buffer.alloc(32), edgeId: null, createdAt, lastSeen: null, relayId: null, maxAgents: 4 })
  add('e2', 'Web_50%', 2)
  add('e3', 'web-b', 3)
  add('e4', 'db', 4)
  s.admitEdgeId('e4', 'aaaa-EDGE-bbbb', 5)
  s.admitEdgeId('e4', 'cccc-second-dddd', 6)
  const names = (q: string, offset = 0, limit = 100): { total: number, names: string[] } => {
    const r = s.findEndpoints({ q, offset, limit })
    return { total: r.total, names: r.page.map(e => e.name) }
  }
  t.same(names(''), { total: 4, names: ['e1', 'Web_50%', 'web-b', 'db'] }, 'all, in creation order')
  t.same(names('WEB'), { total: 2, names: ['Web_50%', 'web-b'] }, 'case-insensitive')
  t.same(names('web', 1, 1), { total: 2, names: ['web-b'] }, 'one page, with the total')
  t.same(names('_'), { total: 1, names: ['Web_50%'] }, '_ is a plain character')
  t.same(names('%'), { total: 1, names: ['Web_50%'] }, '% is a plain character')
  t.same(names('edge'), { total: 1, names: ['db'] }, 'the first edge id')
  t.same(names('SECOND'), { total: 1, names: ['db'] }, 'another admitted edge id of a cluster')
  t.same(names('e3'), { total: 1, names: ['web-b'] }, 'the id')
  t.same(names('nothing'), { total: 0, names: [] })
})
