import t from 'tap'
import type { TSchema } from '@sinclair/typebox'
import {
  AgentToRelay, RelayToAgent, RelayToServer, ServerToRelay, ServerStreams, RelayStreams,
  Hellos, DEFAULT_SETTINGS, parseSettings, decodeArtifactHeader, encodeArtifactHeader, helloFrame, readHello
} from '../../protocol/messages.js'
import { RelaygateError, FrameType, PROTOCOL_VERSION, encodeFrame, encodeHello, decodeAll } from '../../protocol/index.js'
import type { MessageSet } from '../../protocol/schema.js'
import { messageSamples } from '../helpers/message-samples.js'

type MessageSetLike = MessageSet<TSchema>
type Test = Pick<typeof t, 'ok' | 'equal' | 'fail' | 'match'>

const { sha, jobResult, good } = messageSamples()

function refused (t: Test, set: MessageSetLike, value: unknown, field: string | null, what: string): void {
  try {
    set.parse(value)
    t.fail(`${what}: accepted`)
  } catch (err) {
    t.ok(err instanceof RelaygateError, `${what}: a RelaygateError`)
    t.equal((err as RelaygateError).code, 'RG_ERR_PROTOCOL', `${what}: RG_ERR_PROTOCOL`)
    t.equal((err as RelaygateError).closeCode, 4000, `${what}: protocol-error close code`)
    if (field !== null) t.match((err as Error).message, `field ${field}`, `${what}: the error names ${field}`)
  }
}

/** A value of another JSON type than `v` (what a type-confused peer sends). */
function confuse (v: unknown): unknown {
  if (typeof v === 'string') return 12345
  if (typeof v === 'number') return String(v)
  if (typeof v === 'boolean') return 'true'
  if (Array.isArray(v)) return { 0: v[0] }
  if (v === null) return 0
  return [v]
}

function schemaOf (set: MessageSetLike, sample: Record<string, unknown>): TSchema {
  return set.schemas.get(sample.t as string)!
}

/** Properties of a kind's schema (for auth-result, the variant the sample matches). */
function propertiesOf (schema: TSchema, sample: Record<string, unknown>): Record<string, TSchema & { maxLength?: number, pattern?: string }> {
  const s = schema as unknown as { properties?: Record<string, TSchema>, anyOf?: Array<{ properties: Record<string, TSchema & { const?: unknown }> }> }
  if (s.properties !== undefined) return s.properties
  return s.anyOf!.find(v => v.properties.ok.const === sample.ok)!.properties
}

for (const [direction, { set, samples }] of Object.entries(good)) {
  t.test(`${direction}: every kind has a sample, and each parses to itself`, async t => {
    t.same(new Set(samples.map(s => s.t)), new Set(set.kinds), 'one sample per kind, no kind left out')
    for (const sample of samples) t.same(set.parse(structuredClone(sample)), sample, `${String(sample.t)} parses`)
  })

  t.test(`${direction}: bad messages are refused with RG_ERR_PROTOCOL naming the field`, async t => {
    refused(t, set, { t: 'no-such-message' }, 't', 'unknown t')
    refused(t, set, { nope: 1 }, 't', 'no t')
    refused(t, set, [samples[0]], null, 'an array')
    refused(t, set, 'text', null, 'a string')
    refused(t, set, null, null, 'null')
    for (const sample of samples) {
      const kind = String(sample.t)
      refused(t, set, { ...sample, extra: 1 }, 'extra', `${kind}: extra field`)
      const props = propertiesOf(schemaOf(set, sample), sample)
      for (const [name, prop] of Object.entries(props)) {
        if (name === 't') continue
        const optional = (prop as unknown as Record<symbol, unknown>)[Symbol.for('TypeBox.Optional')] === 'Optional'
        if (!optional) {
          const missing = { ...sample }
          delete missing[name]
          refused(t, set, missing, name, `${kind}: missing ${name}`)
        }
        if (sample[name] === undefined) continue
        refused(t, set, { ...sample, [name]: confuse(sample[name]) }, name, `${kind}: ${name} of the wrong type`)
        if (typeof sample[name] === 'string' && prop.maxLength !== undefined) {
          refused(t, set, { ...sample, [name]: 'a'.repeat(prop.maxLength + 1) }, name, `${kind}: ${name} too long`)
        }
        if (prop.pattern === '^[0-9a-f]{64}$') {
          refused(t, set, { ...sample, [name]: 'Z'.repeat(64) }, name, `${kind}: ${name} not a hex digest`)
          refused(t, set, { ...sample, [name]: sha.toUpperCase() }, name, `${kind}: ${name} in upper case`)
        }
      }
    }
  })
}

t.test('edge values: sids, sizes, ids and nested fields', async t => {
  refused(t, RelayToServer, { t: 'auth-begin', sid: 0, endpointId: 'e', edgeId: 'x' }, 'sid', 'sid 0 (never used)')
  refused(t, RelayToServer, { t: 'auth-begin', sid: 2 ** 32, endpointId: 'e', edgeId: 'x' }, 'sid', 'sid above u32')
  refused(t, RelayToServer, { t: 'auth-begin', sid: 1.5, endpointId: 'e', edgeId: 'x' }, 'sid', 'fractional sid')
  refused(t, RelayToServer, { t: 'auth-begin', sid: 1, endpointId: 'e/../x', edgeId: 'x' }, 'endpointId', 'id with a slash')
  refused(t, RelayToServer, { t: 'offline', sids: [1, 'two'] }, 'sids.1', 'a sid of the wrong type in a list')
  refused(t, RelayToServer, { t: 'offline', sids: new Array(100_001).fill(1) }, 'sids', 'a list above its bound')
  refused(t, ServerToRelay, { t: 'flags', set: [['eabc', 256]] }, 'set.0.1', 'flags above a byte')
  refused(t, ServerToRelay, { t: 'auth-result', sid: 1, ok: true }, null, 'accepted without flags')
  refused(t, ServerToRelay, { t: 'settings', settings: { ...DEFAULT_SETTINGS, checkinIntervalSeconds: 0 } }, 'settings.checkinIntervalSeconds', 'interval 0')
  refused(t, AgentToRelay, { t: 'job-result', ...jobResult, error: { code: 'rg err', message: 'x' } }, 'error.code', 'an error code that is not one')
  refused(t, AgentToRelay, { t: 'job-progress', jobId: 'j', attempt: 1, state: 'downloading', progress: 1.5, bytes: 0, mac: 'bWFj' }, 'progress', 'progress above 1')
  refused(t, AgentToRelay, { t: 'job-progress', jobId: 'j', attempt: 1, state: 'placing', progress: 1, bytes: 0, mac: 'bWFj' }, 'state', 'a state the server does not know')
  refused(t, RelayToAgent, { t: 'job', jobId: 'j', attempt: 1, sha256: sha, size: -1, path: 'x', run: null, deadline: 1, n: 1, mac: 'bWFj' }, 'size', 'negative size')
  refused(t, RelayToAgent, { t: 'job', jobId: 'j', attempt: 1, sha256: sha, size: 1, path: 'x', run: [], deadline: 1, n: 1, mac: 'bWFj' }, 'run', 'an empty argv')
  refused(t, ServerStreams, { t: 'tunnel', sid: 3, tunnelId: 't', kind: 'udp', nonce: 'bm9uY2U' }, 'kind', 'a stream kind that does not exist')
  refused(t, ServerStreams, { t: 'tunnel', sid: 3, tunnelId: 't', kind: 'tcp', port: 70000, nonce: 'bm9uY2U' }, 'port', 'a port above 65535')
  t.match(RelayToServer.parse({ t: 'auth-begin', sid: 0xffffffff, endpointId: 'e', edgeId: 'x' }), { sid: 0xffffffff }, 'the largest sid')
  t.same(RelayStreams.parse({ t: 'artifact', sha256: sha, offset: 0 }).offset, 0, 'offset 0')
  t.same(parseSettings(DEFAULT_SETTINGS), DEFAULT_SETTINGS, 'the default settings parse')
})

t.test('hellos: each side reads the other\'s, with its version and role', async t => {
  const [agentHello] = decodeAll(helloFrame({ role: 'agent', endpointId: 'eabc', edgeId: 'e-1', agentVersion: '1.0.0' }))
  t.same(readHello(agentHello, Hellos.fromAgent), { role: 'agent', endpointId: 'eabc', edgeId: 'e-1', agentVersion: '1.0.0' })
  const [serverHello] = decodeAll(helloFrame({ role: 'server', relayId: 'rabc', settings: DEFAULT_SETTINGS, version: '1.0.0' }))
  t.equal(readHello(serverHello, Hellos.fromServer).relayId, 'rabc')
  const cases: Array<[string, Buffer, string, object]> = [
    ['another version', encodeFrame(FrameType.HELLO, 0, 0, encodeHello(PROTOCOL_VERSION + 1, { role: 'agent' })), 'RG_ERR_VERSION', Hellos.fromAgent],
    ['another role', helloFrame({ role: 'relay', version: '1' }), 'RG_ERR_PROTOCOL', Hellos.fromAgent],
    ['a control frame first', encodeFrame(FrameType.CONTROL, 0, 0, Buffer.from('{}')), 'RG_ERR_PROTOCOL', Hellos.fromRelay],
    ['a relay hello without its token', encodeFrame(FrameType.HELLO, 0, 0, encodeHello(PROTOCOL_VERSION, { role: 'relay', version: '1' })), 'RG_ERR_PROTOCOL', Hellos.fromRelay],
    ['a hello with an extra field', encodeFrame(FrameType.HELLO, 0, 0, encodeHello(PROTOCOL_VERSION, { role: 'relay', version: '1', admin: true })), 'RG_ERR_PROTOCOL', Hellos.fromRelayToAgent]
  ]
  for (const [what, bytes, code, side] of cases) {
    const [frame] = decodeAll(bytes)
    t.throws(() => readHello(frame, side as typeof Hellos.fromAgent), { code }, what)
  }
})

t.test('the artifact stream header round-trips and refuses what cannot be', async t => {
  for (const [size, offset] of [[0, 0], [100, 0], [100, 100], [2 ** 40, 2 ** 39], [Number.MAX_SAFE_INTEGER, 0]]) {
    t.same(decodeArtifactHeader(encodeArtifactHeader(size, offset)), { size, offset }, `${size}/${offset}`)
  }
  t.throws(() => decodeArtifactHeader(Buffer.alloc(15)), { code: 'RG_ERR_PROTOCOL' }, 'short')
  const past = encodeArtifactHeader(10, 0)
  past.writeBigUInt64BE(11n, 8)
  t.throws(() => decodeArtifactHeader(past), { code: 'RG_ERR_PROTOCOL' }, 'offset past the size')
  const huge = Buffer.alloc(16, 0xff)
  t.throws(() => decodeArtifactHeader(huge), { code: 'RG_ERR_PROTOCOL' }, 'size above 2^53')
})
