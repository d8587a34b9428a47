import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startServer, startSite, startAgent, startTarget, eventually, tempDir, testStore, capturingLogger, Api } from '../helpers/cluster.js'
import { buildServer } from '../../server/server.js'

/** Tokens of each role, made by the first-start admin token. */
async function teamOf (api: Api): Promise<{ viewer: Api, operator: Api, admin2: Api, created: Record<string, any> }> {
  const created: Record<string, any> = {}
  for (const [name, role] of [['dash', 'viewer'], ['ops', 'operator'], ['boss', 'admin']] as const) {
    const res = await api.request('POST', '/api/tokens', { name, role })
    if (res.status !== 201) throw new Error(JSON.stringify(res))
    created[role] = res.body
  }
  return { viewer: new Api(api.baseUrl, created.viewer.token), operator: new Api(api.baseUrl, created.operator.token), admin2: new Api(api.baseUrl, created.admin.token), created }
}

t.test('roles: viewers read, operators run the fleet, admins manage tokens, relays and settings; each refusal is 403 with a code', async t => {
  const { api } = await startServer(t)
  const { viewer, operator, created } = await teamOf(api)
  t.match(created.operator, { id: /^t/, name: 'ops', role: 'operator', token: /^rgt_.{40,}/ }, 'the token is in the answer')

  const listed = await api.ok('GET', '/api/tokens')
  t.same(listed.map((k: any) => [k.name, k.role, k.builtin]), [['admin', 'admin', true], ['dash', 'viewer', false], ['ops', 'operator', false], ['boss', 'admin', false]], 'the first-start admin token is one of them')
  t.notOk(JSON.stringify(listed).includes(created.operator.token), 'the list never shows a token')
  t.notOk(JSON.stringify(listed).includes('Hash'), 'nor its hash')
  t.equal(listed[2].createdBy, 'admin', 'who created it')

  const forbidden = async (who: Api, method: string, path: string, body?: unknown): Promise<void> => {
    const res = await who.request(method, path, body)
    t.equal(res.status, 403, `${method} ${path} is refused`)
    t.equal(res.body.error.code, 'RG_ERR_FORBIDDEN')
  }
  // viewer: reads everything but tokens and the audit log; changes nothing; no tunnels.
  for (const path of ['/api/endpoints', '/api/relays', '/api/settings', '/api/jobs', '/api/artifacts', '/api/updates', '/api/openapi.json']) {
    t.equal((await viewer.request('GET', path)).status, 200, `viewer reads ${path}`)
  }
  await forbidden(viewer, 'GET', '/api/tokens')
  await forbidden(viewer, 'GET', '/api/audit')
  await forbidden(viewer, 'POST', '/api/endpoints', { name: 'nope' })
  const ep = await operator.ok('POST', '/api/endpoints', { name: 'box-1' })
  await forbidden(viewer, 'POST', `/api/endpoints/${ep.id}/tunnel`)
  await forbidden(viewer, 'GET', `/api/endpoints/${ep.id}/proxy/x`)
  await forbidden(viewer, 'DELETE', `/api/endpoints/${ep.id}`)
  const refused = await viewer.request('POST', '/api/jobs', { artifact: 'a', endpoints: [ep.id] })
  t.match(refused.body.error.message, /token "dash" has role viewer; POST \/api\/jobs needs operator/, 'the message names the token, its role and the role needed')

  // operator: endpoints, jobs, artifacts, tunnels; not tokens, relays or settings.
  t.equal((await operator.request('PATCH', `/api/endpoints/${ep.id}`, { tags: ['site-a'] })).status, 200)
  t.equal((await operator.request('POST', `/api/endpoints/${ep.id}/tunnel`)).status, 202, 'operator raises a tunnel flag')
  t.equal((await operator.request('DELETE', `/api/endpoints/${ep.id}/tunnel`)).status, 204)
  await forbidden(operator, 'POST', '/api/relays', { name: 'r' })
  await forbidden(operator, 'PATCH', '/api/settings', { checkinIntervalSeconds: 9 })
  await forbidden(operator, 'POST', '/api/tokens', { name: 'x', role: 'admin' })
  await forbidden(operator, 'DELETE', `/api/tokens/${created.viewer.id}`)

  // A viewer's dashboard events stream is allowed.
  const events = await fetch(`${api.baseUrl}/api/events`, { headers: { authorization: `Bearer ${viewer.token}` } })
  t.equal(events.status, 200, 'viewer follows /api/events')
  await events.body?.cancel()

  // Bad bodies and names.
  const dup = await api.request('POST', '/api/tokens', { name: 'ops', role: 'viewer' })
  t.equal(dup.status, 409)
  t.equal(dup.body.error.code, 'RG_ERR_NAME_TAKEN')
  const badRole = await api.request('POST', '/api/tokens', { name: 'x', role: 'root' })
  t.equal(badRole.status, 400)
  t.match(badRole.body.error.message, /field "role" must be one of "viewer", "operator", "admin"/)
  t.equal((await api.request('POST', '/api/tokens', { name: 'has space', role: 'viewer' })).status, 400)

  // Revoked: refused from the next request on.
  t.equal((await api.request('DELETE', `/api/tokens/${created.operator.id}`)).status, 204)
  const after = await operator.request('GET', '/api/endpoints')
  t.equal(after.status, 401)
  t.equal(after.body.error.code, 'RG_ERR_UNAUTHORIZED')
  t.equal((await api.request('DELETE', `/api/tokens/${created.operator.id}`)).status, 404, 'revoked once')
  const again = await api.request('POST', '/api/tokens', { name: 'ops', role: 'operator' })
  t.equal(again.status, 201, 'the name of a revoked token can be used again')
})

t.test('the first-start admin token: the last admin cannot be revoked; revoked, the server writes a new one at restart', async t => {
  const { api, dataDir, server } = await startServer(t)
  const builtin = (await api.ok('GET', '/api/tokens'))[0]
  const last = await api.request('DELETE', `/api/tokens/${builtin.id}`)
  t.equal(last.status, 409)
  t.equal(last.body.error.code, 'RG_ERR_LAST_ADMIN')
  const boss = new Api(api.baseUrl, (await api.ok('POST', '/api/tokens', { name: 'boss', role: 'admin' })).token)
  t.equal((await boss.request('DELETE', `/api/tokens/${builtin.id}`)).status, 204, 'with another admin it can go')
  t.equal((await api.request('GET', '/api/relays')).status, 401, 'the old admin token is refused at once')
  await server.close()

  const restarted = await buildServer({ dataDir, host: '127.0.0.1', httpPort: 0, httpsPort: -1, ...await testStore(dataDir) }, capturingLogger('warn').logger)
  t.teardown(() => restarted.destroy())
  const fresh = readFileSync(restarted.adminTokenFile, 'utf8').trim()
  t.not(fresh, api.token, 'a new token in the file')
  const admin = new Api(restarted.httpUrl, fresh)
  t.equal((await admin.request('GET', '/api/tokens')).status, 200, 'and it works')
  t.equal((await new Api(restarted.httpUrl, api.token).request('GET', '/api/relays')).status, 401, 'the revoked one stays refused')
  const names = (await admin.ok('GET', '/api/tokens')).filter((k: any) => k.revokedAt === null).map((k: any) => k.name)
  t.same(names.sort(), ['admin', 'boss'])
})

t.test('audit log: every change and every refusal, who, what, target, source and result; filters and pages; no secrets; one log line each', async t => {
  const { logger, lines } = capturingLogger('info')
  const dataDir = join(tempDir(t), 'server')
  const server = await buildServer({ dataDir, host: '127.0.0.1', httpPort: 0, httpsPort: -1, ...await testStore(dataDir) }, logger)
  t.teardown(() => server.destroy())
  const api = new Api(server.httpUrl, readFileSync(server.adminTokenFile, 'utf8').trim())
  const { viewer, operator, created } = await teamOf(api)
  const ep = await operator.ok('POST', '/api/endpoints', { name: 'db-1', tags: ['site-a'] })
  await operator.ok('PATCH', `/api/endpoints/${ep.id}`, { name: 'db-01' })
  await viewer.request('DELETE', `/api/endpoints/${ep.id}`)
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 7 })
  const relay = await api.ok('POST', '/api/relays', { name: 'site-a' })
  await operator.request('POST', '/api/endpoints', { name: 'db-01' })

  const all = await api.ok('GET', '/api/audit')
  const summary = all.map((e: any) => `${e.token} ${e.action} ${e.result}`)
  t.same(summary.slice(0, 8), [
    'ops endpoint.create RG_ERR_NAME_TAKEN',
    'admin relay.create ok',
    'admin settings.change ok',
    'dash endpoint.delete RG_ERR_FORBIDDEN',
    'ops endpoint.change ok',
    'ops endpoint.create ok',
    'admin token.create ok',
    'admin token.create ok'
  ], 'newest first, refusals and failures too')
  const create = all.find((e: any) => e.action === 'endpoint.create' && e.result === 'ok')
  t.equal(create.target, ep.id)
  t.same(create.detail, { name: 'db-1', tags: ['site-a'] })
  t.match(create.source, /127\.0\.0\.1/, 'the caller\'s address')
  t.ok(Date.parse(create.at) > Date.now() - 60_000, 'when')
  t.same(all.find((e: any) => e.action === 'settings.change').detail, { checkinIntervalSeconds: 7 })
  const text = JSON.stringify(all)
  for (const secret of [created.viewer.token, created.operator.token, created.admin.token, relay.token, ep.joinToken, api.token]) t.notOk(text.includes(secret), 'no secret in the audit log')

  t.same((await api.ok('GET', '/api/audit?action=token')).map((e: any) => e.detail.name), ['boss', 'ops', 'dash'], 'by action group')
  t.same((await api.ok('GET', `/api/audit?target=${ep.id}`)).map((e: any) => e.action), ['endpoint.delete', 'endpoint.change', 'endpoint.create'], 'by target')
  t.equal((await api.ok('GET', '/api/audit?token=dash')).length, 1, 'by token')
  const page1 = await api.ok('GET', '/api/audit?limit=3')
  const page2 = await api.ok('GET', `/api/audit?limit=3&before=${page1[2].id}`)
  t.same([...page1, ...page2].map((e: any) => e.id), all.slice(0, 6).map((e: any) => e.id), 'pages with before=<id>')
  t.equal((await api.ok('GET', `/api/audit?before=${encodeURIComponent('2000-01-01T00:00:00Z')}`)).length, 0, 'before a time')
  const badLimit = await api.request('GET', '/api/audit?limit=abc')
  t.equal(badLimit.status, 400)
  t.match(badLimit.body.error.message, /query parameter limit="abc" is not valid: a whole number from 1 to 1000/, 'a bad query parameter is named, with what it must be')
  t.equal((await api.request('GET', '/api/audit?limit=0')).status, 400)
  t.equal((await api.request('GET', '/api/audit?before=yesterday')).status, 400)

  const logged = lines.map(l => JSON.parse(l)).filter(l => l.audit !== undefined)
  t.ok(logged.length >= all.length, 'one pino line per entry')
  t.match(logged.find(l => l.audit.action === 'relay.create').audit, { token: 'admin', action: 'relay.create', target: relay.id, result: 'ok' })
  const everything = lines.join('\n')
  for (const secret of [created.operator.token, relay.token, ep.joinToken]) t.notOk(everything.includes(secret), 'no secret in the log')
})

t.test('a script hammering a forbidden route: the repeats of a refusal are counted in one more entry, not stored one by one', async t => {
  const { api } = await startServer(t)
  const { viewer } = await teamOf(api)
  const answers = await Promise.all(Array.from({ length: 40 }, async () => (await viewer.request('POST', '/api/relays', { name: 'x' })).status))
  t.same([...new Set(answers)], [403], 'each one is refused')
  const entries = await api.ok('GET', '/api/audit?action=relay.create&token=dash')
  t.equal(entries.length, 2, 'the first refusal, and one entry for its repeats')
  t.match(entries, [{ result: 'RG_ERR_FORBIDDEN', detail: { repeated: 39 } }, { result: 'RG_ERR_FORBIDDEN', detail: null }])
  await api.ok('POST', '/api/endpoints', { name: 'one' })
  await api.ok('POST', '/api/endpoints', { name: 'two' })
  t.equal((await api.ok('GET', '/api/audit?action=endpoint.create')).length, 2, 'changes that succeed are one entry each')
})

t.test('audit retention: a setting (PATCH /api/settings auditRetentionDays); older entries are deleted when it changes, at start and hourly', async t => {
  const { server, dataDir, api } = await startServer(t)
  t.equal((await api.ok('GET', '/api/settings')).auditRetentionDays, 365, 'a year by default')
  const day = 86_400_000
  await server.store.access.addAudit([
    { at: Date.now() - 45 * day, token: 'admin', action: 'endpoint.create', target: 'e-old', source: null, result: 'ok', detail: null },
    { at: Date.now() - 10 * day, token: 'admin', action: 'endpoint.create', target: 'e-recent', source: null, result: 'ok', detail: null }
  ])
  t.same((await api.ok('GET', '/api/audit?action=endpoint')).map((e: any) => e.target).sort(), ['e-old', 'e-recent'])
  const set = await api.ok('PATCH', '/api/settings', { auditRetentionDays: 30 })
  t.equal(set.auditRetentionDays, 30)
  t.same((await api.ok('GET', '/api/audit?action=endpoint')).map((e: any) => e.target), ['e-recent'], 'older than 30 days: deleted at once')
  t.same((await api.ok('GET', '/api/audit?action=settings')).map((e: any) => e.detail), [{ auditRetentionDays: 30 }], 'the change itself is audited')
  const bad = await api.request('PATCH', '/api/settings', { auditRetentionDays: 0 })
  t.equal(bad.status, 400)
  t.match(bad.body.error.message, /field "auditRetentionDays" must be a whole number from 1 to 36500/)
  await server.close()
  const again = await buildServer({ dataDir, host: '127.0.0.1', httpPort: 0, httpsPort: -1, ...await testStore(dataDir) }, capturingLogger('warn').logger)
  t.teardown(() => again.destroy())
  t.equal((await new Api(again.httpUrl, api.token).ok('GET', '/api/settings')).auditRetentionDays, 30, 'kept across a restart')
})

t.test('tunnel sessions are audited: who opened it, from where, its agent, and the bytes each way when it closes', async t => {
  const { api } = await startSite(t)
  const { operator } = await teamOf(api)
  const target = await startTarget(t, 'svc')
  const ep = await operator.ok('POST', '/api/endpoints', { name: 'web-1', tunnelTarget: target.url })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const body = JSON.stringify({ big: 'x'.repeat(200_000) })
  const first = await operator.request('POST', `/api/endpoints/${ep.id}/proxy/echo`, body)
  t.equal(first.status, 200)
  await operator.ok('DELETE', `/api/endpoints/${ep.id}/tunnel`)
  const sessions = await eventually(async () => {
    const entries = await api.ok('GET', `/api/audit?action=tunnel&target=${ep.id}`)
    return entries.some((e: any) => e.action === 'tunnel.close') ? entries : null
  })
  const close = sessions.find((e: any) => e.action === 'tunnel.close')
  const open = sessions.find((e: any) => e.action === 'tunnel.open')
  t.equal(open.token, 'ops', 'opened by the operator\'s request')
  t.match(open.source, /127\.0\.0\.1/)
  t.equal(open.detail.tunnelId, close.detail.tunnelId, 'one session')
  t.equal(close.token, 'ops')
  t.ok(close.detail.bytesToAgent >= body.length, `bytes to the agent (${close.detail.bytesToAgent})`)
  t.ok(close.detail.bytesFromAgent > 0, `bytes from the agent (${close.detail.bytesFromAgent})`)
  t.equal(close.detail.reason, 'closed by the admin')
  t.equal(typeof close.detail.seconds, 'number')
  t.ok(sessions.some((e: any) => e.action === 'tunnel.stop' && e.token === 'ops'), 'and the request that closed it')
})

t.test('tunnels aimed at a tag: POST /api/tunnels opens those of the tagged endpoints only', async t => {
  const { api } = await startSite(t)
  const target = await startTarget(t, 'svc')
  const tagged = []
  for (const name of ['a-1', 'a-2']) tagged.push(await api.ok('POST', '/api/endpoints', { name, tunnelTarget: target.url, tags: ['site-a'] }))
  const other = await api.ok('POST', '/api/endpoints', { name: 'b-1', tunnelTarget: target.url, tags: ['site-b'] })
  for (const ep of [...tagged, other]) await startAgent(t, ep.joinToken).whenOnline()
  const opened = await api.ok('POST', '/api/tunnels', { tags: ['site-a'], waitSeconds: 20 })
  t.same(opened.map((o: any) => o.name).sort(), ['a-1', 'a-2'])
  t.ok(opened.every((o: any) => o.tunnel.state === 'open'), 'open when it answers')
  t.equal((await api.ok('GET', `/api/endpoints/${other.id}`)).tunnel.state, 'closed', 'the untagged one stays closed')
  const none = await api.request('POST', '/api/tunnels', { tags: ['site-z'] })
  t.equal(none.status, 404)
  t.equal((await api.request('POST', '/api/tunnels', {})).status, 400)
  t.equal((await api.request('POST', '/api/tunnels', { tags: ['bad tag'] })).status, 400)
})

t.test('endpoint names are unique: create and rename refuse a taken name with 409 RG_ERR_NAME_TAKEN', async t => {
  const { api } = await startServer(t)
  const a = await api.ok('POST', '/api/endpoints', { name: 'db-1' })
  const b = await api.ok('POST', '/api/endpoints', { name: 'db-2' })
  const dup = await api.request('POST', '/api/endpoints', { name: 'db-1' })
  t.equal(dup.status, 409)
  t.equal(dup.body.error.code, 'RG_ERR_NAME_TAKEN')
  t.match(dup.body.error.message, /"db-1"/)
  const rename = await api.request('PATCH', `/api/endpoints/${b.id}`, { name: 'db-1' })
  t.equal(rename.status, 409)
  t.equal(rename.body.error.code, 'RG_ERR_NAME_TAKEN')
  t.equal((await api.request('PATCH', `/api/endpoints/${a.id}`, { name: 'db-1' })).status, 200, 'its own name is no conflict')
  t.equal((await api.ok('GET', `/api/endpoints/${b.id}`)).name, 'db-2', 'unchanged')
})

t.test('GET /api/openapi.json describes every route from the schemas that validate the bodies', async t => {
  const { api } = await startServer(t)
  const doc = await api.ok('GET', '/api/openapi.json')
  t.equal(doc.openapi, '3.1.0')
  for (const [method, path] of [['post', '/api/endpoints'], ['patch', '/api/endpoints/{id}'], ['post', '/api/tokens'], ['get', '/api/audit'], ['post', '/api/tunnels'], ['put', '/api/artifacts/{name}'], ['post', '/api/updates/{id}/abort']]) {
    t.ok(doc.paths[path]?.[method], `${method} ${path} is described`)
  }
  const create = doc.paths['/api/endpoints'].post
  t.equal(create['x-relaygate-role'], 'operator')
  t.equal(create['x-relaygate-audit'], 'endpoint.create')
  const schema = create.requestBody.content['application/json'].schema
  t.same(Object.keys(schema.properties).sort(), ['maxAgents', 'name', 'tags', 'tunnelTarget'])
  t.same(schema.required, ['name'])
  t.equal(schema.additionalProperties, false)
  // The documented limit is the enforced one.
  const max = schema.properties.maxAgents.maximum
  const over = await api.request('POST', '/api/endpoints', { name: 'x', maxAgents: max + 1 })
  t.equal(over.status, 400)
  t.match(over.body.error.message, new RegExp(`field "maxAgents" must be a whole number from 1 to ${String(max)}`))
  t.equal((await api.request('POST', '/api/endpoints', { name: 'x', maxAgents: max })).status, 201)
  const unknown = await api.request('POST', '/api/endpoints', { name: 'y', colour: 'red' })
  t.match(unknown.body.error.message, /unknown field "colour" \(allowed: name, tunnelTarget, maxAgents, tags\)/)
  t.same(doc.paths['/api/audit'].get.parameters.map((p: any) => p.name), ['action', 'token', 'target', 'limit', 'before'])
  t.equal(doc.paths['/api/tokens'].get['x-relaygate-role'], 'admin')
  t.equal((await new Api(api.baseUrl, 'x'.repeat(20)).request('GET', '/api/openapi.json')).status, 401, 'behind a token like the rest of /api')
})
