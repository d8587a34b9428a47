import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { startSite, startServer, startAgent, eventually, tempDir, testLogger } from '../helpers/cluster.js'
import { buildRelay } from '../../relay/relay.js'

t.test('upload an artifact, dispatch a job, watch it succeed', async t => {
  const { api, server } = await startSite(t)
  const body = randomBytes(3 * 1024 * 1024 + 17)
  const sha = createHash('sha256').update(body).digest('hex')
  const res = await fetch(`${server.httpUrl}/api/artifacts/tool.bin`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body })
  t.equal(res.status, 201)
  t.match(await res.json(), { name: 'tool.bin', sha256: sha, size: body.length })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'worker' })
  const agent = startAgent(t, ep.joinToken, { allowExec: true })
  await agent.whenOnline()
  const job = await api.ok('POST', '/api/jobs', { artifact: 'tool.bin', endpoints: [ep.id], path: 'bin/tool.bin', run: ['sh', '-c', 'wc -c < bin/tool.bin; exit 3'] })
  const done = await eventually(async () => {
    const v = await api.ok('GET', `/api/jobs/${job.id}`)
    return v.state === 'succeeded' || v.state === 'failed' ? v : undefined
  }, 20_000)
  t.match(done.targets[0], { endpointId: ep.id, state: 'failed', exitCode: 3, error: { code: 'RG_ERR_EXEC_FAILED' } })
  t.match(done.targets[0].output, String(body.length))
  const placed = readFileSync(join(agent.config.filesDir!, 'bin/tool.bin'))
  t.equal(createHash('sha256').update(placed).digest('hex'), sha)
  const relays = await eventually(async () => {
    const r = await api.ok('GET', '/api/relays')
    return r[0].cache?.bytesFetched === body.length ? r : undefined
  }, 10_000)
  t.match(relays[0].cache, { misses: 1, bytesFetched: body.length, entries: 1 })
})

t.test('a job order lost on the way (a link that closed under it) is sent again when its agent does not answer', async t => {
  const { server, api } = await startServer(t, undefined, { jobOrderAnswerMs: 1500 })
  const created = await api.ok('POST', '/api/relays', { name: 'lossy' })
  let dropped = 0
  // The relay loses the first job order it is given (as one on a link that closes would be).
  const relay = await buildRelay({ server: server.httpUrl, token: created.token, dataDir: join(tempDir(t), 'relay'), host: '127.0.0.1', port: 0, tlsPort: -1 }, testLogger(), {
    taps: { fromServer: msg => msg.t === 'job' && dropped++ === 0 ? [] : [msg] }
  })
  t.teardown(() => relay.destroy())
  await relay.whenLinked()
  const ep = await api.ok('POST', '/api/endpoints', { name: 'far' })
  await startAgent(t, ep.joinToken, { allowExec: true, relays: [relay.wsUrl!] }).whenOnline()
  const upload = await fetch(`${server.httpUrl}/api/artifacts/hi.sh`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body: 'echo hi' })
  t.equal(upload.status, 201)
  const job = await api.ok('POST', '/api/jobs', { artifact: 'hi.sh', endpoints: [ep.id], run: ['sh', 'hi.sh'] })
  const done = await eventually(async () => {
    const v = await api.ok('GET', `/api/jobs/${job.id as string}`)
    return v.state === 'succeeded' || v.state === 'failed' ? v : undefined
  }, 20_000)
  t.equal(dropped, 2, 'the first order was lost, the second went through')
  t.match(done.targets[0], { state: 'succeeded', attempt: 2, output: 'hi\n' }, 'done at the second attempt')
})

