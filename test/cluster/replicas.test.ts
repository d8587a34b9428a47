import t from 'tap'
import http from 'node:http'
import { randomBytes, createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import WebSocket, { WebSocketServer } from 'ws'
import { buildServer, type RelaygateServer } from '../../server/server.js'
import { startRelay, startAgent, eventually, tempDir, testLogger, Api, type TapLike } from '../helpers/cluster.js'
import { databaseFor } from '../helpers/postgres.js'
import { listenEcho } from '../helpers/tunnel-data.js'
import { connectTcp } from '../../cli/connect.js'

/** `n` server replicas on one fresh PostgreSQL database, sharing a cluster secret. */
async function startReplicas (t: TapLike, n: number, extra: Record<string, unknown> = {}): Promise<{ replicas: RelaygateServer[], apis: Api[], databaseUrl: string, secret: string }> {
  const base = tempDir(t)
  const databaseUrl = await databaseFor(base)
  const secret = randomBytes(32).toString('hex')
  const replicas: RelaygateServer[] = []
  for (let i = 0; i < n; i++) {
    const server = await buildServer({ dataDir: join(base, `replica-${i}`), host: '127.0.0.1', httpPort: 0, httpsPort: 0, databaseUrl, clusterSecret: secret, ...extra }, testLogger())
    t.teardown(() => server.destroy())
    replicas.push(server)
  }
  const apis = replicas.map(s => new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim()))
  return { replicas, apis, databaseUrl, secret }
}

/** An HTTP target that says who it is, plus a WebSocket echo on /echo. */
async function startTarget (t: TapLike, name: string): Promise<string> {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ target: name, path: req.url }))
  })
  const wss = new WebSocketServer({ server, path: '/echo' })
  wss.on('connection', ws => ws.on('message', (data, binary) => ws.send(data, { binary })))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { wss.close(); server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

t.test('three replicas: any one serves the whole fleet, one hop to the replica that holds a relay', async t => {
  const { replicas: [a, b, c], apis: [apiA, apiB, apiC] } = await startReplicas(t, 3)
  t.equal((await a.cluster!.liveReplicas()).length, 3, 'each registered with a lease')
  t.not(a.cluster!.replicaId, b.cluster!.replicaId)

  // Every admin token is valid on every replica.
  await eventually(async () => (await new Api(b.httpUrl, apiA.token).request('GET', '/api/relays')).status === 200)
  t.equal((await new Api(c.httpUrl, apiB.token).request('GET', '/api/relays')).status, 200, 'B\'s token works on C')
  t.equal((await new Api(a.httpUrl, 'rga_not-a-token-of-any-replica').request('GET', '/api/relays')).status, 401)

  // Two relays, linked to B and to C.
  const r1 = await apiA.ok('POST', '/api/relays', { name: 'site-b' })
  const r2 = await apiA.ok('POST', '/api/relays', { name: 'site-c' })
  const relayB = await startRelay(t, b.httpUrl, r1.token, { statsIntervalMs: 200 })
  const relayC = await startRelay(t, c.httpUrl, r2.token, { statsIntervalMs: 200 })
  await relayB.whenLinked()
  await relayC.whenLinked()

  const echo = await listenEcho(t)
  const e1 = await apiA.ok('POST', '/api/endpoints', { name: 'on-b', tunnelTarget: await startTarget(t, 'target-b') })
  const e2 = await apiA.ok('POST', '/api/endpoints', { name: 'on-c', tunnelTarget: await startTarget(t, 'target-c') })
  startAgent(t, e1.joinToken, { relays: [relayB.wsUrl!] })
  const agent2 = startAgent(t, e2.joinToken, { relays: [relayC.wsUrl!], allowTcp: [echo.port] })

  // Through A (which holds no relay): every endpoint online, every relay connected.
  const listed = await eventually(async () => {
    const list = await apiA.ok('GET', '/api/endpoints') as Array<{ id: string, status: string, relayId: string }>
    return list.every(e => e.status === 'online') && list.length === 2 ? list : undefined
  })
  t.same(Object.fromEntries(listed!.map(e => [e.id, e.relayId])), { [e1.id]: r1.id, [e2.id]: r2.id }, 'each through its relay')
  const relays = await eventually(async () => {
    const list = await apiA.ok('GET', '/api/relays') as Array<{ id: string, connected: boolean, agents: number, replicaId: string }>
    return list.every(r => r.connected && r.agents === 1) ? list : undefined
  })
  t.same(Object.fromEntries(relays!.map(r => [r.id, r.replicaId])), { [r1.id]: b.cluster!.replicaId, [r2.id]: c.cluster!.replicaId }, 'where each relay is linked')
  const figures = await eventually(async () => {
    const list = await apiA.ok('GET', '/api/relays') as Array<{ cache: { maxBytes?: number } | null }>
    return list.every(r => r.cache !== null) ? list : undefined
  })
  t.ok(figures!.every(r => typeof r.cache?.maxBytes === 'number'), 'A shows the cache figures the relays reported to B and C')

  // HTTP through A to the agent behind C: one hop A -> C, then C -> relay -> agent.
  const viaA = await apiA.request('GET', `/api/endpoints/${e2.id}/proxy/hello?x=1`)
  t.equal(viaA.status, 200)
  t.same(viaA.body, { target: 'target-c', path: '/hello?x=1' })
  t.equal((await apiA.ok('GET', `/api/endpoints/${e1.id}/proxy/b`)).target, 'target-b')
  const shown = await eventually(async () => {
    const one = await apiA.ok('GET', `/api/endpoints/${e2.id}`)
    return one.tunnel.state === 'open' ? one : undefined
  })
  t.equal(shown.tunnel.relayId, r2.id, 'A shows the tunnel C holds')

  // A WebSocket through A.
  const ws = new WebSocket(`${a.httpUrl.replace(/^http/, 'ws')}/api/endpoints/${e2.id}/proxy/echo`, { headers: { authorization: `Bearer ${apiA.token}` } })
  const echoed = await new Promise<string>((resolve, reject) => {
    ws.once('open', () => ws.send('through two replicas'))
    ws.once('message', data => resolve(String(data)))
    ws.once('error', reject)
  })
  ws.close()
  t.equal(echoed, 'through two replicas')

  // relaygate connect (raw TCP) through A.
  const input = new PassThrough()
  const chunks: Buffer[] = []
  const output = new Writable({ write (chunk, _enc, cb) { chunks.push(chunk as Buffer); cb() } })
  const payload = randomBytes(200_000)
  input.end(payload)
  await connectTcp({ server: a.httpUrl, endpointId: e2.id, port: echo.port, token: apiA.token, input, output })
  t.ok(Buffer.concat(chunks).equals(payload), 'TCP bytes echoed through A -> C -> relay -> agent')

  // A tunnel wanted at A while its endpoint is offline: its agent comes online behind C, and C takes the tunnel over.
  const e3 = await apiA.ok('POST', '/api/endpoints', { name: 'late', tunnelTarget: await startTarget(t, 'target-late') })
  t.equal((await apiA.ok('POST', `/api/endpoints/${e3.id}/tunnel`)).state, 'requested', 'requested at A, nobody online')
  startAgent(t, e3.joinToken, { relays: [relayC.wsUrl!] })
  const taken = await eventually(async () => {
    const one = await apiA.ok('GET', `/api/endpoints/${e3.id}`)
    return one.tunnel.state === 'open' ? one : undefined
  })
  t.equal(taken!.tunnel.relayId, r2.id, 'opened through the relay on C without another request')
  t.equal((await apiA.ok('GET', `/api/endpoints/${e3.id}/proxy/late`)).target, 'target-late')

  // An artifact uploaded to B, a job created at A for agents on B and on C.
  const body = randomBytes(300_000)
  const upload = await fetch(`${b.httpUrl}/api/artifacts/tool.bin`, { method: 'PUT', headers: { authorization: `Bearer ${apiB.token}` }, body })
  t.equal(upload.status, 201)
  t.equal((await upload.json() as { sha256: string }).sha256, createHash('sha256').update(body).digest('hex'))
  const sha = createHash('sha256').update(body).digest('hex')
  t.equal([a, b, c].filter(r => r.artifacts.has(sha)).length, 2, 'stored on two replicas before the upload was acknowledged (--artifact-copies default)')
  t.ok(b.artifacts.has(sha), 'one of them the replica it was uploaded to')
  // Prestaged from A on every relay: the one on C fills its cache through C.
  t.equal((await apiA.ok('POST', '/api/artifacts/tool.bin/prestage', {})).relays, 2, 'both relays told, wherever linked')
  await eventually(() => relayB.cache.has(sha) && relayC.cache.has(sha))
  const job = await apiA.ok('POST', '/api/jobs', { artifact: 'tool.bin', endpoints: [e1.id, e2.id] })
  const done = await eventually(async () => {
    const view = await apiC.ok('GET', `/api/jobs/${job.id}`)
    return view.state === 'succeeded' || view.state === 'failed' ? view : undefined
  }, 30_000)
  t.equal(done.state, 'succeeded', JSON.stringify(done.targets))
  t.same(done.targets.map((x: { attempt: number }) => x.attempt), [1, 1], 'each target dispatched once')
  t.equal([a, b, c].filter(r => r.artifacts.has(sha)).length, 3, 'a replica that lacked the blob pulled it for its relay and kept it')

  // A dashboard on A hears of a change made at B (/api/events).
  const events = await fetch(`${a.httpUrl}/api/events`, { headers: { authorization: `Bearer ${apiA.token}` } })
  const reader = events.body!.getReader()
  const heard = (async () => {
    let text = ''
    while (!text.includes('"artifacts"')) {
      const { value, done: end } = await reader.read()
      if (end) break
      text += Buffer.from(value).toString()
    }
    return text
  })()
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal((await fetch(`${b.httpUrl}/api/artifacts/other.bin`, { method: 'PUT', headers: { authorization: `Bearer ${apiB.token}` }, body: 'x' })).status, 201)
  t.match(await heard, /"topic":"artifacts"/, 'A\'s event stream told of B\'s upload')
  await reader.cancel()
  // Deleting an artifact removes its blob from every replica.
  await apiA.ok('DELETE', '/api/artifacts/tool.bin')
  await eventually(() => [a, b, c].every(r => !r.artifacts.has(sha)))

  // /metrics on every replica: a sum over replicas counts each agent and each fleet-wide figure once.
  const scrape = async (api: Api): Promise<string> => await (await fetch(`${api.baseUrl}/metrics`, { headers: { authorization: `Bearer ${api.token}` } })).text()
  const sum = (texts: string[], name: string): number => texts.flatMap(x => x.split('\n')).filter(l => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((total, l) => total + Number(l.split(' ').at(-1)), 0)
  const texts = await Promise.all([apiA, apiB, apiC].map(scrape))
  t.match(texts[0], new RegExp(`relaygate_server_agents_online\\{replica="${a.cluster!.replicaId}"\\} 0`), 'series carry the replica')
  t.equal(sum(texts, 'relaygate_server_agents_online'), 3, 'agents online, summed over replicas')
  t.equal(sum(texts, 'relaygate_server_relays_connected'), 2)
  t.equal(sum(texts, 'relaygate_server_artifacts_stored'), 1, 'the one artifact counted once')
  t.equal(sum(texts, 'relaygate_server_fleet_reporter'), 1, 'one replica reports the fleet-wide figures')
  t.equal(sum(texts, 'relaygate_server_replicas_live'), 3)

  // Settings changed at A reach the relays linked to B and C.
  await apiA.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 30 })
  t.equal((await apiB.ok('GET', '/api/settings')).checkinIntervalSeconds, 30)
  await eventually(() => relayB.settings.checkinIntervalSeconds === 30 && relayC.settings.checkinIntervalSeconds === 30)

  // Deleting at A stops the agent behind C; revoking at A drops the relay at B.
  const stopped = new Promise<{ code: string }>(resolve => agent2.once('fatal', resolve))
  await apiA.ok('DELETE', `/api/endpoints/${e2.id}`)
  t.equal((await stopped).code, 'RG_ERR_ENDPOINT_DELETED', 'the agent behind C was stopped')
  await eventually(async () => (await apiC.ok('GET', '/api/relays')).find((r: { id: string }) => r.id === r2.id).agents === 1)
  await apiA.ok('DELETE', `/api/relays/${r1.id}`)
  await eventually(async () => (await apiA.ok('GET', `/api/relays/${r1.id}`)).connected === false)
  t.pass('changes made at A acted on by the replicas that hold the links')
})

t.test('API tokens and the audit log are the cluster\'s: made at one replica, used, revoked and read at the others', async t => {
  const { replicas: [a, b], apis: [apiA, apiB] } = await startReplicas(t, 2)
  const names = (await apiA.ok('GET', '/api/tokens')).map((k: { name: string }) => k.name)
  t.equal(names.length, 2, `each replica's first-start token is an admin token (${names.join(', ')})`)
  t.equal((await apiB.request('GET', '/api/tokens')).status, 200, 'B\'s own admin token works')
  const ops = await apiA.ok('POST', '/api/tokens', { name: 'ops', role: 'operator' })
  const atB = new Api(b.httpUrl, ops.token)
  await eventually(async () => (await atB.request('GET', '/api/endpoints')).status === 200)
  const ep = await atB.ok('POST', '/api/endpoints', { name: 'made-at-b' })
  t.equal((await atB.request('POST', '/api/relays', { name: 'x' })).status, 403, 'its role holds at B too')
  await apiA.ok('DELETE', `/api/tokens/${ops.id as string}`)
  await eventually(async () => (await atB.request('GET', '/api/endpoints')).status === 401)
  t.pass('revoked at A: refused at B')
  // Written by B within a moment (entries are written in batches every 200 ms).
  const audit = await eventually(async () => { const found = await apiA.ok('GET', `/api/audit?target=${ep.id as string}`); return found.length > 0 ? found : null })
  t.match(audit, [{ token: 'ops', action: 'endpoint.create', result: 'ok' }], 'B\'s entries are read at A')
  t.ok(a.httpUrl !== b.httpUrl)
})

t.test('a cluster needs PostgreSQL, HTTPS and a real secret', async t => {
  const dataDir = tempDir(t)
  const secret = 'x'.repeat(40)
  await t.rejects(buildServer({ dataDir, httpPort: 0, httpsPort: 0, clusterSecret: secret }, testLogger()), { code: 'RG_ERR_CONFIG', message: /--database-url/ })
  await t.rejects(buildServer({ dataDir, httpPort: 0, httpsPort: -1, clusterSecret: secret, databaseUrl: 'postgres://x@127.0.0.1:1/x' }, testLogger()), { code: 'RG_ERR_CONFIG', message: /HTTPS/ })
  await t.rejects(buildServer({ dataDir, httpPort: 0, httpsPort: 0, clusterSecret: 'short', databaseUrl: 'postgres://x@127.0.0.1:1/x' }, testLogger()), { code: 'RG_ERR_CONFIG', message: /at least 32/ })
  await t.rejects(buildServer({ dataDir, httpPort: 0, httpsPort: 0, clusterSecretFile: join(dataDir, 'missing'), databaseUrl: 'postgres://x@127.0.0.1:1/x' }, testLogger()), { code: 'RG_ERR_CONFIG', message: /cluster-secret-file.*ENOENT/ })
  await t.rejects(buildServer({ dataDir, httpPort: 0, httpsPort: 0, peerUrl: 'https://a:1' }, testLogger()), { code: 'RG_ERR_CONFIG', message: /--peer-url needs/ })
})

t.test('a replica with another cluster secret cannot open a peer link', async t => {
  const { replicas: [a], databaseUrl } = await startReplicas(t, 1)
  const intruder = await buildServer({ dataDir: tempDir(t), host: '127.0.0.1', httpPort: 0, httpsPort: 0, databaseUrl, clusterSecret: randomBytes(32).toString('hex') }, testLogger())
  t.teardown(() => intruder.destroy())
  await t.rejects(intruder.cluster!.link(a.cluster!.replicaId), { code: 'RG_ERR_PEER_UNAVAILABLE' }, 'refused: wrong cluster secret')
  await t.rejects(a.cluster!.link(intruder.cluster!.replicaId), { code: 'RG_ERR_PEER_UNAVAILABLE' }, 'and the other way round')
})
