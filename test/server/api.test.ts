import t from 'tap'
import http from 'node:http'
import { statSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { startServer, startSite, startRelay, startAgent, eventually, tempDir, testLogger, testStore, Api } from '../helpers/cluster.js'
import { buildServer } from '../../server/server.js'
import { buildRelay } from '../../relay/relay.js'
import { RelaygateAgent } from '../../agent/agent.js'
import { decodeJoinToken } from '../../protocol/token.js'
import type { RelaygateError } from '../../protocol/errors.js'

/** Every admin route of the contract, with a path that exists or does not: without a valid token, all answer 401. */
const apiRoutes: Array<[string, string]> = [
  ['GET', '/api/relays'],
  ['POST', '/api/relays'],
  ['GET', '/api/relays/r_x'],
  ['DELETE', '/api/relays/r_x'],
  ['GET', '/api/endpoints'],
  ['POST', '/api/endpoints'],
  ['GET', '/api/endpoints/e_x'],
  ['DELETE', '/api/endpoints/e_x'],
  ['GET', '/api/endpoints/e_x/snapshot'],
  ['POST', '/api/endpoints/e_x/tunnel'],
  ['DELETE', '/api/endpoints/e_x/tunnel'],
  ['GET', '/api/endpoints/e_x/proxy/version'],
  ['GET', '/api/settings'],
  ['PATCH', '/api/settings'],
  ['PUT', '/api/artifacts/a.bin'],
  ['GET', '/api/artifacts'],
  ['POST', '/api/jobs'],
  ['GET', '/api/jobs/j_x'],
  ['GET', '/api/no-such-route']
]

/** A request with exact control of headers and body (fetch adds its own). */
function rawRequest (baseUrl: string, options: { method: string, path: string, headers?: Record<string, string>, body?: Buffer | string, chunked?: boolean }): Promise<{ status: number, body: any }> {
  return new Promise((resolve, reject) => {
    const url = new URL(options.path, baseUrl)
    const req = http.request(url, { method: options.method, headers: options.headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let body: unknown = text
        try { body = text === '' ? null : JSON.parse(text) } catch {}
        resolve({ status: res.statusCode ?? 0, body })
      })
      res.on('error', reject)
    })
    // The server may answer (413) and close before it read the whole body.
    req.on('error', reject)
    if (options.body === undefined) {
      req.end()
    } else if (options.chunked === true) {
      const data = Buffer.from(options.body)
      const step = 64 * 1024
      for (let i = 0; i < data.length; i += step) req.write(data.subarray(i, i + step))
      req.end()
    } else {
      req.end(options.body)
    }
  })
}

t.test('GET /healthz needs no token', async t => {
  const { server } = await startServer(t)
  const res = await fetch(`${server.httpUrl}/healthz`)
  t.equal(res.status, 200)
  const body = await res.json() as any
  t.equal(body.ok, true)
  t.type(body.version, 'string')
})

t.test('every /api route refuses a missing or wrong token with 401 RG_ERR_UNAUTHORIZED', async t => {
  const { server, api } = await startServer(t)
  const wrong: Array<Record<string, string>> = [
    {},
    { authorization: 'Bearer wrong-token-0123456789abcdef' },
    { authorization: `Bearer ${api.token}x` },
    { authorization: `Basic ${Buffer.from(`admin:${api.token}`).toString('base64')}` },
    { authorization: api.token },
    { authorization: 'Bearer' }
  ]
  for (const [method, path] of apiRoutes) {
    for (const headers of wrong) {
      const res = await rawRequest(server.httpUrl, { method, path, headers: { ...headers, 'content-type': 'application/json' }, body: method === 'GET' || method === 'DELETE' ? undefined : '{"name":"x"}' })
      t.equal(res.status, 401, `${method} ${path} with ${JSON.stringify(Object.keys(headers))}`)
      t.equal(res.body?.error?.code, 'RG_ERR_UNAUTHORIZED', `${method} ${path}`)
    }
  }
  // Nothing was created by the refused requests.
  t.same(await api.ok('GET', '/api/relays'), [])
  t.same(await api.ok('GET', '/api/endpoints'), [])
})

t.test('request bodies: bad JSON, wrong shapes, bad fields', async t => {
  const { api } = await startServer(t)
  for (const path of ['/api/relays', '/api/endpoints']) {
    for (const text of ['{"name":', 'not json', '{name: "x"}']) {
      const res = await api.request('POST', path, text)
      t.equal(res.status, 400, `${path} ${text}`)
      t.equal(res.body.error.code, 'RG_ERR_BAD_JSON', `${path} ${text}`)
    }
    for (const text of ['[]', '[{"name":"x"}]', 'null', '"box"', '42']) {
      const res = await api.request('POST', path, text)
      t.equal(res.status, 400, `${path} ${text}`)
      t.equal(res.body.error.code, 'RG_ERR_BAD_JSON', `${path} ${text}`)
    }
    for (const body of [{}, { name: '' }, { name: '   ' }, { name: 'x'.repeat(129) }, { name: 42 }, { name: ['a'] }, { name: null }]) {
      const res = await api.request('POST', path, body)
      t.equal(res.status, 400, `${path} ${JSON.stringify(body).slice(0, 40)}`)
      t.equal(res.body.error.code, 'RG_ERR_BAD_REQUEST', `${path} ${JSON.stringify(body).slice(0, 40)}`)
    }
    const unknown = await api.request('POST', path, { name: 'ok', color: 'blue' })
    t.equal(unknown.status, 400, `${path} unknown field`)
    t.equal(unknown.body.error.code, 'RG_ERR_BAD_REQUEST')
    const longest = await api.request('POST', path, { name: 'x'.repeat(128) })
    t.equal(longest.status, 201, `${path} a 128-character name is fine`)
  }
  const invalidJsonSettings = await api.request('PATCH', '/api/settings', '{"checkinIntervalSeconds":')
  t.equal(invalidJsonSettings.status, 400)
  t.equal(invalidJsonSettings.body.error.code, 'RG_ERR_BAD_JSON')
  const arraySettings = await api.request('PATCH', '/api/settings', '[]')
  t.equal(arraySettings.status, 400)
  t.equal(arraySettings.body.error.code, 'RG_ERR_BAD_JSON')
})

t.test('tunnelTarget is validated', async t => {
  const { api } = await startServer(t)
  for (const tunnelTarget of ['ftp://x', 'notaurl', 'unix:', 'unix:relative.sock', 'http://', '', 42, 'ssh://127.0.0.1:22']) {
    const res = await api.request('POST', '/api/endpoints', { name: `box ${String(tunnelTarget)}`, tunnelTarget })
    t.equal(res.status, 400, `rejects ${JSON.stringify(tunnelTarget)}`)
    t.equal(res.body.error.code, 'RG_ERR_BAD_REQUEST', `rejects ${JSON.stringify(tunnelTarget)}`)
  }
  for (const tunnelTarget of ['http://127.0.0.1:2375', 'https://127.0.0.1:9443', 'unix:/var/run/docker.sock', 'tcp://127.0.0.1:22']) {
    const res = await api.request('POST', '/api/endpoints', { name: `box ${tunnelTarget}`, tunnelTarget })
    t.equal(res.status, 201, `accepts ${tunnelTarget}`)
    t.equal(res.body.tunnelTarget, tunnelTarget)
    t.ok(res.body.command.includes(`--tunnel-target ${tunnelTarget}`), 'the command passes the target on')
  }
  t.equal((await api.ok('GET', '/api/endpoints')).length, 4, 'only the valid ones were created')
})

t.test('relays: create, list before and after the relay links', async t => {
  const { server, api } = await startServer(t)
  const res = await api.request('POST', '/api/relays', { name: 'site-a' })
  t.equal(res.status, 201)
  t.match(res.body, { id: String, name: 'site-a', token: String })
  t.ok(res.body.token.length >= 32, 'a long random token')
  const before = await api.ok('GET', '/api/relays')
  t.equal(before.length, 1)
  t.match(before[0], { id: res.body.id, name: 'site-a', connected: false, agents: 0 })
  t.notOk('token' in before[0], 'the token is shown once, at creation')
  t.notOk('tokenHash' in before[0], 'nor its hash')

  const relay = await startRelay(t, server.httpUrl, res.body.token)
  t.equal(relay.relayId, res.body.id)
  const after = await api.ok('GET', '/api/relays')
  t.equal(after.length, 1)
  t.equal(after[0].connected, true)
  t.match(after[0].fingerprint, /^[0-9a-f]{64}$/)
  t.equal(after[0].fingerprint, relay.fingerprint)
  t.equal(after[0].wsUrl, relay.wsUrl)
  t.equal(after[0].wssUrl, relay.wssUrl)
  t.match(after[0].wsUrl, /^ws:\/\/127\.0\.0\.1:\d+$/)
  t.match(after[0].wssUrl, /^wss:\/\/127\.0\.0\.1:\d+$/)
  const one = await api.ok('GET', `/api/relays/${res.body.id}`)
  t.equal(one.id, res.body.id)
  t.equal(one.connected, true)

  const missing = await api.request('GET', '/api/relays/r_nope')
  t.equal(missing.status, 404)
  t.equal(missing.body.error.code, 'RG_ERR_NOT_FOUND')
  const missingDelete = await api.request('DELETE', '/api/relays/r_nope')
  t.equal(missingDelete.status, 404)
  t.equal(missingDelete.body.error.code, 'RG_ERR_NOT_FOUND')

  // Revoking disconnects the relay.
  const revoke = await api.request('DELETE', `/api/relays/${res.body.id}`)
  t.equal(revoke.status, 204)
  t.equal(revoke.body, null, 'no body')
  await eventually(async () => (await api.ok('GET', `/api/relays/${res.body.id}`)).connected === false)
  t.equal((await api.ok('GET', `/api/relays/${res.body.id}`)).revoked, true)
})

t.test('an endpoint made before any relay linked comes with a warning that its join token names no relay', async t => {
  const { api } = await startServer(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'too-early' })
  t.same(decodeJoinToken(ep.joinToken).relays, [])
  t.match(ep.warning, /no relay has linked.*--relay/, 'and what to do about it')
})

t.test('a join token made as soon as a relay has linked names that relay, even when the store writes slowly', async t => {
  const { server, api } = await startServer(t)
  // A slow disk or a distant database: the relay record takes 300 ms to write.
  const updateRelay = server.store.updateRelay.bind(server.store)
  server.store.updateRelay = async (id, patch) => {
    await new Promise(resolve => setTimeout(resolve, 300))
    return await updateRelay(id, patch)
  }
  const created = await api.ok('POST', '/api/relays', { name: 'site-a' })
  const relay = await startRelay(t, server.httpUrl, created.token)
  await relay.whenLinked()
  const ep = await api.ok('POST', '/api/endpoints', { name: 'box-1' })
  t.notOk('warning' in ep, 'no "no relay" warning')
  t.same(decodeJoinToken(ep.joinToken).relays.map(r => r.url).sort(), [relay.wsUrl, relay.wssUrl].sort(), 'both of the relay\'s addresses')
})

t.test('endpoints: create, list, get, delete', async t => {
  const { api, relayId } = await startSite(t)
  const created = await api.request('POST', '/api/endpoints', { name: 'box-1' })
  t.equal(created.status, 201)
  const ep = created.body
  t.match(ep, { id: String, name: 'box-1', joinToken: String, command: String })
  t.match(ep.joinToken, /^rg1\./)
  t.ok(ep.command.includes(ep.joinToken), 'the command carries the join token')
  t.match(ep.command, /^relaygate agent /)

  const shape = { id: ep.id, name: 'box-1', edgeId: null, status: 'offline', relayId: null, lastSeen: null, tunnel: { state: 'closed' } }
  const list = await api.ok('GET', '/api/endpoints')
  t.equal(list.length, 1)
  t.match(list[0], shape)
  for (const key of ['id', 'name', 'edgeId', 'status', 'relayId', 'lastSeen', 'tunnel']) t.ok(key in list[0], `list item has ${key}`)
  t.notOk('joinToken' in list[0], 'the join token is shown once, at creation')
  const one = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.match(one, shape)
  t.ok('snapshot' in one, 'a single endpoint carries its snapshot summary')

  // Once an agent checks in, the same shape says online.
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const online = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.match(online, { id: ep.id, edgeId: agent.edgeId, status: 'online', relayId, tunnel: { state: 'closed' } })
  t.type(online.lastSeen, 'string')
  t.ok(!Number.isNaN(Date.parse(online.lastSeen)), 'lastSeen is an ISO date')

  const missing = await api.request('GET', '/api/endpoints/e_nope')
  t.equal(missing.status, 404)
  t.equal(missing.body.error.code, 'RG_ERR_NOT_FOUND')

  const fatal = new Promise<RelaygateError>(resolve => agent.once('fatal', resolve))
  const del = await api.request('DELETE', `/api/endpoints/${ep.id}`)
  t.equal(del.status, 204)
  t.equal(del.body, null, 'no body')
  t.equal((await fatal).code, 'RG_ERR_ENDPOINT_DELETED', 'its agent is disconnected')
  const gone = await api.request('GET', `/api/endpoints/${ep.id}`)
  t.equal(gone.status, 404)
  t.equal(gone.body.error.code, 'RG_ERR_NOT_FOUND')
  const again = await api.request('DELETE', `/api/endpoints/${ep.id}`)
  t.equal(again.status, 404)
  t.equal(again.body.error.code, 'RG_ERR_NOT_FOUND')
  t.same(await api.ok('GET', '/api/endpoints'), [])
})

t.test('tags: on create and PATCH, lists filtered by tag and status, jobs aimed at a tag; rename', async t => {
  const { api, relay } = await startSite(t)
  const make = async (name: string, tags?: string[]): Promise<any> => await api.ok('POST', '/api/endpoints', tags === undefined ? { name } : { name, tags })
  const a = await make('web-a', ['site-a', 'web'])
  const b = await make('db-a', ['site-a', 'db', 'db'])
  const c = await make('web-b', ['site-b', 'web'])
  const d = await make('plain')
  t.same(a.tags, ['site-a', 'web'])
  t.same(b.tags, ['site-a', 'db'], 'a tag given twice is kept once')
  t.same(d.tags, [])
  const names = async (query: string): Promise<string[]> => (await api.ok('GET', `/api/endpoints${query}`) as any[]).map(e => e.name)
  t.same(await names('?tag=site-a'), ['web-a', 'db-a'])
  t.same(await names('?tag=site-a&tag=web'), ['web-a'], 'every tag must be carried')
  t.same(await names('?tag=web,site-b'), ['web-b'], 'or comma-separated')
  t.same(await names('?tag=sit'), [], 'a tag matches whole, not a part of one')
  t.same(await names('?tag=web&q=-b'), ['web-b'], 'with the search')
  // Status is live: one agent online.
  await startAgent(t, c.joinToken, { relays: [relay.wsUrl!] }).whenOnline()
  await eventually(async () => (await names('?status=online')).includes('web-b') || undefined)
  t.same(await names('?status=online'), ['web-b'])
  t.same(await names('?tag=web&status=offline'), ['web-a'])
  const page = await fetch(`${api.baseUrl}/api/endpoints?status=offline&limit=2&offset=1`, { headers: { authorization: `Bearer ${api.token}` } })
  t.equal(page.headers.get('x-total-count'), '3', 'x-total-count counts every match of the filter')
  t.same((await page.json() as any[]).map(e => e.name), ['db-a', 'plain'], 'then one page of them')

  // PATCH: rename, replace tags.
  const renamed = await api.ok('PATCH', `/api/endpoints/${d.id as string}`, { name: 'plain-2', tags: ['site-b'] })
  t.match(renamed, { id: d.id, name: 'plain-2', tags: ['site-b'] })
  t.same(await names('?tag=site-b'), ['web-b', 'plain-2'])
  t.same((await api.ok('PATCH', `/api/endpoints/${d.id as string}`, { tags: [] })).tags, [], 'tags can be cleared')
  for (const [body, why] of [[{ tags: ['has space'] }, 'a bad tag'], [{ tags: 'site-a' }, 'not a list'], [{ name: '' }, 'an empty name'], [{ owner: 'x' }, 'an unknown field']] as const) {
    const res = await api.request('PATCH', `/api/endpoints/${d.id as string}`, body)
    t.equal(res.status, 400, why)
    t.equal(res.body.error.code, 'RG_ERR_BAD_REQUEST')
  }
  t.equal((await api.request('PATCH', '/api/endpoints/e_nope', { name: 'x' })).status, 404)
  t.equal((await api.request('GET', '/api/endpoints?tag=bad%20tag')).status, 400)
  t.equal((await api.request('GET', '/api/endpoints?status=asleep')).status, 400)

  // A job aimed at a tag goes to the endpoints carrying it.
  const upload = await fetch(`${api.baseUrl}/api/artifacts/tool.bin`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body: 'x' })
  t.equal(upload.status, 201)
  const job = await api.ok('POST', '/api/jobs', { artifact: 'tool.bin', tags: ['site-a'] })
  const view = await api.ok('GET', `/api/jobs/${job.id as string}`)
  t.same(view.targets.map((x: any) => x.endpointId).sort(), [a.id, b.id].sort())
  const none = await api.request('POST', '/api/jobs', { artifact: 'tool.bin', tags: ['nowhere'] })
  t.equal(none.status, 404)
})

t.test('an upload under a taken artifact name is refused unless it asks to replace', async t => {
  const { api } = await startServer(t)
  const put = async (query: string, body: string): Promise<{ status: number, body: any }> => {
    const res = await fetch(`${api.baseUrl}/api/artifacts/app.tgz${query}`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body })
    return { status: res.status, body: await res.json() }
  }
  const first = await put('', 'one')
  t.equal(first.status, 201)
  const again = await put('', 'two')
  t.equal(again.status, 409)
  t.equal(again.body.error.code, 'RG_ERR_ARTIFACT_EXISTS')
  t.match(again.body.error.message, /replace=1/, 'it says how to replace it')
  t.equal((await api.ok('GET', '/api/artifacts/app.tgz')).sha256, first.body.sha256, 'the first one stays')
  const replaced = await put('?replace=1', 'two')
  t.equal(replaced.status, 201)
  t.not(replaced.body.sha256, first.body.sha256)
  t.equal((await api.ok('GET', '/api/artifacts/app.tgz')).sha256, replaced.body.sha256, 'replaced when asked')
})

t.test('unknown routes are 404, wrong methods 405', async t => {
  const { api } = await startServer(t)
  for (const path of ['/api/nope', '/nope', '/api/endpoints/e_x/nope/deeper', '/ui/nope.js']) {
    const res = await api.request('GET', path)
    t.equal(res.status, 404, path)
    t.equal(res.body.error.code, 'RG_ERR_NOT_FOUND', path)
  }
  for (const [method, path] of [['PUT', '/api/relays'], ['PATCH', '/api/endpoints'], ['DELETE', '/api/settings'], ['POST', '/api/settings'], ['PUT', '/api/endpoints/e_x'], ['POST', '/healthz']]) {
    const res = await api.request(method, path)
    t.equal(res.status, 405, `${method} ${path}`)
    t.equal(res.body.error.code, 'RG_ERR_METHOD_NOT_ALLOWED', `${method} ${path}`)
  }
})

t.test('settings: defaults, valid patches persist, invalid ones are refused', async t => {
  const dataDir = join(tempDir(t), 'server')
  const first = await startServer(t, dataDir)
  const api = first.api
  const defaults = await api.ok('GET', '/api/settings')
  t.equal(defaults.checkinIntervalSeconds, 5)
  t.equal(defaults.tunnelIdleTimeoutSeconds, 300)

  const patched = await api.request('PATCH', '/api/settings', { checkinIntervalSeconds: 30, tunnelIdleTimeoutSeconds: 600 })
  t.equal(patched.status, 200)
  t.match(patched.body, { checkinIntervalSeconds: 30, tunnelIdleTimeoutSeconds: 600 })
  t.match(await api.ok('GET', '/api/settings'), { checkinIntervalSeconds: 30, tunnelIdleTimeoutSeconds: 600 })
  const partial = await api.request('PATCH', '/api/settings', { checkinIntervalSeconds: 10 })
  t.equal(partial.status, 200)
  t.match(partial.body, { checkinIntervalSeconds: 10, tunnelIdleTimeoutSeconds: 600 }, 'a patch leaves other settings alone')

  const bad: unknown[] = [
    { color: 'blue' },
    { checkinIntervalSeconds: 10, color: 'blue' },
    { checkinIntervalSeconds: 5.5 },
    { checkinIntervalSeconds: '10' },
    { checkinIntervalSeconds: null },
    { checkinIntervalSeconds: true },
    { checkinIntervalSeconds: 0 },
    { checkinIntervalSeconds: -5 },
    { checkinIntervalSeconds: 301 },
    { checkinIntervalSeconds: 1e9 },
    { tunnelIdleTimeoutSeconds: 1 },
    { tunnelIdleTimeoutSeconds: 86_401 }
  ]
  for (const body of bad) {
    const res = await api.request('PATCH', '/api/settings', body)
    t.equal(res.status, 400, JSON.stringify(body))
    t.equal(res.body.error.code, 'RG_ERR_BAD_REQUEST', JSON.stringify(body))
  }
  t.match(await api.ok('GET', '/api/settings'), { checkinIntervalSeconds: 10, tunnelIdleTimeoutSeconds: 600 }, 'refused patches changed nothing')

  // Persisted: a server restarted on the same data dir has them.
  await first.server.close()
  const second = await startServer(t, dataDir)
  t.match(await second.api.ok('GET', '/api/settings'), { checkinIntervalSeconds: 10, tunnelIdleTimeoutSeconds: 600 })
  t.equal(second.api.token, api.token, 'the admin token survives a restart')
})

t.test('bodies over 1 MiB are refused with 413', async t => {
  const { server, api } = await startServer(t)
  const big = JSON.stringify({ name: 'x'.repeat(1024 * 1024 + 16) })
  const declared = await rawRequest(server.httpUrl, {
    method: 'POST', path: '/api/endpoints', body: big,
    headers: { authorization: `Bearer ${api.token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(big)) }
  })
  t.equal(declared.status, 413, 'with a content-length')
  t.equal(declared.body.error.code, 'RG_ERR_BODY_TOO_LARGE')
  const chunked = await rawRequest(server.httpUrl, {
    method: 'POST', path: '/api/relays', body: big, chunked: true,
    headers: { authorization: `Bearer ${api.token}`, 'content-type': 'application/json' }
  })
  t.equal(chunked.status, 413, 'chunked, without a content-length')
  t.equal(chunked.body.error.code, 'RG_ERR_BODY_TOO_LARGE')
  const viaFetch = await api.request('PATCH', '/api/settings', big)
  t.equal(viaFetch.status, 413, 'through fetch')
  t.equal(viaFetch.body.error.code, 'RG_ERR_BODY_TOO_LARGE')
  // Just under the limit is read (and refused for its content, not its size).
  const under = await api.request('POST', '/api/endpoints', JSON.stringify({ name: 'x'.repeat(1024 * 1024 - 64) }))
  t.equal(under.status, 400)
  t.equal(under.body.error.code, 'RG_ERR_BAD_REQUEST')
  t.same(await api.ok('GET', '/api/endpoints'), [], 'nothing was created')
  t.same(await api.ok('GET', '/api/relays'), [])
})

t.test('the admin token file is 0600 in the data dir', async t => {
  const { server, api, dataDir } = await startServer(t)
  t.equal(server.adminTokenFile, join(dataDir, 'admin-token'))
  t.equal(statSync(server.adminTokenFile).mode & 0o777, 0o600)
  t.ok(api.token.length >= 32, 'a long random token')
  t.equal(readFileSync(server.adminTokenFile, 'utf8').trim(), api.token)
})

t.test('an adminToken option (RELAYGATE_ADMIN_TOKEN) overrides the generated token', async t => {
  const dataDir = join(tempDir(t), 'server')
  const generated = await startServer(t, dataDir)
  await generated.server.close()
  const adminToken = 'override-token-' + 'a'.repeat(24)
  const server = await buildServer({ dataDir, host: '127.0.0.1', httpPort: 0, httpsPort: -1, adminToken, ...await testStore(dataDir) }, testLogger())
  t.teardown(() => server.destroy())
  t.equal(server.httpsUrl, null, 'HTTPS off')
  t.equal(readFileSync(server.adminTokenFile, 'utf8').trim(), adminToken)
  t.equal(statSync(server.adminTokenFile).mode & 0o777, 0o600)
  const api = new Api(server.httpUrl, adminToken)
  t.same(await api.ok('GET', '/api/endpoints'), [])
  const old = await new Api(server.httpUrl, generated.api.token).request('GET', '/api/endpoints')
  t.equal(old.status, 401, 'the previous token no longer works')
  t.equal(old.body.error.code, 'RG_ERR_UNAUTHORIZED')

  await t.rejects(buildServer({ dataDir, host: '127.0.0.1', httpPort: 0, httpsPort: -1, adminToken: 'short' }, testLogger()), { code: 'RG_ERR_CONFIG' }, 'a short override is refused')
})

t.test('secrets never reach the logs', async t => {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _enc, cb) {
      lines.push(String(chunk))
      cb()
    }
  })
  const logger = pino({ level: 'trace' }, stream)
  const dataDir = join(tempDir(t), 'server')
  const server = await buildServer({ dataDir, host: '127.0.0.1', httpPort: 0, httpsPort: 0, ...await testStore(dataDir) }, logger.child({ process: 'server' }))
  t.teardown(() => server.destroy())
  const adminToken = readFileSync(server.adminTokenFile, 'utf8').trim()
  const api = new Api(server.httpUrl, adminToken)
  const created = await api.ok('POST', '/api/relays', { name: 'site-a' })
  const relay = await buildRelay({ server: server.httpUrl, token: created.token, dataDir: join(tempDir(t), 'relay'), host: '127.0.0.1', port: 0, tlsPort: 0 }, logger.child({ process: 'relay' }))
  t.teardown(() => relay.destroy())
  await relay.whenLinked()
  const ep = await api.ok('POST', '/api/endpoints', { name: 'box-1', tunnelTarget: 'http://127.0.0.1:2375' })
  const agent = new RelaygateAgent({ joinToken: ep.joinToken, dataDir: join(tempDir(t), 'agent') }, logger.child({ process: 'agent' }))
  t.teardown(() => agent.destroy())
  await agent.start().whenOnline()
  // Failed attempts too: a wrong relay token, a wrong admin token.
  const badRelayToken = `rgr_${'z'.repeat(43)}`
  const bad = await buildRelay({ server: server.httpUrl, token: badRelayToken, dataDir: join(tempDir(t), 'relay-bad'), host: '127.0.0.1', port: 0, tlsPort: -1 }, logger.child({ process: 'bad-relay' }), {})
  t.teardown(() => bad.destroy())
  await eventually(() => lines.some(l => l.includes('RG_ERR_RELAY_REVOKED')))
  await new Api(server.httpUrl, 'not-the-admin-token-0123456789').request('GET', '/api/relays')
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 10 })
  await api.ok('DELETE', `/api/relays/${created.id}`)
  await relay.close()
  await server.close()

  const all = lines.join('')
  t.ok(lines.length > 5, `something was logged (${lines.length} lines)`)
  t.notOk(all.includes(adminToken), 'no admin token')
  t.notOk(all.includes(created.token), 'no relay token')
  t.notOk(all.includes(created.token.slice(4)), 'no relay token without its prefix')
  t.notOk(all.includes(badRelayToken), 'no refused relay token')
  t.notOk(all.includes(ep.joinToken), 'no join token')
  t.notOk(all.includes(decodeJoinToken(ep.joinToken).secret), 'no endpoint secret')
})
