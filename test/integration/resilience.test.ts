import t from 'tap'
import { join } from 'node:path'
import { startSite, startServer, startRelay, startAgent, eventually, tempDir, freePort } from '../helpers/cluster.js'
import { FreezableProxy } from '../helpers/proxy.js'
import { CheckinFlag, type CheckinAnswer } from '../../protocol/index.js'
import type { RelaygateError } from '../../protocol/errors.js'

t.test('relay restart: agents come back online', async t => {
  const { server, api } = await startSite(t)
  const created = await api.ok('POST', '/api/relays', { name: 'restartable' })
  const dataDir = join(tempDir(t), 'relay')
  // Fixed ports, as in production (a relay restarted on port 0 would get new ones).
  const port = await freePort()
  const tlsPort = await freePort()
  const first = await startRelay(t, server.httpUrl, created.token, { dataDir, port, tlsPort })
  const fingerprint = first.fingerprint
  const endpoints = await Promise.all([1, 2, 3].map(i => api.ok('POST', '/api/endpoints', { name: `node-${i}` })))
  const agents = endpoints.map(ep => startAgent(t, ep.joinToken, { relays: [first.wssUrl!] }))
  await Promise.all(agents.map(a => a.whenOnline()))

  await first.destroy()
  await eventually(async () => (await api.ok('GET', '/api/endpoints')).every((e: { status: string }) => e.status === 'offline'))
  const second = await startRelay(t, server.httpUrl, created.token, { dataDir, port, tlsPort })
  t.equal(second.fingerprint, fingerprint, 'the certificate is kept, so pins still hold')
  await eventually(async () => (await api.ok('GET', '/api/endpoints')).filter((e: { status: string }) => e.status === 'online').length === 3, 20_000)
  t.pass('all three agents online again')
})

t.test('server restart: endpoints, associations and settings are kept; relays and agents come back', async t => {
  const first = await startServer(t, undefined, { httpPort: await freePort() })
  const { api } = first
  const relayInfo = await api.ok('POST', '/api/relays', { name: 'survivor' })
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 10, tunnelIdleTimeoutSeconds: 120 })
  const relay = await startRelay(t, first.server.httpUrl, relayInfo.token)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'persistent' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const httpPort = Number(new URL(first.server.httpUrl).port)

  await first.server.destroy()
  await eventually(() => !relay.linked)
  const second = await startServer(t, first.dataDir, { httpPort })
  t.equal(second.api.token, api.token, 'the admin token is kept')
  const settings = await second.api.ok('GET', '/api/settings')
  t.match(settings, { checkinIntervalSeconds: 10, tunnelIdleTimeoutSeconds: 120 })
  const view = await eventually(async () => {
    const v = await second.api.ok('GET', `/api/endpoints/${ep.id}`)
    return v.status === 'online' ? v : undefined
  }, 20_000)
  t.equal(view.edgeId, agent.edgeId, 'association kept')
  t.equal(view.relayId, relayInfo.id)
  t.equal(agent.state, 'online', 'the agent never had to reconnect: the relay re-authenticated it')
  const relays = await second.api.ok('GET', '/api/relays')
  t.match(relays, [{ id: relayInfo.id, connected: true, agents: 1 }])
})

t.test('an interval change reaches agents at their next check-in', async t => {
  const { api } = await startSite(t)
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 1 })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'ticker' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  t.equal(agent.intervalSeconds, 1)
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 2 })
  await eventually(() => agent.intervalSeconds === 2, 5000)
  t.equal(agent.intervalSeconds, 2)
})

t.test('a dead link is detected within two intervals, without waiting for TCP', async t => {
  const { api, relay } = await startSite(t)
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 1 })
  const proxy = new FreezableProxy(Number(new URL(relay.wsUrl!).port))
  await proxy.listen()
  t.teardown(() => proxy.close())
  const ep = await api.ok('POST', '/api/endpoints', { name: 'flaky-site' })
  const agent = startAgent(t, ep.joinToken, { relays: [`ws://127.0.0.1:${proxy.port}`] })
  await agent.whenOnline()
  const offline = new Promise<{ code: number }>(resolve => agent.once('offline', resolve))
  const frozenAt = Date.now()
  proxy.freeze()
  const { code } = await offline
  const detectedAfter = Date.now() - frozenAt
  t.equal(code, 4008, 'closed by the liveness check (RG_ERR_LIVENESS), the TCP connection was still open')
  t.ok(detectedAfter < 5 * 1000, `detected after ${detectedAfter} ms (interval 1 s)`)
  // The relay notices too: the server shows the endpoint offline.
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id}`)).status === 'offline', 10_000)
  proxy.thaw()
  await eventually(() => agent.state === 'online', 15_000)
  t.pass('back online once the network works again')
})

t.test('a raised flag is pushed to the agent at once, not at its next check-in', async t => {
  const { server, api } = await startSite(t)
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 30 })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'pushed' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const answer = new Promise<CheckinAnswer>(resolve => agent.once('answer', resolve))
  server.tunnels.request(ep.id)
  const got = await answer
  t.equal(got.seq, 0, 'a push, not an answer to a check-in')
  t.equal(got.flags & CheckinFlag.TUNNEL, CheckinFlag.TUNNEL)
  t.equal(agent.checkins, 0, 'no check-in was needed')
  t.match((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state, /^(requested|open)$/)

  // An agent arriving while the flag is up learns it on arrival.
  server.tunnels.closeTunnel(ep.id)
  server.hub.setFlags(ep.id, CheckinFlag.TUNNEL)
  await agent.close()
  const late = startAgent(t, ep.joinToken, { edgeId: agent.edgeId })
  const lateAnswer = await new Promise<CheckinAnswer>(resolve => late.once('answer', resolve))
  t.equal(lateAnswer.flags & CheckinFlag.TUNNEL, CheckinFlag.TUNNEL)
})

t.test('agents pin relay certificates and fail over through the relay list', async t => {
  const { api, relay } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'pinned' })
  const wrongPin = 'ab'.repeat(32)
  // The join token carries the relay's pin: wss with the real certificate works.
  const good = startAgent(t, ep.joinToken, { relays: [relay.wssUrl!] })
  t.equal(good.config.relayList[0].fingerprints[0], relay.fingerprint, 'the join token carries the pin')
  await good.whenOnline()
  await good.close()

  // A relay presenting another certificate (a man in the middle) is never trusted.

  const ep2 = await api.ok('POST', '/api/endpoints', { name: 'mitm-target' })
  const { decodeJoinToken, encodeJoinToken } = await import('../../protocol/token.js')
  const token = decodeJoinToken(ep2.joinToken)
  const forged = encodeJoinToken({ ...token, relays: [{ url: relay.wssUrl!, fingerprints: [wrongPin] }] })
  const victim = startAgent(t, forged)
  const error = await new Promise<{ error: RelaygateError }>(resolve => victim.once('relay-error', resolve))
  t.equal(error.error.code, 'RG_ERR_PIN_MISMATCH')
  t.not(victim.state, 'online')
  await victim.destroy()

  // Rotation: several pins, one of them right; and failover from a dead relay to a live one.
  const rotated = encodeJoinToken({ ...token, relays: [{ url: 'ws://127.0.0.1:1', fingerprints: [] }, { url: relay.wssUrl!, fingerprints: [wrongPin, relay.fingerprint!] }] })
  const agent = startAgent(t, rotated)
  const failedOver = new Promise<{ relay: string }>(resolve => agent.once('relay-error', resolve))
  await agent.whenOnline()
  t.equal((await failedOver).relay, 'ws://127.0.0.1:1')
  t.equal(agent.relayUrl, relay.wssUrl)
})
