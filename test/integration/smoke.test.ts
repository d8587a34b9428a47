import t from 'tap'
import { startSite, startAgent, eventually } from '../helpers/cluster.js'

t.test('an agent checks in through a relay and shows online', async t => {
  const { api, relay } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'box-1' })
  t.match(ep.joinToken, /^rg1\./)
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const list = await api.ok('GET', '/api/endpoints')
  t.equal(list.length, 1)
  t.equal(list[0].status, 'online')
  t.equal(list[0].edgeId, agent.edgeId)
  t.equal(list[0].relayId, relay.relayId)
  await eventually(() => relay.stats.checkins >= 0)
})
