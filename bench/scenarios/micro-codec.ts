import { FrameDecoder, encodeFrame, frames, FrameType, HEADER_SIZE, decodeAll, decodeJson, type Frame } from '../../protocol/index.js'
import { readControl, RelayToServer, ServerToRelay, AgentToRelay } from '../../protocol/messages.js'
import { writeResult, round, barChart, type BenchResult } from '../lib/report.js'

/**
 * The naive reference: what one writes without thinking about it — encode by
 * concatenating header and payload, decode by concatenating every chunk onto
 * one growing buffer and slicing copies out of it.
 */
class NaiveDecoder {
  private buf = Buffer.alloc(0)
  push (chunk: Buffer): Frame[] {
    this.buf = Buffer.concat([this.buf, chunk])
    const out: Frame[] = []
    while (this.buf.length >= HEADER_SIZE) {
      const len = this.buf.readUInt32BE(6)
      if (this.buf.length < HEADER_SIZE + len) break
      out.push({ type: this.buf[0] as Frame['type'], flags: this.buf[1], streamId: this.buf.readUInt32BE(2), payload: Buffer.from(this.buf.subarray(HEADER_SIZE, HEADER_SIZE + len)) })
      this.buf = Buffer.from(this.buf.subarray(HEADER_SIZE + len))
    }
    return out
  }
}

function naiveEncode (type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_SIZE)
  header[0] = type
  header[1] = flags
  header.writeUInt32BE(streamId, 2)
  header.writeUInt32BE(payload.length, 6)
  return Buffer.concat([header, payload])
}

function time (fn: () => void): number {
  const t0 = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - t0) / 1e9
}

function chunked (all: Buffer, size: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < all.length; i += size) out.push(all.subarray(i, i + size))
  return out
}

export async function run (options: { frames: number }): Promise<BenchResult> {
  const n = options.frames
  const payload = Buffer.alloc(1024, 7)
  // encode: check-ins (the traffic that scales with fleet size) and 1 KiB data frames
  const encCheckin = time(() => { for (let i = 0; i < n; i++) frames.checkin(i & 0xffff) })
  const naiveCheckin = time(() => { const p = Buffer.alloc(2); for (let i = 0; i < n; i++) { p.writeUInt16BE(i & 0xffff, 0); naiveEncode(FrameType.CHECKIN, 0, 0, p) } })
  const encData = time(() => { for (let i = 0; i < n; i++) encodeFrame(FrameType.DATA, 0, 1, payload) })
  const naiveData = time(() => { for (let i = 0; i < n; i++) naiveEncode(FrameType.DATA, 0, 1, payload) })
  // decode: a stream of mixed frames, fed in 16 KiB chunks (socket reads) and in 100-byte chunks
  const stream = Buffer.concat(Array.from({ length: Math.min(n, 200_000) }, (_, i) => i % 4 === 0 ? encodeFrame(FrameType.DATA, 0, 1, payload) : frames.checkin(i & 0xffff)))
  const decodeWith = (make: () => { push: (c: Buffer) => Frame[] }, size: number): { seconds: number, frames: number } => {
    const chunks = chunked(stream, size)
    let count = 0
    const seconds = time(() => { const d = make(); for (const c of chunks) count += d.push(c).length })
    return { seconds, frames: count }
  }
  const ours16k = decodeWith(() => new FrameDecoder(1 << 20), 16 * 1024)
  const naive16k = decodeWith(() => new NaiveDecoder(), 16 * 1024)
  const ours100 = decodeWith(() => new FrameDecoder(1 << 20), 100)
  const naive100 = decodeWith(() => new NaiveDecoder(), 100)
  if (ours16k.frames !== naive16k.frames || ours100.frames !== ours16k.frames) throw new Error('decoders disagree')
  // control messages: read and validated against their direction's schema, vs JSON.parse alone (before the schemas)
  const controls = controlSamples()
  const m = Math.max(1, Math.floor(n / 4))
  const parseControl = time(() => { for (let i = 0; i < m; i++) { const c = controls[i % controls.length]; readControl(c.frame, c.set) } })
  const jsonOnly = time(() => { for (let i = 0; i < m; i++) decodeJson(controls[i % controls.length].frame.payload) })
  const mfps = (count: number, s: number): number => round(count / s / 1e6, 3)
  const figures = {
    encodeCheckinMframesPerSec: mfps(n, encCheckin),
    encodeData1kMframesPerSec: mfps(n, encData),
    decode16kChunksMframesPerSec: mfps(ours16k.frames, ours16k.seconds),
    decode100BChunksMframesPerSec: mfps(ours100.frames, ours100.seconds),
    parseControlMmsgsPerSec: mfps(m, parseControl)
  }
  const baseline = {
    encodeCheckinMframesPerSec: mfps(n, naiveCheckin),
    encodeData1kMframesPerSec: mfps(n, naiveData),
    decode16kChunksMframesPerSec: mfps(naive16k.frames, naive16k.seconds),
    decode100BChunksMframesPerSec: mfps(naive100.frames, naive100.seconds),
    parseControlMmsgsPerSec: mfps(m, jsonOnly)
  }
  const ratios = Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, round(v / (baseline as Record<string, number>)[k], 2)]))
  const labels = ['encode check-in', 'encode 1 KiB data', 'decode 16 KiB chunks', 'decode 100 B chunks', 'parse control message']
  const svg = barChart('Codec throughput: relaygate vs naive reference (same run)', 'million frames / s', labels, [
    { name: 'relaygate', values: Object.values(figures), color: '#2563eb' },
    { name: 'naive reference', values: Object.values(baseline), color: '#9ca3af' }
  ])
  const result: BenchResult = {
    scenario: 'micro-codec',
    parameters: { frames: n, decodeStreamFrames: ours16k.frames, payloadBytes: payload.length },
    figures,
    baseline,
    ratios,
    notes: [
      'baseline: concatenate header+payload to encode; concatenate every chunk onto one buffer and copy frames out to decode',
      'parse control message: JSON plus the compiled schema check of its direction (auth-begin, auth-challenge, job-progress, job, tunnel-offer, flags in turn); its baseline is JSON.parse alone, what the code did before the schemas (with hand-written checks scattered in the handlers), so the ratio is the schema\'s cost. Control messages are rare (changes, not check-ins)'
    ]
  }
  writeResult(result, svg)
  return result
}

/** Representative control frames of three directions, with the set each is read against. */
function controlSamples (): Array<{ frame: Frame, set: { parse: (v: unknown) => unknown } }> {
  const sha = 'ab'.repeat(32)
  const one = (body: object, set: { parse: (v: unknown) => unknown }): { frame: Frame, set: { parse: (v: unknown) => unknown } } => ({ frame: decodeAll(frames.control(body))[0], set })
  return [
    one({ t: 'auth-begin', sid: 1234, endpointId: 'eabcdefghj', edgeId: '0b6f5b1e-4c1e-4d3a-9d7e-0a1b2c3d4e5f' }, RelayToServer),
    one({ t: 'auth-challenge', sid: 1234, nonce: 'bm9uY2Vub25jZW5vbmNlbm9uY2Vub25j' }, ServerToRelay),
    one({ t: 'job-progress', jobId: 'jabcdefghj', attempt: 1, state: 'downloading', progress: 0.25, bytes: 1 << 20 }, AgentToRelay),
    one({ t: 'job', sid: 1234, jobId: 'jabcdefghj', attempt: 1, sha256: sha, size: 50 << 20, path: 'tools/agent.tgz', run: ['sh', '-c', 'tar xzf agent.tgz'] }, ServerToRelay),
    one({ t: 'tunnel-offer', sid: 1234, tunnelId: 'dHVubmVsaWQxMjM0', blob: 'YmxvYg'.repeat(20), target: 'http://127.0.0.1:2375', idleTimeoutSeconds: 300 }, ServerToRelay),
    one({ t: 'flags', set: [['eabcdefghj', 1], ['eabcdefghk', 0]] }, ServerToRelay)
  ]
}
