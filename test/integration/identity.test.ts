import t from 'tap'
import { randomUUID } from 'node:crypto'
import { startSite, startAgent, eventually, testLogger, tempDir } from '../helpers/cluster.js'
import { decodeJoinToken, encodeJoinToken } from '../../protocol/token.js'
import { newSecret } from '../../protocol/auth.js'
import { buildRelay } from '../../relay/relay.js'
import type { RelaygateError } from '../../protocol/errors.js'
import type { RelaygateAgent } from '../../agent/agent.js'
import { join } from 'node:path'
import { RawClient } from '../helpers/raw.js'
import { frames, FrameType, PROTOCOL_VERSION, decodeHello, decodeJson } from '../../protocol/index.js'
import { computeProof, deriveAuthKey } from '../../protocol/auth.js'

function fatalOf (agent: RelaygateAgent): Promise<RelaygateError> {
  return new Promise(resolve => agent.once('fatal', resolve))
}

t.test('the first valid check-in associates the edge id (pre-staged endpoint)', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'prestaged' })
  t.equal(ep.edgeId, null, 'no edge id before the first check-in')
  const edgeId = randomUUID()
  const agent = startAgent(t, ep.joinToken, { edgeId })
  await agent.whenOnline()
  const after = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.equal(after.edgeId, edgeId)
  t.equal(after.status, 'online')
  await agent.close()
  // The same edge id comes back: still accepted.
  const again = startAgent(t, ep.joinToken, { edgeId })
  await again.whenOnline()
  t.pass('same edge id accepted again')
})

t.test('a different edge id with the same join token is refused and the refusal shows', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'one-box' })
  const first = startAgent(t, ep.joinToken)
  await first.whenOnline()
  const intruderId = randomUUID()
  const intruder = startAgent(t, ep.joinToken, { edgeId: intruderId })
  const err = await fatalOf(intruder)
  t.equal(err.code, 'RG_ERR_EDGE_ID_MISMATCH')
  t.match(err.message, `DELETE /api/endpoints/${ep.id as string}/agents/`, 'it says how to free the place')
  t.match(err.message, `--edge-id ${first.edgeId}`, 'or which edge id the same machine would need')
  const view = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.equal(view.edgeId, first.edgeId, 'association unchanged')
  t.equal(view.status, 'online', 'the rightful agent stays online')
  t.match(view.refusedEdgeIds, [{ edgeId: intruderId, code: 'RG_ERR_EDGE_ID_MISMATCH', count: 1 }])
})

t.test('a wrong secret is refused, and so is an unknown endpoint', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'guarded' })
  const token = decodeJoinToken(ep.joinToken)
  const forged = encodeJoinToken({ ...token, secret: newSecret() })
  const err = await fatalOf(startAgent(t, forged))
  t.equal(err.code, 'RG_ERR_AUTH')
  const view = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.equal(view.edgeId, null, 'a failed proof associates nothing')
  t.equal(view.refusedEdgeIds[0].code, 'RG_ERR_AUTH')

  const unknown = encodeJoinToken({ ...token, endpointId: 'enosuchthing' })
  const err2 = await fatalOf(startAgent(t, unknown))
  t.equal(err2.code, 'RG_ERR_ENDPOINT_UNKNOWN')
})

t.test('deleting an endpoint disconnects and refuses its agents', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'doomed' })
  const keep = await api.ok('POST', '/api/endpoints', { name: 'kept' })
  const agent = startAgent(t, ep.joinToken)
  const other = startAgent(t, keep.joinToken)
  await Promise.all([agent.whenOnline(), other.whenOnline()])
  const fatal = fatalOf(agent)
  const res = await api.request('DELETE', `/api/endpoints/${ep.id}`)
  t.equal(res.status, 204)
  t.equal((await fatal).code, 'RG_ERR_ENDPOINT_DELETED')
  const again = await fatalOf(startAgent(t, ep.joinToken, { edgeId: agent.edgeId }))
  t.equal(again.code, 'RG_ERR_ENDPOINT_DELETED', 'coming back is refused: the server still knows it was deleted (a verified stop)')
  t.equal(other.state, 'online', 'other endpoints are untouched')
  t.equal((await api.request('GET', `/api/endpoints/${ep.id}`)).status, 404)
})

t.test('an unknown or revoked relay token gets the link refused', async t => {
  const { server, api, relay, relayId } = await startSite(t)
  const bogus = await new Promise<RelaygateError>((resolve, reject) => {
    buildRelay({ server: server.httpUrl, token: 'rgr_not-a-real-token', dataDir: join(tempDir(t), 'r'), host: '127.0.0.1', port: 0, tlsPort: -1 }, testLogger(), { onFatal: resolve })
      .then(r => t.teardown(() => r.destroy()), reject)
  })
  t.equal(bogus.code, 'RG_ERR_RELAY_REVOKED')

  const ep = await api.ok('POST', '/api/endpoints', { name: 'behind-relay' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  t.equal(relay.linked, true)
  t.equal((await api.request('DELETE', `/api/relays/${relayId}`)).status, 204)
  await eventually(() => !relay.linked)
  const view = await eventually(async () => {
    const v = await api.ok('GET', `/api/endpoints/${ep.id}`)
    return v.status === 'offline' ? v : undefined
  })
  t.equal(view.status, 'offline', 'agents behind a revoked relay go offline')
  const relays = await api.ok('GET', '/api/relays')
  t.match(relays, [{ id: relayId, connected: false, revoked: true }])
})

t.test('a relay speaks only for agents that authenticated through it', async t => {
  const { server, api, relayId } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'bound' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  t.equal(agent.relayId, relayId)

  // A second, legitimate relay speaking the protocol by hand.
  const second = await api.ok('POST', '/api/relays', { name: 'rogue-site' })
  const rogue = await RawClient.connect(`${server.httpUrl.replace('http', 'ws')}/relay`)
  t.teardown(() => rogue.close())
  rogue.send(frames.hello(PROTOCOL_VERSION, { role: 'relay', token: second.token, version: 'test' }))
  const hello = await rogue.next(f => f.type === FrameType.HELLO)
  t.equal(decodeHello(hello.payload).body.relayId, second.id)

  // It claims the first relay's agents went offline: nothing changes.
  rogue.send(frames.control({ t: 'offline', sids: Array.from({ length: 64 }, (_, i) => i + 1) }))
  // It tries to authenticate the endpoint without the secret: refused.
  rogue.send(frames.control({ t: 'auth-begin', sid: 1, endpointId: ep.id, edgeId: agent.edgeId }))
  const challenge = decodeJson((await rogue.next(f => f.type === FrameType.CONTROL)).payload)
  t.equal(challenge.t, 'auth-challenge')
  const wrongKey = deriveAuthKey(newSecret())
  rogue.send(frames.control({ t: 'auth-proof', sid: 1, proof: computeProof(wrongKey, { nonce: challenge.nonce as string, endpointId: ep.id, edgeId: agent.edgeId, relayId: second.id }), agentNonce: 'bm9uY2U' }))
  const result = decodeJson((await rogue.next(f => f.type === FrameType.CONTROL)).payload)
  t.match(result, { t: 'auth-result', sid: 1, ok: false, code: 'RG_ERR_AUTH' })
  // A second proof for the same nonce is not even considered.
  rogue.send(frames.control({ t: 'auth-proof', sid: 1, proof: 'eA', agentNonce: 'bm9uY2U' }))
  const replay = decodeJson((await rogue.next(f => f.type === FrameType.CONTROL)).payload)
  t.match(replay, { ok: false, code: 'RG_ERR_AUTH' })

  const view = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.equal(view.status, 'online')
  t.equal(view.relayId, relayId)
  const relays = await api.ok('GET', '/api/relays')
  t.match(relays.find((r: { id: string }) => r.id === second.id), { connected: true, agents: 0 })
})

t.test('a re-issued join token: agents with the old one are stopped and refused, the new one works (same edge id)', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'rekeyed' })
  const dataDir = join(tempDir(t), 'agent')
  const old = startAgent(t, ep.joinToken, { dataDir })
  await old.whenOnline()
  const stopped = fatalOf(old)
  const reissued = await api.ok('POST', `/api/endpoints/${ep.id as string}/join-token`)
  t.not(reissued.joinToken, ep.joinToken)
  t.match(reissued.warning, /old join token no longer works/)
  const err = await stopped
  t.equal(err.code, 'RG_ERR_AUTH', 'the online agent is stopped by a verified order')
  t.match(err.message, /re-issued/)
  const again = startAgent(t, ep.joinToken, { dataDir: join(tempDir(t), 'again') })
  t.equal((await fatalOf(again)).code, 'RG_ERR_AUTH', 'the old token is refused')
  const renewed = startAgent(t, reissued.joinToken, { dataDir })
  await renewed.whenOnline()
  t.equal(renewed.edgeId, old.edgeId, 'the same machine, with the new token')
  t.equal((await api.request('POST', '/api/endpoints/e_nope/join-token')).status, 404)
})

t.test('an agent started with --tag adds its tags to its endpoint', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'self-tagged', tags: ['given'] })
  await startAgent(t, ep.joinToken, { tags: ['site-x', 'db'] }).whenOnline()
  const tagged = await eventually(async () => {
    const e = await api.ok('GET', `/api/endpoints/${ep.id as string}`)
    return e.tags.length === 3 ? e : null
  }, 10_000)
  t.same(tagged.tags, ['given', 'site-x', 'db'], 'added, the admin\'s kept')
  const audit = await eventually(async () => { const found = await api.ok('GET', `/api/audit?action=endpoint.self-tag&target=${ep.id as string}`); return found.length > 0 ? found : null })
  t.match(audit[0], { token: null, result: 'ok', detail: { added: ['site-x', 'db'] } }, 'in the audit log, by no token')
  t.throws(() => startAgent(t, ep.joinToken, { tags: ['not a tag'] }), { code: 'RG_ERR_CONFIG' })
})
