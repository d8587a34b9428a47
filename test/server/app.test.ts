import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { inject } from 'light-my-request'
import { pino } from 'pino'
import { createServerApp } from '../../server/server.js'
import { tempDir } from '../helpers/cluster.js'

/**
 * The server's request handler built without listening (createServerApp):
 * API behaviour driven in-process, no port, no socket.
 */
t.test('the API answers through the bare request handler: auth, validation, create and list', async t => {
  const app = await createServerApp({ dataDir: join(tempDir(t), 'server') }, pino({ level: 'silent' }))
  t.teardown(() => app.life.close(false))
  const token = readFileSync(app.adminTokenFile, 'utf8').trim()
  const auth = { authorization: `Bearer ${token}` }

  const health = await inject(app.handleRequest, { method: 'GET', url: '/healthz' })
  t.equal(health.statusCode, 200)
  t.match(health.json(), { ok: true })

  const anonymous = await inject(app.handleRequest, { method: 'GET', url: '/api/endpoints' })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().error.code, 'RG_ERR_UNAUTHORIZED')
  const unknownRoute = await inject(app.handleRequest, { method: 'GET', url: '/api/nope' })
  t.equal(unknownRoute.statusCode, 401, 'without the token, not even a 404 tells which routes exist')

  const badBody = await inject(app.handleRequest, { method: 'POST', url: '/api/endpoints', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"name": 7}' })
  t.equal(badBody.statusCode, 400)
  t.equal(badBody.json().error.code, 'RG_ERR_BAD_REQUEST')

  const badSetting = await inject(app.handleRequest, { method: 'PATCH', url: '/api/settings', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"checkinIntervalSeconds": 301}' })
  t.equal(badSetting.statusCode, 400, 'a setting out of the range relays accept is refused')
  t.match(badSetting.json().error.message, /from 1 to 300/)

  const created = await inject(app.handleRequest, { method: 'POST', url: '/api/endpoints', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"name":"db-01"}' })
  t.equal(created.statusCode, 201)
  const ep = created.json()
  t.match(ep, { name: 'db-01', status: 'offline', tunnel: { state: 'closed' }, agents: [], refusedEdgeIds: [] })
  t.match(ep.joinToken, /^rg1\./)

  const listed = await inject(app.handleRequest, { method: 'GET', url: '/api/endpoints', headers: auth })
  t.equal(listed.headers['x-total-count'], '1')
  t.same(listed.json().map((e: { id: string }) => e.id), [ep.id])

  const wrongMethod = await inject(app.handleRequest, { method: 'PUT', url: '/api/endpoints', headers: auth })
  t.equal(wrongMethod.statusCode, 405)
  t.equal(wrongMethod.json().error.code, 'RG_ERR_METHOD_NOT_ALLOWED')
})

t.test('close steps run once, in reverse order of building: the store closes last', async t => {
  const app = await createServerApp({ dataDir: join(tempDir(t), 'server') }, pino({ level: 'silent' }))
  const closing = app.life.close(true)
  t.equal(app.life.close(false), closing, 'a second close gets the same promise')
  await closing
  await t.rejects(app.store.listEndpoints(), 'the store is closed')
})

t.test('security events are kept in the store, one counted row per relay, endpoint, edge id, code and kind; they survive a restart', async t => {
  const dataDir = join(tempDir(t), 'server')
  const first = await createServerApp({ dataDir }, pino({ level: 'silent' }))
  const e = { code: 'RG_ERR_REPORT_FORGED', relayId: 'rone', endpointId: 'eone', edgeId: 'edge-1', kind: 'job-result', ref: 'j1', message: 'forged' }
  for (let i = 0; i < 500; i++) await first.security.record({ ...e, ref: `j${i}` })
  await first.security.record({ ...e, kind: 'snapshot', ref: '' })
  await first.security.record({ ...e, relayId: 'rtwo' })
  t.equal(await first.security.countFor('rone'), 501)
  t.equal((await first.security.list(10, { relayId: 'rone' })).length, 2, 'a flood of one kind is one row')
  await first.life.close(true)
  const again = await createServerApp({ dataDir }, pino({ level: 'silent' }))
  t.teardown(() => again.life.close(false))
  const token = readFileSync(again.adminTokenFile, 'utf8').trim()
  const res = await inject(again.handleRequest, { method: 'GET', url: '/api/security-events?relay=rone', headers: { authorization: `Bearer ${token}` } })
  const rows = res.json() as Array<{ kind: string, count: number, ref: string }>
  t.same(rows.map(r => [r.kind, r.count]).sort(), [['job-result', 500], ['snapshot', 1]], 'after a restart')
  t.equal(rows.find(r => r.kind === 'job-result')?.ref, 'j499', 'with the latest ref')
  const bad = await inject(again.handleRequest, { method: 'GET', url: '/api/security-events?limit=0', headers: { authorization: `Bearer ${token}` } })
  t.equal(bad.statusCode, 400)
})
