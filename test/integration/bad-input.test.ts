import t from 'tap'
import { startSite, startAgent, capturingLogger, eventually } from '../helpers/cluster.js'
import { RawClient } from '../helpers/raw.js'
import {
  frames, FrameType, PROTOCOL_VERSION, HEADER_SIZE, encodeFrame, encodeHello, decodeJson, decodeCodeReason, ErrorCode
} from '../../protocol/index.js'
import { decodeJoinToken } from '../../protocol/token.js'
import { computeProof, deriveAuthKey } from '../../protocol/auth.js'

/** Every malformed input closes that one peer with its code; the relay lives on. */
const cases: Array<{ name: string, send: (c: RawClient) => void, code: number }> = [
  { name: 'garbage bytes', send: c => c.send(Buffer.from('definitely not a frame')), code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'unknown frame type', send: c => c.send(Buffer.from([0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0])), code: ErrorCode.RG_ERR_PROTOCOL.close },
  {
    name: 'oversized frame header',
    send: c => {
      const header = Buffer.alloc(HEADER_SIZE)
      header[0] = FrameType.CONTROL
      header.writeUInt32BE(10 * 1024 * 1024, 6)
      c.send(header)
    },
    code: ErrorCode.RG_ERR_FRAME_TOO_LARGE.close
  },
  { name: 'incompatible version', send: c => c.send(encodeFrame(FrameType.HELLO, 0, 0, encodeHello(PROTOCOL_VERSION + 1, { role: 'agent', endpointId: 'e', edgeId: 'x' }))), code: ErrorCode.RG_ERR_VERSION.close },
  { name: 'hello that is not JSON', send: c => c.send(encodeFrame(FrameType.HELLO, 0, 0, Buffer.from([0, 1, 0x7b, 0x7b]))), code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'hello missing fields', send: c => c.send(frames.hello(PROTOCOL_VERSION, { role: 'agent' })), code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'check-in before authentication', send: c => c.send(frames.checkin(1)), code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'control before hello', send: c => c.send(frames.control({ t: 'proof', proof: 'x' })), code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'text message', send: c => c.ws.send('hello'), code: ErrorCode.RG_ERR_PROTOCOL.close },
  // Truncated frames waited for the 20 s authentication timeout.
  { name: 'a frame header alone', send: c => c.send(encodeFrame(FrameType.HELLO, 0, 0, Buffer.alloc(40)).subarray(0, HEADER_SIZE)), code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'a hello cut short', send: c => { const f = frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId: 'e', edgeId: 'x' }); c.send(f.subarray(0, f.length - 3)) }, code: ErrorCode.RG_ERR_PROTOCOL.close },
  { name: 'half a header', send: c => c.send(Buffer.from([FrameType.HELLO, 0, 0, 0])), code: ErrorCode.RG_ERR_PROTOCOL.close }
]

t.test('malformed input from an agent closes that agent only, with a protocol close code', async t => {
  const { api, relay } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'bystander' })
  const bystander = startAgent(t, ep.joinToken)
  await bystander.whenOnline()
  for (const c of cases) {
    const client = await RawClient.connect(`${relay.wsUrl!}/agent`)
    t.teardown(() => client.close())
    c.send(client)
    const { code } = await client.closed
    t.equal(code, c.code, c.name)
  }
  t.equal(bystander.state, 'online', 'other agents are unaffected')
  const res = await fetch(relay.wsUrl!.replace('ws:', 'http:') + '/healthz')
  t.match(await res.json(), { ok: true, linked: true, agents: 1 })
})

t.test('a 1.5 MB WebSocket message gets our close code (uWS closed it without one); above 2 MiB it is cut unread and recorded', async t => {
  const { logger, lines } = capturingLogger('info')
  const { api, relay } = await startSite(t, { relayLogger: logger })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'bystander' })
  const bystander = startAgent(t, ep.joinToken)
  await bystander.whenOnline()

  const big = await RawClient.connect(`${relay.wsUrl!}/agent`)
  t.teardown(() => big.close())
  // A frame header announcing 1.5 MB of payload, with the payload: one message.
  const frame = Buffer.alloc(HEADER_SIZE + 1_500_000)
  frame[0] = FrameType.HELLO
  frame.writeUInt32BE(1_500_000, 6)
  big.send(frame)
  t.equal((await big.closed).code, ErrorCode.RG_ERR_FRAME_TOO_LARGE.close, '1.5 MB: RG_ERR_FRAME_TOO_LARGE')

  const huge = await RawClient.connect(`${relay.wsUrl!}/agent`)
  t.teardown(() => huge.close())
  huge.send(Buffer.alloc(3 * 1024 * 1024))
  t.equal((await huge.closed).code, 1006, 'above 2 MiB: no close frame (uWS drops the socket without buffering the message: memory stays bounded)')
  const line = await eventually(() => lines.find(l => l.includes('RG_ERR_FRAME_TOO_LARGE') && l.includes('above the limit')), 5000)
  t.match(JSON.parse(line as string), { level: 40, msg: 'agent cut: a WebSocket message above the limit' })
  t.equal(bystander.state, 'online', 'other agents are unaffected')
})

t.test('an agent checking in far too often is told, then disconnected', async t => {
  const { api, relay } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'chatty' })
  const token = decodeJoinToken(ep.joinToken)
  const client = await RawClient.connect(`${relay.wsUrl!}/agent`)
  t.teardown(() => client.close())
  const edgeId = '6f1c1d0e-7d7a-4a43-9d53-2d1d6c0f5a11'
  client.send(frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId: token.endpointId, edgeId, agentVersion: 'raw' }))
  const challenge = decodeJson((await client.next(f => f.type === FrameType.CONTROL)).payload)
  t.equal(challenge.t, 'challenge')
  const proof = computeProof(deriveAuthKey(token.secret), { nonce: challenge.nonce as string, endpointId: token.endpointId, edgeId, relayId: challenge.relayId as string })
  client.send(frames.control({ t: 'proof', proof, agentNonce: 'bm9uY2U' }))
  const welcome = decodeJson((await client.next(f => f.type === FrameType.CONTROL)).payload)
  t.equal(welcome.t, 'welcome')

  client.send(frames.checkin(1))
  const answer = await client.next(f => f.type === FrameType.CHECKIN_ANSWER)
  t.equal(answer.payload.readUInt16BE(0), 1, 'a normal check-in is answered with its sequence number')
  for (let i = 2; i < 200; i++) client.send(frames.checkin(i))
  const warning = await client.next(f => f.type === FrameType.ERROR)
  t.equal(decodeCodeReason(warning.payload).code, ErrorCode.RG_ERR_RATE_LIMIT.close, 'told to slow down first')
  const { code } = await client.closed
  t.equal(code, ErrorCode.RG_ERR_RATE_LIMIT.close, 'then disconnected')
})

t.test('an agent that never finishes authentication is dropped', async t => {
  const { relay } = await startSite(t, { relay: { authTimeoutMs: 300 } })
  const client = await RawClient.connect(`${relay.wsUrl!}/agent`)
  t.teardown(() => client.close())
  const { code } = await client.closed
  t.equal(code, ErrorCode.RG_ERR_LIVENESS.close)
})

t.test('bad relay hellos get the relay link refused with a code; the server lives on', async t => {
  const { server, api } = await startSite(t)
  const url = `${server.httpUrl.replace('http', 'ws')}/relay`
  const versions = await RawClient.connect(url)
  versions.send(frames.hello(PROTOCOL_VERSION + 7, { role: 'relay', token: 'x' }))
  t.equal((await versions.closed).code, ErrorCode.RG_ERR_VERSION.close)
  const agentHere = await RawClient.connect(url)
  agentHere.send(frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId: 'e', edgeId: 'x' }))
  t.equal((await agentHere.closed).code, ErrorCode.RG_ERR_PROTOCOL.close)
  const junk = await RawClient.connect(url)
  junk.send(Buffer.from([0xee, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]))
  t.equal((await junk.closed).code, ErrorCode.RG_ERR_PROTOCOL.close)
  const health = await fetch(server.httpUrl + '/healthz')
  t.equal(health.status, 200)
  t.equal((await api.ok('GET', '/api/relays'))[0].connected, true, 'the real relay is still linked')
})
