import t from 'tap'
import { randomBytes } from 'node:crypto'
import { startServer, startRelay, startSite, startAgent, eventually, type Api } from '../helpers/cluster.js'

async function jobTarget (api: Api, jobId: string): Promise<any> {
  return (await api.ok('GET', `/api/jobs/${jobId}`)).targets[0]
}

async function startJob (t: { equal: (a: unknown, b: unknown) => unknown }, api: Api, serverUrl: string, endpointId: string, run: string[]): Promise<string> {
  const put = await fetch(`${serverUrl}/api/artifacts/s.bin`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body: randomBytes(1024) })
  t.equal(put.status, 201)
  const job = await api.ok('POST', '/api/jobs', { artifact: 's.bin', endpoints: [endpointId], run })
  await eventually(async () => (await jobTarget(api, job.id)).state === 'running', 10_000)
  return job.id
}

t.test('a relay shutting down gracefully sends its agents to the next relay at once', async t => {
  const { server, api } = await startServer(t)
  const r1 = await startRelay(t, server.httpUrl, (await api.ok('POST', '/api/relays', { name: 'one' })).token)
  const r2 = await startRelay(t, server.httpUrl, (await api.ok('POST', '/api/relays', { name: 'two' })).token)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'mover' })
  const agent = startAgent(t, ep.joinToken, { relays: [r1.wsUrl!, r2.wsUrl!] })
  await agent.whenOnline()
  t.equal(agent.relayUrl, r1.wsUrl, 'online at the first relay')
  const errors: unknown[] = []
  agent.on('relay-error', e => errors.push(e))
  const offline = new Promise<{ code: number }>(resolve => agent.once('offline', resolve))
  const back = new Promise<void>(resolve => agent.once('online', () => resolve()))
  const started = Date.now()
  await r1.close()
  t.equal((await offline).code, 4009, 'the relay closed the link with RG_ERR_GOING_AWAY (4009)')
  await back
  t.equal(agent.relayUrl, r2.wsUrl, 'failed over to the second relay')
  t.same(errors, [], 'without dialing the relay that is going away again')
  t.ok(Date.now() - started < 5000, 'within a few seconds')
  const view = await eventually(async () => {
    const e = await api.ok('GET', `/api/endpoints/${ep.id}`)
    return e.status === 'online' && e.relayId === r2.relayId ? e : undefined
  })
  t.equal(view.relayId, r2.relayId, 'the server sees the agent through the second relay')
})

t.test('agent.close() waits for a running job and its acknowledged result', async t => {
  const { server, api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'finisher' })
  const agent = startAgent(t, ep.joinToken, { allowExec: true, drainTimeoutMs: 20_000 })
  await agent.whenOnline()
  const jobId = await startJob(t, api, server.httpUrl, ep.id, ['sh', '-c', 'sleep 1; echo done'])
  await agent.close()
  t.equal(agent.state, 'stopped')
  const target = await eventually(async () => {
    const v = await jobTarget(api, jobId)
    return v.state === 'succeeded' || v.state === 'failed' ? v : undefined
  }, 5000)
  t.match(target, { state: 'succeeded', exitCode: 0 }, 'the job finished before the agent stopped, and the server has its result')
  t.match(target.output, /done/)
})

t.test('agent.close() reports a job still running after the stop timeout as RG_ERR_GOING_AWAY', async t => {
  const { server, api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'slowpoke' })
  const agent = startAgent(t, ep.joinToken, { allowExec: true, drainTimeoutMs: 300 })
  await agent.whenOnline()
  const jobId = await startJob(t, api, server.httpUrl, ep.id, ['sleep', '20'])
  const started = Date.now()
  await agent.close()
  t.ok(Date.now() - started < 5000, `close() returned in ${Date.now() - started} ms`)
  const target = await eventually(async () => {
    const v = await jobTarget(api, jobId)
    return v.state === 'failed' ? v : undefined
  }, 5000)
  t.match(target, { state: 'failed', error: { code: 'RG_ERR_GOING_AWAY' } })
})
