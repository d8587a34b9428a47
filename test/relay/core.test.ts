import t from 'tap'
import { join } from 'node:path'
import { pino } from 'pino'
import {
  Mux, MemoryTransport, FrameType, PROTOCOL_VERSION, ErrorCode, CheckinFlag, frames, decodeCheckinAnswer, decodeCodeReason, type Frame
} from '../../protocol/index.js'
import { readControl, RelayToAgent, DEFAULT_SETTINGS, type RelayToServer, type RelayToAgent as RelayToAgentMessage } from '../../protocol/messages.js'
import { RelayCore, type UpstreamLink } from '../../relay/core.js'
import { SessionState, AuthStep, CheckinBucket } from '../../relay/session.js'
import { ResultQueue } from '../../relay/results.js'
import { ArtifactCache } from '../../cache/index.js'
import { tempDir, eventually } from '../helpers/cluster.js'

/**
 * The relay's core without sockets: agent sessions over in-memory
 * transports, and a fake server link that records what the relay sends up.
 */
class FakeLink implements UpstreamLink {
  isReady = true
  relayId: string | null = 'rtest'
  settings = DEFAULT_SETTINGS
  readonly sent: RelayToServer[] = []
  send (msg: RelayToServer): boolean {
    if (!this.isReady) return false
    this.sent.push(msg)
    return true
  }

  async next<K extends RelayToServer['t']> (t: K): Promise<Extract<RelayToServer, { t: K }>> {
    return (await eventually(() => this.sent.find(m => m.t === t), 3000, 5))! as Extract<RelayToServer, { t: K }>
  }
}

/** An agent's end of a memory transport: a dialer mux that records what the relay sends. */
class FakeAgent {
  readonly mux: Mux
  readonly controls: RelayToAgentMessage[] = []
  readonly answers: Array<ReturnType<typeof decodeCheckinAnswer>> = []
  readonly errors: number[] = []
  closed: { code: number } | null = null

  constructor (transport: MemoryTransport) {
    this.mux = new Mux(transport, {
      role: 'dialer',
      onFrame: (f: Frame) => {
        if (f.type === FrameType.CONTROL) this.controls.push(readControl(f, RelayToAgent))
        if (f.type === FrameType.CHECKIN_ANSWER) this.answers.push(decodeCheckinAnswer(f.payload))
        if (f.type === FrameType.ERROR) this.errors.push(decodeCodeReason(f.payload).code)
      },
      onClose: ({ code }) => { this.closed = { code } }
    })
  }

  hello (endpointId = 'eone'): void {
    this.mux.send(frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId, edgeId: 'edge-1', agentVersion: 'test' }))
  }

  async control<K extends RelayToAgentMessage['t']> (t: K): Promise<Extract<RelayToAgentMessage, { t: K }>> {
    return (await eventually(() => this.controls.find(m => m.t === t), 3000, 5))! as Extract<RelayToAgentMessage, { t: K }>
  }

  async closedWith (): Promise<number> {
    return (await eventually(() => this.closed ?? undefined, 3000, 5))!.code
  }
}

async function setup (t: { teardown: (fn: () => unknown) => void }, opts: Partial<{ pushFlags: boolean, maxAgents: number, maxPendingAuth: number }> = {}): Promise<{ core: RelayCore, link: FakeLink, connect: () => FakeAgent }> {
  const dir = tempDir(t)
  const logger = pino({ level: 'silent' })
  const cache = new ArtifactCache({ dir: join(dir, 'cache'), maxBytes: 1 << 20, logger, fetch: async () => { throw new Error('no fills here') } })
  await cache.open()
  const link = new FakeLink()
  const core = new RelayCore({ checkinBurst: 5, checkinRatePerSecond: 1, pushFlags: opts.pushFlags ?? true, maxAgents: opts.maxAgents ?? 100, maxPendingAuth: opts.maxPendingAuth ?? 100, authTimeoutMs: 20_000 },
    link, new ResultQueue(join(dir, 'results')), cache, logger)
  t.teardown(async () => { await core.close(false); await cache.close() })
  const connect = (): FakeAgent => {
    const [relaySide, agentSide] = MemoryTransport.pair()
    relaySide.ephemeral = true // as uWebSockets.js delivers
    core.accept(relaySide)
    return new FakeAgent(agentSide)
  }
  return { core, link, connect }
}

/** Hello, challenge, proof, accepted: the agent is ready. */
async function admit (core: RelayCore, link: FakeLink, agent: FakeAgent, flags = 0): Promise<number> {
  link.sent.length = 0
  agent.hello()
  const begin = await link.next('auth-begin')
  link.sent.length = 0
  core.onMessage({ t: 'auth-challenge', sid: begin.sid, nonce: 'bm9uY2U' })
  await agent.control('challenge')
  agent.mux.send(frames.control({ t: 'proof', proof: 'cHJvb2Y', agentNonce: 'bm9uY2U' }))
  await link.next('auth-proof')
  core.onMessage({ t: 'auth-result', sid: begin.sid, ok: true, flags })
  await agent.control('welcome')
  return begin.sid
}

t.test('a session goes hello -> authenticating -> ready through the server, and check-ins are answered from the flag table', async t => {
  const { core, link, connect } = await setup(t)
  const agent = connect()
  agent.hello()
  const begin = await link.next('auth-begin')
  const session = core.agents.get(begin.sid)!
  t.equal(session.state, SessionState.AUTHENTICATING)
  t.equal(session.authStep, AuthStep.BEGUN)
  link.sent.length = 0
  core.onMessage({ t: 'auth-challenge', sid: begin.sid, nonce: 'bm9uY2U' })
  await agent.control('challenge')
  t.equal(session.authStep, AuthStep.PROVING)
  agent.mux.send(frames.control({ t: 'proof', proof: 'cHJvb2Y', agentNonce: 'bm9uY2U' }))
  t.match(await link.next('auth-proof'), { proof: 'cHJvb2Y', agentNonce: 'bm9uY2U' }, 'the agent\'s nonce goes up with its proof')
  t.equal(session.authStep, AuthStep.VERIFYING)
  core.onMessage({ t: 'auth-result', sid: begin.sid, ok: true, flags: 0 })
  const welcome = await agent.control('welcome')
  link.sent.length = 0
  t.equal(session.state, SessionState.READY)
  t.match(welcome, { endpointId: 'eone', relayId: 'rtest', intervalSeconds: 5 })
  t.ok(core.agents.mayDownload(welcome.downloadToken), 'its download token is good while it is ready')

  agent.mux.send(frames.checkin(7))
  await eventually(() => agent.answers.length === 1 || undefined, 3000, 5)
  t.same(agent.answers[0], { seq: 7, flags: 0, intervalSeconds: 5 }, 'answered by the relay, nothing sent up')
  t.same(link.sent, [], 'the server heard nothing of the check-in')
  t.equal(core.stats.checkins, 1)

  core.onMessage({ t: 'flags', set: [['eone', CheckinFlag.TUNNEL]] })
  await eventually(() => agent.answers.length === 2 || undefined, 3000, 5)
  t.same(agent.answers[1], { seq: 0, flags: CheckinFlag.TUNNEL, intervalSeconds: 5 }, 'a raised flag is pushed at once')
  agent.mux.send(frames.checkin(8))
  await eventually(() => agent.answers.length === 3 || undefined, 3000, 5)
  t.equal(agent.answers[2].flags, CheckinFlag.TUNNEL, 'and the next check-in carries it')
})

t.test('with pushFlags off, a tunnel offer waits for the agent\'s next check-in', async t => {
  const { core, link, connect } = await setup(t, { pushFlags: false })
  const agent = connect()
  const sid = await admit(core, link, agent)
  core.onMessage({ t: 'tunnel-offer', sid, tunnelId: 'tun1', blob: 'YmxvYg', target: null, idleTimeoutSeconds: 30, n: 1, mac: 'bWFj' })
  await new Promise(resolve => setTimeout(resolve, 30))
  t.equal(agent.controls.filter(m => m.t === 'tunnel-offer').length, 0, 'held')
  agent.mux.send(frames.checkin(1))
  t.match(await agent.control('tunnel-offer'), { tunnelId: 'tun1' }, 'delivered with the check-in answer, without the sid')
  t.notOk('sid' in (await agent.control('tunnel-offer')))
})

t.test('agent messages go up with the sid; server messages for an agent come down without it', async t => {
  const { core, link, connect } = await setup(t)
  const agent = connect()
  const sid = await admit(core, link, agent)
  link.sent.length = 0
  agent.mux.send(frames.control({ t: 'tunnel-need', mac: 'bWFj' }))
  t.same(await link.next('tunnel-need'), { t: 'tunnel-need', mac: 'bWFj', sid })
  core.onMessage({ t: 'tunnel-keepalive', sid, tunnelId: 'tun1', n: 1, mac: 'bWFj' })
  t.same(await agent.control('tunnel-keepalive'), { t: 'tunnel-keepalive', tunnelId: 'tun1', n: 1, mac: 'bWFj' })
  core.onMessage({ t: 'tunnel-keepalive', sid: sid + 1000, tunnelId: 'tun2', n: 2, mac: 'bWFj' })
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(agent.controls.filter(m => m.t === 'tunnel-keepalive').length, 1, 'a message for another sid reaches nobody')
})

t.test('a job result is stored on disk before the agent gets its ack and the server its copy', async t => {
  const { core, link, connect } = await setup(t)
  const agent = connect()
  await admit(core, link, agent)
  agent.mux.send(frames.control({ t: 'job-result', jobId: 'jone', attempt: 1, state: 'succeeded', exitCode: 0, mac: 'bWFj' }))
  t.same(await agent.control('job-result-ack'), { t: 'job-result-ack', jobId: 'jone', attempt: 1 })
  t.match(await link.next('job-result'), { key: 'jone_eone_1', endpointId: 'eone', edgeId: 'edge-1', jobId: 'jone', attempt: 1, result: { state: 'succeeded', mac: 'bWFj' } })
  core.onMessage({ t: 'job-result-ack', key: 'jone_eone_1' })
})

t.test('bad input from one agent closes it with the protocol-error code; other agents carry on', async t => {
  const { core, link, connect } = await setup(t)
  const good = connect()
  await admit(core, link, good)
  const cases: Array<[string, (a: FakeAgent) => void]> = [
    ['a control message before hello', a => a.mux.send(frames.control({ t: 'tunnel-need', mac: 'bWFj' }))],
    ['a message of an unknown kind', a => { a.hello(); a.mux.send(frames.control({ t: 'rm-rf' })) }],
    ['a field of the wrong type', a => { a.hello(); a.mux.send(frames.control({ t: 'proof', proof: 42 })) }],
    ['a proof without a challenge', a => { a.hello(); a.mux.send(frames.control({ t: 'proof', proof: 'cHJvb2Y', agentNonce: 'bm9uY2U' })) }],
    ['a check-in before authentication', a => { a.hello(); a.mux.send(frames.checkin(1)) }],
    ['a second hello', a => { a.hello(); a.hello() }],
    ['a hello of another role', a => a.mux.send(frames.hello(PROTOCOL_VERSION, { role: 'relay', version: '1' }))]
  ]
  for (const [what, send] of cases) {
    const bad = connect()
    send(bad)
    t.equal(await bad.closedWith(), ErrorCode.RG_ERR_PROTOCOL.close, what)
  }
  t.equal(good.closed, null, 'the good agent is still connected')
  t.equal(core.agents.size, 1, 'and is the only session left')
})

t.test('a refused or kicked agent is closed with the server\'s code, and reported offline once', async t => {
  const { core, link, connect } = await setup(t)
  const refused = connect()
  refused.hello('etwo')
  const begin = await link.next('auth-begin')
  core.onMessage({ t: 'auth-result', sid: begin.sid, ok: false, code: 'RG_ERR_EDGE_ID_MISMATCH', message: 'another edge id' })
  t.equal(await refused.closedWith(), ErrorCode.RG_ERR_EDGE_ID_MISMATCH.close)
  t.equal(core.stats.authFailures, 1)

  const kicked = connect()
  const sid = await admit(core, link, kicked)
  link.sent.length = 0
  core.onMessage({ t: 'kick', endpointId: 'eone', code: 'RG_ERR_ENDPOINT_DELETED', message: 'deleted' })
  t.equal(await kicked.closedWith(), ErrorCode.RG_ERR_ENDPOINT_DELETED.close)
  const offline = await link.next('offline')
  t.same(offline.sids.filter(x => x === sid), [sid], 'reported offline once, in a batch')
})

t.test('while the server link is down, agents wait for authentication (bounded), and all authenticate again on re-link', async t => {
  const { core, link, connect } = await setup(t, { maxPendingAuth: 1 })
  const ready = connect()
  const readySid = await admit(core, link, ready)
  link.isReady = false
  const waiting = connect()
  waiting.hello()
  const overflow = connect()
  overflow.hello()
  t.equal(await overflow.closedWith(), ErrorCode.RG_ERR_UPSTREAM_UNAVAILABLE.close, 'beyond the bound: told to come back')
  link.isReady = true
  link.sent.length = 0
  core.linked()
  const begins = link.sent.filter(m => m.t === 'auth-begin').map(m => (m as { sid: number }).sid)
  t.equal(begins.length, 2, 'the ready agent and the waiting one authenticate again')
  t.ok(begins.includes(readySid))
  ready.mux.send(frames.checkin(3))
  await eventually(() => ready.answers.length === 1 || undefined, 3000, 5)
  t.equal(ready.answers[0].seq, 3, 'the ready agent is served meanwhile')
})

t.test('check-ins above the rate get "slow down", then the link closes', async t => {
  const bucket = new CheckinBucket(2, 1, 0)
  t.ok(bucket.take(0))
  t.ok(bucket.take(0))
  t.notOk(bucket.take(0), 'burst spent')
  t.ok(bucket.take(1000), 'one more a second later')
  for (let i = 0; i < 8; i++) bucket.take(1000)
  t.ok(bucket.abusive, 'far above the rate')

  const { core, link, connect } = await setup(t)
  const agent = connect()
  await admit(core, link, agent)
  for (let i = 0; i < 40; i++) agent.mux.send(frames.checkin(i + 1))
  t.equal(await agent.closedWith(), ErrorCode.RG_ERR_RATE_LIMIT.close)
  t.ok(agent.errors.includes(ErrorCode.RG_ERR_RATE_LIMIT.close), 'told to slow down first')
})

t.test('a closing relay refuses new agents with a go-away and closes the others with it', async t => {
  const { core, link, connect } = await setup(t)
  const agent = connect()
  await admit(core, link, agent)
  await core.close(true)
  t.equal(await agent.closedWith(), ErrorCode.RG_ERR_GOING_AWAY.close)
  const late = connect()
  t.equal(await late.closedWith(), ErrorCode.RG_ERR_GOING_AWAY.close)
})
