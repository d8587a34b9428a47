import t from 'tap'
import {
  FrameDecoder,
  FrameType,
  FrameFlag,
  CheckinFlag,
  HEADER_SIZE,
  MAX_STREAM_ID,
  PROTOCOL_VERSION,
  RelaygateError,
  decodeAll,
  decodeCheckin,
  decodeCheckinAnswer,
  decodeCodeReason,
  decodeHello,
  decodeJson,
  decodeWindow,
  encode,
  encodeCheckin,
  encodeCheckinAnswer,
  encodeCodeReason,
  encodeFrame,
  encodeHello,
  encodeJson,
  encodeWindow,
  frames,
  isFrameType,
  type ErrorCodeName,
  type Frame,
  type FrameTypeValue
} from '../../protocol/index.js'
import { prng } from '../helpers/message-samples.js'

const MAX = 4096

function bytes (n: number, seed = n): Buffer {
  const rand = prng(seed)
  const out = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256)
  return out
}

/** Asserts that fn throws a RelaygateError with the code; returns it. */
function throwsCode (t: Asserts, fn: () => unknown, code: ErrorCodeName, what: string): RelaygateError | undefined {
  try {
    fn()
  } catch (err) {
    t.ok(err instanceof RelaygateError, `${what}: a RelaygateError`)
    t.equal((err as RelaygateError).code, code, `${what}: code ${code}`)
    return err as RelaygateError
  }
  t.fail(`${what}: expected ${code}, nothing thrown`)
  return undefined
}

/** The few assertions helpers need (any tap test has them). */
type Asserts = Pick<typeof t, 'ok' | 'equal' | 'fail'>

function plain (f: Frame): { type: number, flags: number, streamId: number, payload: string } {
  return { type: f.type, flags: f.flags, streamId: f.streamId, payload: f.payload.toString('hex') }
}

const types = Object.entries(FrameType) as Array<[string, FrameTypeValue]>

t.test('frame header layout is big-endian type, flags, stream id, length', async t => {
  const buf = encodeFrame(FrameType.DATA, FrameFlag.FIN, 0x01020304, Buffer.from('abc'))
  t.equal(buf.length, HEADER_SIZE + 3)
  t.same([...buf.subarray(0, HEADER_SIZE)], [0x11, 0x01, 1, 2, 3, 4, 0, 0, 0, 3])
  t.equal(buf.subarray(HEADER_SIZE).toString(), 'abc')
  t.same(encode({ type: FrameType.DATA, flags: 1, streamId: 0x01020304, payload: Buffer.from('abc') }), buf)
  t.equal(encodeFrame(FrameType.PING, 0, 0).length, HEADER_SIZE, 'payload defaults to empty')
})

t.test('isFrameType knows every type and nothing else', async t => {
  const known = new Set<number>(Object.values(FrameType))
  for (let v = 0; v < 256; v++) t.equal(isFrameType(v), known.has(v), `0x${v.toString(16)}`)
})

t.test('every frame type round-trips with edge values', async t => {
  const streamIds = [0, 1, 2, 0x7fffffff, MAX_STREAM_ID]
  const flagValues = [0, 1, 0x80, 0xff]
  const payloads = [Buffer.alloc(0), Buffer.from([0]), bytes(MAX - 1), bytes(MAX)]
  let cases = 0
  for (const [name, type] of types) {
    for (const streamId of streamIds) {
      for (const flags of flagValues) {
        for (const payload of payloads) {
          const frame: Frame = { type, flags, streamId, payload }
          const encoded = encodeFrame(type, flags, streamId, payload)
          const decoder = new FrameDecoder(MAX)
          const out = decoder.push(encoded)
          if (out.length !== 1 || decoder.pending !== 0) {
            t.fail(`${name} id=${streamId} flags=${flags} len=${payload.length}: got ${out.length} frames, ${decoder.pending} pending`)
            continue
          }
          t.same(plain(out[0]), plain(frame), `${name} id=${streamId} flags=${flags} len=${payload.length}`)
          decoder.end()
          cases++
        }
      }
    }
  }
  t.equal(cases, types.length * streamIds.length * flagValues.length * payloads.length)
})

t.test('decodeAll decodes complete input and rejects a truncated tail', async t => {
  const a = encodeFrame(FrameType.CONTROL, 0, 0, encodeJson({ a: 1 }))
  const b = encodeFrame(FrameType.DATA, 1, 3, Buffer.from('x'))
  t.same(decodeAll(Buffer.concat([a, b])).map(plain), [plain({ type: FrameType.CONTROL, flags: 0, streamId: 0, payload: encodeJson({ a: 1 }) }), plain({ type: FrameType.DATA, flags: 1, streamId: 3, payload: Buffer.from('x') })])
  throwsCode(t, () => decodeAll(Buffer.concat([a, b.subarray(0, b.length - 1)])), 'RG_ERR_PROTOCOL', 'truncated')
  throwsCode(t, () => decodeAll(a, 2), 'RG_ERR_FRAME_TOO_LARGE', 'limit applies')
})

t.test('encodeFrame rejects out-of-range header values', async t => {
  throwsCode(t, () => encodeFrame(FrameType.DATA, 0, -1), 'RG_ERR_PROTOCOL', 'negative stream id')
  throwsCode(t, () => encodeFrame(FrameType.DATA, 0, MAX_STREAM_ID + 1), 'RG_ERR_PROTOCOL', 'stream id above u32')
  throwsCode(t, () => encodeFrame(FrameType.DATA, 0, 1.5), 'RG_ERR_PROTOCOL', 'fractional stream id')
  throwsCode(t, () => encodeFrame(FrameType.DATA, 256, 1), 'RG_ERR_PROTOCOL', 'flags above u8')
  throwsCode(t, () => encodeFrame(FrameType.DATA, -1, 1), 'RG_ERR_PROTOCOL', 'negative flags')
})

/** A mixed sequence of frames, every type, varied sizes. */
function sampleFrames (count: number, seed: number): Frame[] {
  const rand = prng(seed)
  const out: Frame[] = []
  for (let i = 0; i < count; i++) {
    const [, type] = types[Math.floor(rand() * types.length)]
    const sizes = [0, 1, 9, 10, 11, 100, 1500, MAX]
    const len = sizes[Math.floor(rand() * sizes.length)]
    out.push({
      type,
      flags: Math.floor(rand() * 256),
      streamId: rand() < 0.1 ? MAX_STREAM_ID : Math.floor(rand() * 1000),
      payload: bytes(len, seed * 1000 + i)
    })
  }
  return out
}

function feed (decoder: FrameDecoder, whole: Buffer, cuts: number[]): Frame[] {
  const out: Frame[] = []
  let at = 0
  for (const cut of [...cuts, whole.length]) {
    out.push(...decoder.push(whole.subarray(at, cut)))
    at = cut
  }
  decoder.end()
  return out
}

t.test('the same bytes decode the same whole, byte by byte and split at random points', async t => {
  const input = sampleFrames(60, 7)
  const whole = Buffer.concat(input.map(encode))
  const expected = input.map(plain)

  t.same(feed(new FrameDecoder(MAX), whole, []).map(plain), expected, 'whole')

  const everyByte = Array.from({ length: whole.length - 1 }, (_, i) => i + 1)
  t.same(feed(new FrameDecoder(MAX), whole, everyByte).map(plain), expected, 'byte by byte')

  for (const seed of [1, 2, 3, 42, 1234, 99999]) {
    const rand = prng(seed)
    const cuts = new Set<number>()
    const n = 1 + Math.floor(rand() * 200)
    for (let i = 0; i < n; i++) cuts.add(Math.floor(rand() * whole.length))
    const sorted = [...cuts].sort((a, b) => a - b)
    t.same(feed(new FrameDecoder(MAX), whole, sorted).map(plain), expected, `random split, seed ${seed}, ${sorted.length} cuts`)
  }

  // Splits right at and around every header boundary.
  const boundaries: number[] = []
  let at = 0
  for (const f of input) {
    for (const d of [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1]) if (at + d < whole.length) boundaries.push(at + d)
    at += HEADER_SIZE + f.payload.length
  }
  t.same(feed(new FrameDecoder(MAX), whole, [...new Set(boundaries)].sort((a, b) => a - b)).map(plain), expected, 'split around headers')
})

t.test('decoder accepts plain Uint8Array chunks (views into a larger buffer)', async t => {
  const frame = encodeFrame(FrameType.DATA, 0, 5, Buffer.from('hello world'))
  const backing = new Uint8Array(frame.length + 8)
  backing.set(frame, 4)
  const view = new Uint8Array(backing.buffer, 4, frame.length)
  const [out] = new FrameDecoder().push(view)
  t.equal(out.payload.toString(), 'hello world')
  t.equal(out.streamId, 5)
  t.same(new FrameDecoder().push(new Uint8Array(0)), [], 'empty chunk yields nothing')
})

t.test('an unknown type byte is a protocol error', async t => {
  for (const type of [0x00, 0x08, 0x0f, 0x14, 0x7f, 0xff]) {
    const buf = encodeFrame(FrameType.DATA, 0, 1, Buffer.from('x'))
    buf[0] = type
    throwsCode(t, () => new FrameDecoder().push(buf), 'RG_ERR_PROTOCOL', `type 0x${type.toString(16)}`)
  }
  // After a valid frame, in the same chunk.
  const good = encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8))
  const bad = Buffer.from(good)
  bad[0] = 0xee
  throwsCode(t, () => new FrameDecoder().push(Buffer.concat([good, bad])), 'RG_ERR_PROTOCOL', 'after a valid frame')
  // The type is checked with the header, before any payload arrives.
  const decoder = new FrameDecoder()
  t.same(decoder.push(bad.subarray(0, HEADER_SIZE - 1)), [], 'incomplete header: nothing yet')
  throwsCode(t, () => decoder.push(bad.subarray(HEADER_SIZE - 1, HEADER_SIZE)), 'RG_ERR_PROTOCOL', 'as soon as the header is complete')
})

t.test('an oversized length fails as soon as the header arrives, before the payload is buffered', async t => {
  const limit = 1024
  const header = encodeFrame(FrameType.DATA, 0, 1).subarray(0, HEADER_SIZE)

  for (const length of [limit + 1, 0x7fffffff, 0xffffffff]) {
    const h = Buffer.from(header)
    h.writeUInt32BE(length, 6)
    const decoder = new FrameDecoder(limit)
    t.same(decoder.push(h.subarray(0, 6)), [], 'partial header is held')
    t.equal(decoder.pending, 6)
    throwsCode(t, () => decoder.push(h.subarray(6)), 'RG_ERR_FRAME_TOO_LARGE', `length ${length}`)
    t.ok(decoder.pending <= HEADER_SIZE, `pending stays at most a header (${decoder.pending})`)
  }

  // Exactly the limit is fine; one more is not.
  const exact = encodeFrame(FrameType.DATA, 0, 1, bytes(limit))
  t.equal(new FrameDecoder(limit).push(exact).length, 1, 'payload of exactly maxPayload')
  throwsCode(t, () => new FrameDecoder(limit).push(encodeFrame(FrameType.DATA, 0, 1, bytes(limit + 1))), 'RG_ERR_FRAME_TOO_LARGE', 'one byte over')

  // A header that claims a huge payload, followed by trickled payload bytes:
  // the decoder fails on the header and never accumulates the payload.
  const h = Buffer.from(header)
  h.writeUInt32BE(50 * 1024 * 1024, 6)
  const decoder = new FrameDecoder(limit)
  throwsCode(t, () => decoder.push(h), 'RG_ERR_FRAME_TOO_LARGE', 'huge claim')
  t.equal(decoder.pending, HEADER_SIZE, 'only the header is held')

  // Default limit is DEFAULT_MAX_PAYLOAD.
  const d = new FrameDecoder()
  const big = Buffer.from(header)
  big.writeUInt32BE(d.maxPayload + 1, 6)
  throwsCode(t, () => d.push(big), 'RG_ERR_FRAME_TOO_LARGE', 'default limit')
})

t.test('truncated input is a protocol error at end()', async t => {
  const frame = encodeFrame(FrameType.CONTROL, 0, 0, encodeJson({ hello: 'world' }))
  for (const cut of [1, HEADER_SIZE - 1, HEADER_SIZE, frame.length - 1]) {
    const decoder = new FrameDecoder()
    t.same(decoder.push(frame.subarray(0, cut)), [], `cut at ${cut}: no frame yet`)
    t.equal(decoder.pending, cut)
    throwsCode(t, () => decoder.end(), 'RG_ERR_PROTOCOL', `cut at ${cut}`)
    t.equal(decoder.pending, 0, 'end() drops what it held')
    decoder.end()
  }
  const decoder = new FrameDecoder()
  decoder.end()
  t.pass('end() on an empty decoder is fine')
})

t.test('hello payload', async t => {
  const body = { role: 'agent', edgeId: 'e-1', nested: { a: [1, 2] }, text: 'ünïcødé ✓' }
  const enc = encodeHello(PROTOCOL_VERSION, body)
  t.equal(enc.readUInt16BE(0), PROTOCOL_VERSION)
  t.same(decodeHello(enc), { version: PROTOCOL_VERSION, body })
  t.same(decodeHello(encodeHello(0, {})), { version: 0, body: {} })
  t.same(decodeHello(encodeHello(0xffff, {})).version, 0xffff)
  throwsCode(t, () => encodeHello(0x10000, {}), 'RG_ERR_PROTOCOL', 'version above u16')
  throwsCode(t, () => encodeHello(-1, {}), 'RG_ERR_PROTOCOL', 'negative version')

  throwsCode(t, () => decodeHello(Buffer.alloc(0)), 'RG_ERR_PROTOCOL', 'empty')
  throwsCode(t, () => decodeHello(Buffer.from([1])), 'RG_ERR_PROTOCOL', 'one byte')
  throwsCode(t, () => decodeHello(Buffer.from([0, 1])), 'RG_ERR_PROTOCOL', 'version only (no JSON)')
  const withText = (text: string): Buffer => Buffer.concat([Buffer.from([0, 1]), Buffer.from(text)])
  throwsCode(t, () => decodeHello(withText('{not json')), 'RG_ERR_PROTOCOL', 'wrong JSON')
  for (const json of ['null', '[]', '[1,2]', '"text"', '42', 'true']) {
    throwsCode(t, () => decodeHello(withText(json)), 'RG_ERR_PROTOCOL', `non-object JSON ${json}`)
  }

  const hello = decodeAll(frames.hello(PROTOCOL_VERSION, { a: 1 }))
  t.equal(hello[0].type, FrameType.HELLO)
  t.equal(hello[0].streamId, 0)
  t.same(decodeHello(hello[0].payload).body, { a: 1 })
})

t.test('control (JSON) payload', async t => {
  t.same(decodeJson(encodeJson({ type: 'delta', list: [1, 'two'] })), { type: 'delta', list: [1, 'two'] })
  throwsCode(t, () => decodeJson(Buffer.from('nope')), 'RG_ERR_PROTOCOL', 'wrong JSON')
  throwsCode(t, () => decodeJson(Buffer.from('[1]')), 'RG_ERR_PROTOCOL', 'array')
  throwsCode(t, () => decodeJson(Buffer.alloc(0)), 'RG_ERR_PROTOCOL', 'empty')
  const [f] = decodeAll(frames.control({ x: true }))
  t.equal(f.type, FrameType.CONTROL)
  t.same(decodeJson(f.payload), { x: true })
})

t.test('code + reason payload (ERROR, GOAWAY, RESET)', async t => {
  for (const [code, reason] of [[0, ''], [1000, 'bye'], [4000, 'bad frame'], [0xffff, 'ünïcødé']] as Array<[number, string]>) {
    t.same(decodeCodeReason(encodeCodeReason(code, reason)), { code, reason })
  }
  t.same(decodeCodeReason(encodeCodeReason(4001)), { code: 4001, reason: '' }, 'reason defaults to empty')
  t.ok(encodeCodeReason(4000, 'x'.repeat(10_000)).length <= 2 + 1024 * 4, 'long reason is cut')
  throwsCode(t, () => encodeCodeReason(0x10000), 'RG_ERR_PROTOCOL', 'code above u16')
  throwsCode(t, () => encodeCodeReason(-5), 'RG_ERR_PROTOCOL', 'negative code')
  throwsCode(t, () => decodeCodeReason(Buffer.alloc(0)), 'RG_ERR_PROTOCOL', 'empty')
  throwsCode(t, () => decodeCodeReason(Buffer.from([0x0f])), 'RG_ERR_PROTOCOL', 'one byte')
  const [f] = decodeAll(frames.error(4000, 'oops'))
  t.equal(f.type, FrameType.ERROR)
  t.same(decodeCodeReason(f.payload), { code: 4000, reason: 'oops' })
})

t.test('check-in payload', async t => {
  for (const seq of [0, 1, 0x1234, 0xffff]) {
    const enc = encodeCheckin(seq)
    t.equal(enc.length, 2)
    t.same(decodeCheckin(enc), { seq })
  }
  throwsCode(t, () => encodeCheckin(0x10000), 'RG_ERR_PROTOCOL', 'seq above u16')
  throwsCode(t, () => encodeCheckin(-1), 'RG_ERR_PROTOCOL', 'negative seq')
  throwsCode(t, () => encodeCheckin(1.5), 'RG_ERR_PROTOCOL', 'fractional seq')
  for (const len of [0, 1, 3, 10]) throwsCode(t, () => decodeCheckin(Buffer.alloc(len)), 'RG_ERR_PROTOCOL', `length ${len}`)
  const [f] = decodeAll(frames.checkin(7))
  t.equal(f.type, FrameType.CHECKIN)
  t.same(decodeCheckin(f.payload), { seq: 7 })
})

t.test('check-in answer payload', async t => {
  const table = [
    { seq: 0, flags: 0, intervalSeconds: 0 },
    { seq: 1, flags: CheckinFlag.TUNNEL, intervalSeconds: 5 },
    { seq: 0x8000, flags: CheckinFlag.TUNNEL | CheckinFlag.WORK, intervalSeconds: 30 },
    { seq: 0xffff, flags: 0xff, intervalSeconds: 0xffff }
  ]
  for (const answer of table) {
    const enc = encodeCheckinAnswer(answer)
    t.equal(enc.length, 5)
    t.same(decodeCheckinAnswer(enc), answer)
  }
  const ok = { seq: 1, flags: 0, intervalSeconds: 5 }
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, seq: 0x10000 }), 'RG_ERR_PROTOCOL', 'seq above u16')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, seq: -1 }), 'RG_ERR_PROTOCOL', 'negative seq')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, flags: 0x100 }), 'RG_ERR_PROTOCOL', 'flags above u8')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, flags: -1 }), 'RG_ERR_PROTOCOL', 'negative flags')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, flags: 0.5 }), 'RG_ERR_PROTOCOL', 'fractional flags')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, intervalSeconds: 0x10000 }), 'RG_ERR_PROTOCOL', 'interval above u16')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, intervalSeconds: -5 }), 'RG_ERR_PROTOCOL', 'negative interval')
  throwsCode(t, () => encodeCheckinAnswer({ ...ok, intervalSeconds: Number.NaN }), 'RG_ERR_PROTOCOL', 'NaN interval')
  for (const len of [0, 2, 4, 6]) throwsCode(t, () => decodeCheckinAnswer(Buffer.alloc(len)), 'RG_ERR_PROTOCOL', `length ${len}`)
  const [f] = decodeAll(frames.checkinAnswer({ seq: 9, flags: CheckinFlag.WORK, intervalSeconds: 10 }))
  t.equal(f.type, FrameType.CHECKIN_ANSWER)
  t.equal(f.streamId, 0)
  t.same(decodeCheckinAnswer(f.payload), { seq: 9, flags: CheckinFlag.WORK, intervalSeconds: 10 })
})

t.test('window payload', async t => {
  for (const delta of [1, 16 * 1024, 0x7fffffff, 0xffffffff]) {
    const enc = encodeWindow(delta)
    t.equal(enc.length, 4)
    t.equal(decodeWindow(enc), delta)
  }
  throwsCode(t, () => encodeWindow(0), 'RG_ERR_PROTOCOL', 'encode zero')
  throwsCode(t, () => encodeWindow(-1), 'RG_ERR_PROTOCOL', 'negative')
  throwsCode(t, () => encodeWindow(0x100000000), 'RG_ERR_PROTOCOL', 'above u32')
  throwsCode(t, () => encodeWindow(2.5), 'RG_ERR_PROTOCOL', 'fractional')
  throwsCode(t, () => decodeWindow(Buffer.alloc(4)), 'RG_ERR_PROTOCOL', 'decode zero')
  for (const len of [0, 3, 5, 8]) throwsCode(t, () => decodeWindow(Buffer.alloc(len, 1)), 'RG_ERR_PROTOCOL', `length ${len}`)
})
