import t from 'tap'
import { randomBytes } from 'node:crypto'
import { startSite, startAgent, startTarget, eventually } from '../helpers/cluster.js'
import { uploadArtifact, waitJob } from '../helpers/artifacts.js'

/**
 * Regression: with flag pushes off, the relay holds a tunnel offer until
 * the agent's next check-in while later orders (a job) pass at once, so the
 * agent receives order counters out of order. Both must be accepted (an
 * anti-replay window, not "only ever higher").
 */
t.test('a held tunnel offer delivered after a later job order is accepted; both succeed', async t => {
  const target = await startTarget(t)
  const { api } = await startSite(t, { relay: { pushFlags: false } })
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 2 })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'polling', tunnelTarget: target.url })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  await eventually(() => agent.intervalSeconds === 2 || undefined)
  await uploadArtifact(api, 'tool.bin', randomBytes(2048))
  await api.ok('POST', `/api/endpoints/${ep.id as string}/tunnel`)
  const job = await api.ok('POST', '/api/jobs', { artifact: 'tool.bin', endpoints: [ep.id], path: 'tool.bin' })
  t.equal((await waitJob(api, job.id)).state, 'succeeded', 'the job (a later order) went through')
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id as string}`)).tunnel.state === 'open' || undefined, 15_000)
  t.equal(agent.ordersRefused, 0, 'no order was refused')
  t.equal((await api.request('GET', `/api/endpoints/${ep.id as string}/proxy/held`)).status, 200, 'and the tunnel serves requests')
})
