import t from 'tap'
import { VERSION } from '../../common/version.js'
import { deriveE2eKeys, reportMac } from '../../protocol/messages.js'
import { join } from 'node:path'
import WebSocket, { WebSocketServer } from 'ws'
import type { AddressInfo } from 'node:net'
import {
  startSite, startServer, startRelay, startAgent, startTarget, eventually, tempDir, freePort, capturingLogger
} from '../helpers/cluster.js'
import { RawClient } from '../helpers/raw.js'
import { frames, FrameType, PROTOCOL_VERSION, decodeJson } from '../../protocol/index.js'
import { decodeJoinToken } from '../../protocol/token.js'
import { computeProof, deriveAuthKey } from '../../protocol/auth.js'
import { deriveCredentialKey, deriveTunnelRoot, openCredential, tunnelProof } from '../../protocol/tunnel-crypto.js'
import type { RelaygateError } from '../../protocol/errors.js'

t.test('raise, wait, inspect and close a tunnel through the API', async t => {
  const target = await startTarget(t)
  const { api, relayId } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'api-driven', tunnelTarget: target.url })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state, 'closed')

  const opened = await api.request('POST', `/api/endpoints/${ep.id}/tunnel?wait=10`)
  t.equal(opened.status, 200)
  t.match(opened.body, { state: 'open', relayId, edgeId: agent.edgeId })
  await eventually(() => agent.tunnel.isOpen)
  const again = await api.request('POST', `/api/endpoints/${ep.id}/tunnel`)
  t.equal(again.status, 202, 'raising an open tunnel is harmless')
  t.equal(again.body.state, 'open')

  t.equal((await api.request('DELETE', `/api/endpoints/${ep.id}/tunnel`)).status, 204)
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state, 'closed')
  await eventually(() => !agent.tunnel.isOpen)
  t.pass('the agent closed its side')

  t.equal((await api.request('POST', `/api/endpoints/${ep.id}/tunnel?wait=abc`)).body.error.code, 'RG_ERR_BAD_REQUEST')
  t.equal((await api.request('POST', '/api/endpoints/enope/tunnel')).status, 404)
  const lonely = await api.ok('POST', '/api/endpoints', { name: 'nobody-home' })
  const timeout = await api.request('POST', `/api/endpoints/${lonely.id}/tunnel?wait=0.3`)
  t.equal(timeout.status, 504)
  t.equal(timeout.body.error.code, 'RG_ERR_TUNNEL_TIMEOUT')
  t.equal((await api.ok('GET', `/api/endpoints/${lonely.id}`)).tunnel.state, 'requested', 'the flag stays up for when it comes online')
})

t.test('idle tunnels close after a snapshot; an open admin session keeps them with keep-alives', async t => {
  const echo = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  echo.on('connection', ws => ws.on('message', (data, binary) => ws.send(data, { binary })))
  await new Promise(resolve => echo.once('listening', resolve))
  t.teardown(() => new Promise(resolve => { for (const c of echo.clients) c.terminate(); echo.close(resolve) }))
  const { api, server } = await startSite(t, { server: { tunnelAdminWindowMs: 200 } })
  await api.ok('PATCH', '/api/settings', { tunnelIdleTimeoutSeconds: 2, keepAliveSeconds: 1 })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'sleepy', tunnelTarget: `http://127.0.0.1:${(echo.address() as AddressInfo).port}` })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()

  // Keep-alive: a proxied WebSocket stays open and silent for three idle periods.
  const ws = new WebSocket(`${server.httpUrl.replace('http', 'ws')}/api/endpoints/${ep.id}/proxy/`, { headers: { authorization: `Bearer ${api.token}` } })
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const openedAt = Date.now()
  await eventually(() => Date.now() - openedAt > 6000, 8000, 250)
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state, 'open', 'still open after 3 idle timeouts thanks to keep-alives')
  const reply = new Promise<string>(resolve => ws.once('message', data => resolve(String(data))))
  ws.send('still there?')
  t.equal(await reply, 'still there?')
  ws.close()

  // Idle: nobody is active any more; the agent sends a snapshot, then closes.
  const snapshotSent = new Promise<{ reason: string }>(resolve => agent.on('snapshot', (e: { reason: string }) => { if (e.reason === 'tunnel-close') resolve(e) }))
  await snapshotSent
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state === 'closed', 10_000)
  const snap = await eventually(async () => {
    const res = await api.request('GET', `/api/endpoints/${ep.id}/snapshot`)
    return res.status === 200 && res.body.reason === 'tunnel-close' ? res.body : undefined
  })
  t.match(snap, { endpointId: ep.id, edgeId: agent.edgeId, reason: 'tunnel-close', snapshot: { hostname: String, os: String, agentVersion: String, memory: { totalBytes: Number } } })
  t.match((await api.ok('GET', `/api/endpoints/${ep.id}`)).snapshot, { reason: 'tunnel-close', hostname: String })
})

t.test('agents send a snapshot on connect, including what their target says about itself', async t => {
  const target = await startTarget(t, 'docker-ish')
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'snap' })
  const agent = startAgent(t, ep.joinToken, { tunnelTarget: target.url })
  await agent.whenOnline()
  const snap = await eventually(async () => {
    const res = await api.request('GET', `/api/endpoints/${ep.id}/snapshot`)
    return res.status === 200 ? res.body : undefined
  })
  t.equal(snap.reason, 'connect')
  t.match(snap.snapshot.target, { target: target.url, status: 200 })
  const listed = (await api.ok('GET', '/api/endpoints?q=snap'))[0]
  t.equal(listed.agentVersion, snap.snapshot.agentVersion, 'the list shows the version the agent runs')
  t.equal(listed.agentVersion, VERSION)
  t.ok(target.hits.includes('/info'), 'the agent asked its target for /info')
})

t.test('one-time credentials: a replay, a stale tunnel id and a wrong proof are refused', async t => {
  const { api, server, relay } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'replayed' })
  const token = decodeJoinToken(ep.joinToken)
  const client = await RawClient.connect(`${relay.wsUrl!}/agent`)
  t.teardown(() => client.close())
  const edgeId = '3b241101-e2bb-4255-8caf-4136c566a962'
  client.send(frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId: ep.id, edgeId, agentVersion: 'raw' }))
  const challenge = decodeJson((await client.next(f => f.type === FrameType.CONTROL)).payload)
  const relayId = challenge.relayId as string
  client.send(frames.control({ t: 'proof', proof: computeProof(deriveAuthKey(token.secret), { nonce: challenge.nonce as string, endpointId: ep.id, edgeId, relayId }), agentNonce: 'bm9uY2U' }))
  t.equal(decodeJson((await client.next(f => f.type === FrameType.CONTROL)).payload).t, 'welcome')
  const control = async (): Promise<Record<string, unknown>> => decodeJson((await client.next(f => f.type === FrameType.CONTROL && !['welcome', 'agent-settings'].includes(decodeJson(f.payload).t as string))).payload)
  // Reports carry the agent's end-to-end MAC (a raw client computes it as the agent does).
  const e2e = deriveE2eKeys(deriveTunnelRoot(token.secret), edgeId)
  const report = (msg: Record<string, unknown>): Buffer => frames.control({ ...msg, mac: reportMac(e2e, { endpointId: ep.id, edgeId }, msg) })

  server.tunnels.request(ep.id)
  const offer = await control()
  t.equal(offer.t, 'tunnel-offer')
  const key = deriveCredentialKey(deriveTunnelRoot(token.secret), edgeId)
  const { credential } = openCredential(key, ep.id, edgeId, offer.tunnelId as string, offer.blob as string)
  t.throws(() => openCredential(deriveCredentialKey(deriveTunnelRoot(token.secret), 'another-edge-id'), ep.id, 'another-edge-id', offer.tunnelId as string, offer.blob as string),
    { code: 'RG_ERR_AUTH' }, 'sealed for this edge id only')

  const wrong = tunnelProof(credential, { tunnelId: offer.tunnelId as string, endpointId: ep.id, edgeId, relayId: 'r-elsewhere' })
  client.send(report({ t: 'tunnel-open', tunnelId: offer.tunnelId, proof: wrong }))
  t.match(await control(), { t: 'tunnel-result', ok: false, code: 'RG_ERR_AUTH' }, 'a proof bound to another relay fails')

  const proof = tunnelProof(credential, { tunnelId: offer.tunnelId as string, endpointId: ep.id, edgeId, relayId })
  const open = report({ t: 'tunnel-open', tunnelId: offer.tunnelId, proof })
  client.send(open)
  t.match(await control(), { t: 'tunnel-result', tunnelId: offer.tunnelId, ok: true })
  client.send(open)
  t.match(await control(), { t: 'tunnel-result', ok: false, code: 'RG_ERR_CREDENTIAL_USED' }, 'a replay is refused')
  server.tunnels.closeTunnel(ep.id)
  t.match(await control(), { t: 'tunnel-close', tunnelId: offer.tunnelId })
  client.send(open)
  t.match(await control(), { t: 'tunnel-result', ok: false, code: 'RG_ERR_CREDENTIAL_USED' }, 'retired when the tunnel closed')
})

t.test('a relay that logs everything it forwards never holds tunnel credentials or secrets in clear', async t => {
  const target = await startTarget(t)
  const { logger, lines } = capturingLogger('trace')
  const { api } = await startSite(t, { relayLogger: logger })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'watched', tunnelTarget: target.url })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const res = await api.request('GET', `/api/endpoints/${ep.id}/proxy/hi`)
  t.equal(res.status, 200)
  const offers = lines.map(l => JSON.parse(l) as { forward?: { t?: string, tunnelId?: string, blob?: string } }).filter(l => l.forward?.t === 'tunnel-offer')
  t.equal(offers.length, 1, 'the relay did log the offer it forwarded')
  const token = decodeJoinToken(ep.joinToken)
  const offer = offers[0].forward!
  const { credential } = openCredential(deriveCredentialKey(deriveTunnelRoot(token.secret), agent.edgeId), ep.id, agent.edgeId, offer.tunnelId!, offer.blob!)
  const all = lines.join('\n')
  t.notOk(all.includes(credential), 'the credential never appears at the relay')
  t.notOk(all.includes(Buffer.from(credential, 'base64url').toString('hex')), 'not even in hex')
  t.notOk(all.includes(token.secret), 'nor the endpoint secret')
  t.notOk(all.includes(api.token), 'nor the admin token')
})

t.test('a cluster of 3 agents: one tunnel, and failover to a survivor when its agent dies', async t => {
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'swarm', maxAgents: 3 })
  t.equal(ep.maxAgents, 3)
  const targets = await Promise.all(['node-1', 'node-2', 'node-3'].map(name => startTarget(t, name)))
  const agents = targets.map(target => startAgent(t, ep.joinToken, { tunnelTarget: target.url }))
  await Promise.all(agents.map(a => a.whenOnline()))
  const view = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.equal(view.agents.length, 3)
  t.ok(view.agents.every((a: { status: string }) => a.status === 'online'), 'all three members online')
  const fourth = startAgent(t, ep.joinToken)
  const refused = await new Promise<RelaygateError>(resolve => fourth.once('fatal', resolve))
  t.equal(refused.code, 'RG_ERR_EDGE_ID_MISMATCH', 'a fourth edge id is refused')

  const first = await api.request('GET', `/api/endpoints/${ep.id}/proxy/who`)
  t.equal(first.status, 200)
  t.equal(agents.filter(a => a.tunnel.isOpen).length, 1, 'exactly one member holds the tunnel')
  const owner = agents.find(a => a.tunnel.isOpen)!
  t.same(targets[agents.indexOf(owner)].hits.filter(h => h === '/who'), ['/who'], 'the owner\'s target served the request')
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.edgeId, owner.edgeId)

  await owner.destroy()
  const second = await eventually(async () => {
    const res = await api.request('GET', `/api/endpoints/${ep.id}/proxy/who`)
    return res.status === 200 ? res : undefined
  }, 15_000)
  const survivor = agents.find(a => a !== owner && a.tunnel.isOpen)
  t.ok(survivor !== undefined, 'a surviving member took the tunnel')
  t.not(second?.body.name, first.body.name, 'served by another node')
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.edgeId, survivor!.edgeId)

  // Replacing a dead node: free its place, a new edge id may join.
  t.equal((await api.request('DELETE', `/api/endpoints/${ep.id}/agents/${owner.edgeId}`)).status, 204)
  const replacement = startAgent(t, ep.joinToken)
  await replacement.whenOnline()
  t.pass('a replacement node joined in the freed place')
})

t.test('the tunnel re-opens after a relay restart while the flag is up', async t => {
  const target = await startTarget(t)
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'bouncy' })
  const dataDir = join(tempDir(t), 'relay')
  const port = await freePort()
  const tlsPort = await freePort()
  const first = await startRelay(t, server.httpUrl, created.token, { dataDir, port, tlsPort })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'persistent-tunnel', tunnelTarget: target.url })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  t.equal((await api.request('GET', `/api/endpoints/${ep.id}/proxy/one`)).status, 200)
  const before = (await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.tunnelId

  await first.destroy()
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state === 'requested')
  await startRelay(t, server.httpUrl, created.token, { dataDir, port, tlsPort })
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state === 'open', 20_000)
  const after = (await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.tunnelId
  t.not(after, before, 'new one-time credentials for the new tunnel')
  const res = await api.request('GET', `/api/endpoints/${ep.id}/proxy/two`)
  t.equal(res.status, 200)
  t.same(target.hits.filter(h => h === '/one' || h === '/two'), ['/one', '/two'])
})
