import t from 'tap'
import { randomUUID } from 'node:crypto'
import { startSite, startAgent, eventually } from '../helpers/cluster.js'
import { RawClient } from '../helpers/raw.js'
import { frames, FrameType, PROTOCOL_VERSION, ErrorCode, decodeJson } from '../../protocol/index.js'
import { decodeJoinToken } from '../../protocol/token.js'

/**
 * Floods of wrong proofs and cloned machines. Before: 400 bad proofs in
 * 0.34 s for one endpoint were all checked, and pushed the evidence of a
 * cloned join token out of the endpoint's 50 refusals; a clone with the
 * same edge id came online beside the original with nothing shown.
 */

/** One authentication with a wrong proof from `localAddress`; the close code the relay gives. */
async function wrongProof (relayUrl: string, endpointId: string, localAddress: string): Promise<number> {
  const client = await RawClient.connect(`${relayUrl}/agent`, { localAddress })
  client.send(frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId, edgeId: randomUUID(), agentVersion: 'flood' }))
  const first = await Promise.race([client.next(f => f.type === FrameType.CONTROL, 10_000).then(f => decodeJson(f.payload)), client.closed.then(() => null)])
  if (first !== null && first.t === 'challenge') client.send(frames.control({ t: 'proof', proof: 'd3Jvbmc', agentNonce: 'bm9uY2U' }))
  const { code } = await client.closed
  return code
}

t.test('a flood of wrong proofs is cut short at the relay and the server, and a cloned token\'s evidence stays visible', async t => {
  const { api, relay } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'target' })
  const owner = startAgent(t, ep.joinToken)
  await owner.whenOnline()
  // A copy of the join token on another machine: refused, and recorded.
  const clone = startAgent(t, ep.joinToken, { edgeId: randomUUID(), giveUpAfterMs: 0 })
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id}`)).refusedEdgeIds.some((r: any) => r.code === 'RG_ERR_EDGE_ID_MISMATCH') || undefined)
  await clone.destroy()

  const { endpointId } = decodeJoinToken(ep.joinToken)
  const peers = Array.from({ length: 20 }, (_, i) => `127.0.0.${20 + i}`)
  const codes: number[] = []
  const started = Date.now()
  await Promise.all(peers.map(async peer => {
    for (let i = 0; i < 20; i++) codes.push(await wrongProof(relay.wsUrl!, endpointId, peer))
  }))
  const seconds = (Date.now() - started) / 1000
  const checked = codes.filter(c => c === ErrorCode.RG_ERR_AUTH.close).length
  const limited = codes.filter(c => c === ErrorCode.RG_ERR_RATE_LIMIT.close).length
  t.equal(codes.length, 400)
  t.ok(checked <= 20 + Math.ceil(seconds * 0.5) + 1, `only the server's burst of proofs was checked (${checked} in ${seconds.toFixed(1)} s)`)
  t.equal(checked + limited, 400, 'every other attempt was refused with RG_ERR_RATE_LIMIT')

  const metrics = await (await fetch(relay.wsUrl!.replace('ws:', 'http:') + '/metrics')).text()
  const turnedAway = Number(/^relaygate_relay_peers_turned_away_total (\d+)/m.exec(metrics)?.[1])
  t.ok(turnedAway > 0, `peers sending wrong proofs were turned away by the relay itself (${turnedAway})`)

  const view = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.ok(view.refusedEdgeIds.some((r: any) => r.code === 'RG_ERR_EDGE_ID_MISMATCH' && r.edgeId === clone.edgeId), 'the clone\'s refusal is still there')
  const wrong = view.refusedEdgeIds.filter((r: any) => r.code === 'RG_ERR_AUTH')
  t.ok(wrong.length <= 21, `wrong proofs are aggregated (${wrong.length} rows)`)
  t.equal(wrong.reduce((n: number, r: any) => n + r.count, 0), checked, 'and counted')
  t.ok(view.refusedEdgeIds.some((r: any) => r.code === 'RG_ERR_RATE_LIMIT'), 'the rate limit shows too')
  t.equal(owner.state, 'online', 'the endpoint\'s own agent stayed online')
})

t.test('a cloned machine (same edge id and token) replaces the older session; the duplicate is recorded and visible', async t => {
  const { api, server } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'cloned-vm' })
  const edgeId = randomUUID()
  const original = startAgent(t, ep.joinToken, { edgeId })
  await original.whenOnline()
  const copy = startAgent(t, ep.joinToken, { edgeId })
  await copy.whenOnline()
  await original.destroy()
  await eventually(() => server.hub.agentsOf(ep.id).length === 1 || undefined)
  const view = await eventually(async () => {
    const v = await api.ok('GET', `/api/endpoints/${ep.id}`)
    return v.refusedEdgeIds.find((r: any) => r.code === 'RG_ERR_REPLACED' && r.edgeId === edgeId) !== undefined ? v : undefined
  })
  t.match(view.refusedEdgeIds.find((r: any) => r.code === 'RG_ERR_REPLACED'), { edgeId, count: Number })
  await eventually(() => copy.state === 'online' || undefined)
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).status, 'online')
  t.equal(server.hub.agentsOf(ep.id).length, 1, 'one live session for the edge id')
})
