import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { WebSocketServer, type WebSocket } from 'ws'
import { start, readyFile, type Child } from '../helpers/child.js'
import { Api, tempDir, startAgent, eventually } from '../helpers/cluster.js'
import { RawClient } from '../helpers/raw.js'
import { messageSamples, confused, prng, type Sample } from '../helpers/message-samples.js'
import {
  FrameDecoder, FrameType, PROTOCOL_VERSION, DEFAULT_MAX_PAYLOAD, ErrorCode, frames, encodeFrame, encodeHello
} from '../../protocol/index.js'
import { AgentHelloSchema, RelayHelloSchema, DEFAULT_SETTINGS } from '../../protocol/messages.js'
import { messageSet, Type } from '../../protocol/schema.js'
import type { TObject } from '@sinclair/typebox'

/**
 * Thousands of type-confused messages at a real server and a real relay
 * (child processes): each peer that sends one is closed with the
 * protocol-error code, no process exits, RSS stays flat, and a legitimate
 * agent stays online throughout.
 */
const PROTOCOL_CLOSE = ErrorCode.RG_ERR_PROTOCOL.close
const AGENT_SIDE = 2000
const SERVER_SIDE = 2000
const RELAY_SERVER_SIDE = 40
const LANES = 16
const { good } = messageSamples()
const random = prng(Number(process.env.RELAYGATE_FUZZ_SEED ?? 20261204))

/** Hellos as message sets keyed by `t` instead of `role`, so `confused()` can mutate them too (asHello() renames it back). */
const agentHellos = messageSet('agent hello', [keyedByRole(AgentHelloSchema)])
const relayHellos = messageSet('relay hello', [keyedByRole(RelayHelloSchema)])
function keyedByRole (schema: TObject): TObject {
  const { role, ...rest } = schema.properties
  return Type.Object({ t: role, ...rest }, { additionalProperties: false })
}

function rssOf (child: Child): number {
  const status = readFileSync(`/proc/${child.proc.pid!}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024
}

/** Runs `count` tasks, `lanes` at a time; returns how many closed with the protocol-error code. */
async function inLanes (count: number, lanes: number, task: (i: number, lane: number) => Promise<number>): Promise<Map<number, number>> {
  const codes = new Map<number, number>()
  let next = 0
  await Promise.all(Array.from({ length: lanes }, async (_, lane) => {
    while (next < count) {
      const code = await task(next++, lane)
      codes.set(code, (codes.get(code) ?? 0) + 1)
    }
  }))
  return codes
}

function asHello (value: unknown): Buffer {
  const body = value !== null && typeof value === 'object' && !Array.isArray(value) && 't' in value
    ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k === 't' ? 'role' : k, v]))
    : value
  return encodeFrame(FrameType.HELLO, 0, 0, encodeHello(PROTOCOL_VERSION, body as object))
}

async function closeCode (client: RawClient, timeoutMs = 10_000): Promise<number> {
  let timer: NodeJS.Timeout | undefined
  const result = await Promise.race([client.closed.then(c => c.code), new Promise<number>(resolve => { timer = setTimeout(() => resolve(-1), timeoutMs) })])
  clearTimeout(timer)
  client.close()
  return result
}

t.test('type-confused messages close only their sender, with RG_ERR_PROTOCOL; server, relays and a real agent carry on', async t => {
  const dir = tempDir(t)
  const server = start(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')])
  const s = await readyFile(server, join(dir, 'server.json'))
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const site = await api.ok('POST', '/api/relays', { name: 'site' })
  const relay = start(t, ['relay', '--server', s.httpUrl, '--token', site.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'relay'), '--ready-file', join(dir, 'relay.json')])
  const r = await readyFile(relay, join(dir, 'relay.json'))
  const ep = await api.ok('POST', '/api/endpoints', { name: 'bystander' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  let offline = 0
  agent.on('offline', () => { offline++ })

  const lanes = await Promise.all(Array.from({ length: LANES }, async (_, i) => (await api.ok('POST', '/api/relays', { name: `fuzz-${i}` })).token as string))
  const rssBefore = { server: rssOf(server), relay: rssOf(relay) }

  // The relay's agent side: a bad hello, or a good hello then a bad control message.
  const agentSamples = good['agent -> relay']
  const agentCodes = await inLanes(AGENT_SIDE, LANES, async i => {
    const client = await RawClient.connect(`${r.wsUrl as string}/agent`)
    if (i % 4 === 0) {
      client.send(asHello(confused(agentHellos, [{ t: 'agent', endpointId: ep.id, edgeId: `fuzz-${i}`, agentVersion: 'fuzz' } as Sample], random)))
    } else {
      client.send(frames.hello(PROTOCOL_VERSION, { role: 'agent', endpointId: ep.id, edgeId: `fuzz-${i}`, agentVersion: 'fuzz' }))
      client.send(frames.control(confused(agentSamples.set, agentSamples.samples, random) as object))
    }
    return await closeCode(client)
  })
  t.same([...agentCodes], [[PROTOCOL_CLOSE, AGENT_SIDE]], `all ${AGENT_SIDE} agent links closed with ${PROTOCOL_CLOSE}`)

  // The server's relay side: a bad hello, or a good hello then a bad message (one lane per relay token).
  const relaySamples = good['relay -> server']
  const wsRelay = `${(s.httpUrl as string).replace('http:', 'ws:')}/relay`
  const serverCodes = await inLanes(SERVER_SIDE, LANES, async (i, lane) => {
    const client = await RawClient.connect(wsRelay)
    if (i % 4 === 0) {
      client.send(asHello(confused(relayHellos, [{ t: 'relay', token: lanes[lane], version: 'fuzz' } as Sample], random)))
    } else {
      client.send(frames.hello(PROTOCOL_VERSION, { role: 'relay', token: lanes[lane], version: 'fuzz' }))
      await client.next(f => f.type === FrameType.HELLO)
      client.send(frames.control(confused(relaySamples.set, relaySamples.samples, random) as object))
    }
    return await closeCode(client)
  })
  t.same([...serverCodes], [[PROTOCOL_CLOSE, SERVER_SIDE]], `all ${SERVER_SIDE} relay links closed with ${PROTOCOL_CLOSE}`)

  // The relay's server side: a fake server that says hello properly, then sends one bad message per link.
  const fake = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/relay' })
  t.teardown(() => new Promise(resolve => fake.close(resolve)))
  const fakePort = await new Promise<number>(resolve => fake.on('listening', () => resolve((fake.address() as { port: number }).port)))
  const downSamples = good['server -> relay']
  const relayCodes = new Map<number, number>()
  let links = 0
  const allDone = new Promise<void>(resolve => {
    fake.on('connection', (ws: WebSocket) => {
      const decoder = new FrameDecoder(DEFAULT_MAX_PAYLOAD)
      ws.on('message', (data: Buffer) => {
        for (const f of decoder.push(data)) {
          if (f.type !== FrameType.HELLO) continue
          ws.send(frames.hello(PROTOCOL_VERSION, { role: 'server', relayId: 'rfake', settings: DEFAULT_SETTINGS, version: 'fake' }))
          ws.send(frames.control(confused(downSamples.set, downSamples.samples, random) as object))
        }
      })
      ws.on('close', code => {
        relayCodes.set(code, (relayCodes.get(code) ?? 0) + 1)
        if (++links === RELAY_SERVER_SIDE) resolve()
      })
    })
  })
  const victim = start(t, ['relay', '--server', `http://127.0.0.1:${fakePort}`, '--token', 'rgr_fake_token_for_fuzzing', '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'victim'), '--log-level', 'error'])
  await allDone
  t.same([...relayCodes], [[PROTOCOL_CLOSE, RELAY_SERVER_SIDE]], `the relay closed all ${RELAY_SERVER_SIDE} links from a bad server with ${PROTOCOL_CLOSE}`)
  t.equal(victim.exit, null, 'the relay fed by a bad server still runs (and keeps re-linking)')

  t.equal(server.exit, null, 'the server still runs')
  t.equal(relay.exit, null, 'the relay still runs')
  const rssAfter = { server: rssOf(server), relay: rssOf(relay) }
  for (const which of ['server', 'relay'] as const) {
    const grown = rssAfter[which] - rssBefore[which]
    t.ok(grown < 64 * 1024 * 1024, `${which} RSS grew ${Math.round(grown / 1024 / 1024)} MB over ${AGENT_SIDE + SERVER_SIDE} bad peers (bound 64 MB)`)
  }
  t.equal(offline, 0, 'the real agent never went offline')
  t.equal(agent.state, 'online')
  const listed = await eventually(async () => {
    const one = await api.ok('GET', `/api/endpoints/${ep.id as string}`)
    return one.status === 'online' ? one : undefined
  })
  t.equal(listed.status, 'online', 'and the server shows it online')
  const health = await (await fetch(`${(r.wsUrl as string).replace('ws:', 'http:')}/healthz`)).json()
  t.match(health, { linked: true, agents: 1 }, 'the relay kept its link and only the real agent')
})
