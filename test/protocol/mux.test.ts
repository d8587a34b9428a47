import t from 'tap'
import { once } from 'node:events'
import { createHash, randomBytes, randomFillSync } from 'node:crypto'
import {
  CheckinFlag,
  ErrorCode,
  FrameDecoder,
  FrameFlag,
  FrameType,
  HEADER_SIZE,
  MemoryTransport,
  Mux,
  RelaygateError,
  allocFramed,
  claimFrameRoom,
  decodeCheckin,
  decodeCheckinAnswer,
  encodeCodeReason,
  encodeFrame,
  encodeJson,
  encodeWindow,
  frames,
  verifyMuxOptions,
  type ErrorCodeName,
  type Frame,
  type MuxOptions,
  type MuxStream
} from '../../protocol/index.js'
import { spliceStreams } from '../../protocol/splice.js'

type Test = Pick<typeof t, 'teardown'>
type CloseInfo = Parameters<NonNullable<MuxOptions['onClose']>>[0]

// ---- helpers ----

/** Fails (instead of hanging until tap's timeout) when a promise takes too long. */
async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits until a condition holds, checking after every turn of the event loop. */
async function until (cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`)
    await new Promise(resolve => setImmediate(resolve))
  }
}

/** Lets the event loop run a while (only to check that something does NOT happen). */
async function settle (ms = 30): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

const streamErrors = new WeakMap<MuxStream, Promise<Error>>()

/** Records a stream's error (so none goes unhandled) and returns it as a promise. */
function watch (stream: MuxStream): MuxStream {
  if (!streamErrors.has(stream)) streamErrors.set(stream, new Promise(resolve => stream.on('error', resolve)))
  return stream
}

async function errorOf (stream: MuxStream, what = 'stream error'): Promise<RelaygateError> {
  const err = await within(watch(stream) && streamErrors.get(stream)!, 3000, what)
  if (!(err instanceof RelaygateError)) throw new Error(`not a RelaygateError: ${String(err)}`)
  return err
}

interface Side {
  mux: Mux
  transport: MemoryTransport
  accepted: MuxStream[]
  frames: Frame[]
  goAways: Array<{ code: number, reason: string }>
  closes: CloseInfo[]
  closed: Promise<CloseInfo>
  /** Called synchronously for every session frame (after it is recorded). */
  onFrame?: (frame: Frame) => void
  nextStream: () => Promise<MuxStream>
  open: (meta?: string) => MuxStream
}

function side (transport: MemoryTransport, options: MuxOptions): Side {
  const accepted: MuxStream[] = []
  const waiting: Array<(s: MuxStream) => void> = []
  const closes: CloseInfo[] = []
  let resolveClosed!: (info: CloseInfo) => void
  const s: Side = {
    mux: undefined as unknown as Mux,
    transport,
    accepted,
    frames: [],
    goAways: [],
    closes,
    closed: new Promise(resolve => { resolveClosed = resolve }),
    nextStream: async () => {
      return await within(new Promise<MuxStream>(resolve => {
        const next = pending.shift()
        if (next !== undefined) resolve(next)
        else waiting.push(resolve)
      }), 3000, 'an accepted stream')
    },
    open: (meta = '') => watch(s.mux.openStream(Buffer.from(meta)))
  }
  const pending: MuxStream[] = []
  s.mux = new Mux(transport, {
    onStream: stream => {
      watch(stream)
      accepted.push(stream)
      const w = waiting.shift()
      if (w !== undefined) w(stream)
      else pending.push(stream)
    },
    onFrame: frame => {
      s.frames.push(frame)
      s.onFrame?.(frame)
    },
    onGoAway: (code, reason) => { s.goAways.push({ code, reason }) },
    ...options,
    onClose: info => {
      closes.push(info)
      resolveClosed(info)
      options.onClose?.(info)
    }
  })
  return s
}

function pair (t: Test, dialer: Partial<MuxOptions> = {}, listener: Partial<MuxOptions> = {}, transportHighWaterMark?: number): { a: Side, b: Side } {
  const [ta, tb] = MemoryTransport.pair(transportHighWaterMark)
  const a = side(ta, { ...dialer, role: 'dialer' })
  const b = side(tb, { ...listener, role: 'listener' })
  t.teardown(async () => { await Promise.all([a.mux.destroy(), b.mux.destroy()]) })
  return { a, b }
}

/** Resolves once a stream has emitted 'close' (at once if it already has). */
async function streamClosed (stream: MuxStream, what = 'stream close'): Promise<void> {
  if (stream.closed) return
  await within(once(stream, 'close').then(() => {}), 3000, what)
}

/** Everything a stream delivers until its end. */
async function readAll (stream: MuxStream, what = 'stream end'): Promise<Buffer> {
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  await within(once(stream, 'end'), 10_000, what)
  return Buffer.concat(chunks)
}

/** sha256 and length of everything a stream delivers until its end. */
async function hashAll (stream: MuxStream, what = 'stream end'): Promise<{ sha: string, bytes: number }> {
  const hash = createHash('sha256')
  let bytes = 0
  stream.on('data', (c: Buffer) => { hash.update(c); bytes += c.length })
  await within(once(stream, 'end'), 20_000, what)
  return { sha: hash.digest('hex'), bytes }
}

/** Writes `total` random bytes honouring backpressure, then ends; returns their sha256. */
async function writeAll (stream: MuxStream, total: number, writeSize = 64 * 1024, end = true): Promise<{ sha: string, bytes: number }> {
  const hash = createHash('sha256')
  let sent = 0
  while (sent < total) {
    const buf = randomBytes(Math.min(writeSize, total - sent))
    hash.update(buf)
    sent += buf.length
    if (!stream.write(buf)) await once(stream, 'drain')
  }
  if (end) stream.end()
  return { sha: hash.digest('hex'), bytes: sent }
}

/** A transport end driven by hand: sends raw bytes, decodes what the mux sends back. */
function rawPeer (t: Test, listener: Partial<MuxOptions> = {}): { raw: MemoryTransport, b: Side, received: Frame[], rawClosed: Promise<{ code: number, reason: string }> } {
  const [raw, tb] = MemoryTransport.pair()
  const decoder = new FrameDecoder(16 * 1024 * 1024)
  const received: Frame[] = []
  const rawClosed = new Promise<{ code: number, reason: string }>(resolve => {
    raw.attach({ message: data => received.push(...decoder.push(data)), drain: () => {}, close: (code, reason) => resolve({ code, reason }) })
  })
  const b = side(tb, { ...listener, role: 'listener' })
  t.teardown(async () => { await b.mux.destroy() })
  return { raw, b, received, rawClosed }
}

function codeOf (info: CloseInfo): ErrorCodeName | undefined {
  return info.error?.code
}

// ---- tests ----

t.test('options are checked at construction', async t => {
  const [ta] = MemoryTransport.pair()
  const bad: Array<Partial<MuxOptions>> = [
    { chunkSize: 0 }, { initialWindow: 0 }, { initialWindow: 2 ** 32 }, { maxStreams: 0 },
    { highWaterMark: -1 }, { drainTimeoutMs: 0 }, { keepAliveMs: -5 }, { keepAliveMs: 1.5 },
    { maxPayload: 0 }, { maxBufferedBytes: 10, highWaterMark: 100 }, { role: 'boss' as 'dialer' }
  ]
  for (const opts of bad) {
    try {
      void new Mux(ta, { role: 'dialer', ...opts })
      t.fail(`accepted ${JSON.stringify(opts)}`)
    } catch (err) {
      t.equal((err as RelaygateError).code, 'RG_ERR_CONFIG', `rejects ${JSON.stringify(opts)}`)
    }
  }
  const resolved = verifyMuxOptions({ role: 'dialer', chunkSize: undefined, keepAliveMs: 1000 })
  t.equal(resolved.chunkSize, 60 * 1024, 'an undefined option keeps its default')
  t.equal(resolved.livenessTimeoutMs, 2000, 'liveness defaults to twice the keep-alive')
  t.equal(verifyMuxOptions({ role: 'dialer' }).livenessTimeoutMs, 0, 'no pings, no liveness timeout')
  t.equal(verifyMuxOptions({ role: 'dialer', keepAliveMs: 1000, livenessTimeoutMs: 0 }).livenessTimeoutMs, 0, 'liveness can be turned off explicitly')
})

t.test('options given as undefined keep their defaults (regression: chunkSize undefined broke sending)', async t => {
  const { a, b } = pair(t, { chunkSize: undefined, initialWindow: undefined, highWaterMark: undefined })
  const s = a.open('x')
  const got = b.nextStream().then(async bs => await readAll(bs))
  s.end(Buffer.alloc(100_000, 7))
  t.same((await got).length, 100_000)
})

t.test('a stream carries data both ways with half-close in each direction', async t => {
  const { a, b } = pair(t)

  // dialer -> listener
  const s = a.open('echo')
  t.equal(s.id % 2, 1, 'the dialer opens odd ids')
  s.write('hello ')
  s.end('from the dialer')
  const bs = await b.nextStream()
  t.equal(bs.id, s.id)
  t.equal(bs.meta.toString(), 'echo', 'metadata arrives with the stream')
  t.equal((await readAll(bs)).toString(), 'hello from the dialer')
  t.ok(bs.writable, 'after the peer half-closed, this side can still write')
  const back = readAll(s)
  bs.write('and back ')
  bs.end('from the listener')
  t.equal((await back).toString(), 'and back from the listener')
  await Promise.all([streamClosed(s), streamClosed(bs)])
  t.equal(a.mux.streamCount, 0)
  t.equal(b.mux.streamCount, 0)

  // listener -> dialer: the listener opens even ids; this time the opener half-closes last
  const ls = b.open('reverse')
  t.equal(ls.id % 2, 0, 'the listener opens even ids')
  t.ok(ls.id > 0)
  const as = await a.nextStream()
  t.equal(as.meta.toString(), 'reverse')
  const fromOpener = readAll(as)
  as.end('answer first')
  t.equal((await readAll(ls)).toString(), 'answer first')
  ls.end('then the opener')
  t.equal((await fromOpener).toString(), 'then the opener')
  await Promise.all([streamClosed(ls), streamClosed(as)])

  // An empty stream: FIN at once.
  const empty = a.open()
  empty.end()
  const be = await b.nextStream()
  t.equal((await readAll(be)).length, 0)
  const emptyBack = readAll(empty)
  be.end()
  t.equal((await emptyBack).length, 0)
  await Promise.all([streamClosed(empty), streamClosed(be)])

  t.equal(a.mux.streamCount, 0)
  t.equal(b.mux.streamCount, 0)
  t.notOk(a.mux.closed, 'link still up')
  t.same(a.closes, [])
})

t.test('stream ids keep their parity and increase', async t => {
  const { a, b } = pair(t)
  const ids = [a.open(), a.open(), a.open()].map(s => s.id)
  t.same(ids, [1, 3, 5])
  const lids = [b.open(), b.open()].map(s => s.id)
  t.same(lids, [2, 4])
})

t.test('large transfers arrive intact in both directions at once', async t => {
  const { a, b } = pair(t)
  const up = a.open('up')
  const bs = await b.nextStream() // the OPEN frame goes out at once, before any data
  const down = b.open('down')
  const as = await a.nextStream()

  const [sentUp, gotUp, sentDown, gotDown] = await Promise.all([
    writeAll(up, 8 * 1024 * 1024, 100_000),
    hashAll(bs, '8 MB up'),
    writeAll(down, 4 * 1024 * 1024, 7_000),
    hashAll(as, '4 MB down')
  ])
  t.equal(gotUp.bytes, 8 * 1024 * 1024)
  t.equal(gotUp.sha, sentUp.sha, '8 MB up: same sha256')
  t.equal(gotDown.bytes, 4 * 1024 * 1024)
  t.equal(gotDown.sha, sentDown.sha, '4 MB down: same sha256')
  t.ok(a.mux.bytesOut > 8 * 1024 * 1024)
  t.ok(b.mux.bytesIn > 8 * 1024 * 1024)
})

t.test('a reader that stops makes the sender stop at the window; memory stays bounded; resuming delivers everything', async t => {
  const initialWindow = 64 * 1024
  const chunkSize = 8 * 1024
  const { a, b } = pair(t, { initialWindow, chunkSize }, { initialWindow, chunkSize })
  const s = a.open('slow')
  const bs = await b.nextStream() // nobody reads it yet

  // A producer that writes as fast as write() allows.
  const total = 2 * 1024 * 1024
  const hash = createHash('sha256')
  let written = 0
  let sawFalse = false
  const producer = (async () => {
    while (written < total) {
      const buf = randomBytes(16 * 1024)
      hash.update(buf)
      written += buf.length
      if (!s.write(buf)) {
        sawFalse = true
        await once(s, 'drain')
      }
    }
    s.end()
  })()

  await until(() => bs.readableLength >= initialWindow, 5000, 'the receiver holds a full window')
  await settle(50)
  t.ok(sawFalse, "the sender's write() returned false")
  t.equal(bs.readableLength, initialWindow, 'the receiver holds exactly the window, no more')
  t.equal(s.sendWindow, 0, 'the sender has no credit left')
  const dataOnWire = a.mux.bytesOut
  t.ok(dataOnWire <= initialWindow + chunkSize + 64 * HEADER_SIZE + 1024, `bytes sent (${dataOnWire}) stay within the window plus one chunk`)
  t.ok(b.mux.bytesIn <= initialWindow + chunkSize + 64 * HEADER_SIZE + 1024, 'bytes received likewise')
  t.ok(written <= initialWindow + 64 * 1024 + 16 * 1024, `the producer was held back (${written} bytes written of ${total})`)
  t.ok(s.writableLength <= 64 * 1024 + 16 * 1024, 'the sending stream buffers at most its high-water mark and one write')
  t.equal(a.transport.bufferedAmount, 0, 'nothing is stuck in the transport')

  // A little later, still stalled: nothing moved.
  const before = b.mux.bytesIn
  await settle(30)
  t.equal(b.mux.bytesIn, before, 'no bytes move while the reader is stopped')

  // Resume: everything arrives.
  const got = hashAll(bs, 'resumed stream')
  await within(producer, 10_000, 'producer finishes after resume')
  const result = await got
  t.equal(result.bytes, total)
  t.equal(result.sha, hash.digest('hex'), 'same sha256 after resuming')
})

t.test('a fast stream keeps flowing beside a stalled one on the same link', async t => {
  const initialWindow = 64 * 1024
  const { a, b } = pair(t, { initialWindow }, { initialWindow })
  const slow = a.open('slow')
  const fast = a.open('fast')
  const bSlow = await b.nextStream()
  const bFast = await b.nextStream()
  t.equal(bSlow.meta.toString(), 'slow')
  t.equal(bFast.meta.toString(), 'fast')

  // The slow stream's reader never reads; its writer keeps writing.
  const slowTotal = 1024 * 1024
  const slowSent = writeAll(slow, slowTotal, 16 * 1024)
  const [sent, got] = await Promise.all([
    writeAll(fast, 6 * 1024 * 1024, 64 * 1024),
    hashAll(bFast, 'fast stream completes while the slow one is stalled')
  ])
  t.equal(got.sha, sent.sha, 'fast stream: 6 MB intact')
  t.ok(bSlow.readableLength <= initialWindow, `the stalled stream holds at most its window (${bSlow.readableLength})`)
  t.ok(bSlow.readableLength > 0, 'the stalled stream got its window')
  t.notOk(bSlow.readableEnded)

  const slowGot = await hashAll(bSlow, 'slow stream after resume')
  t.equal(slowGot.sha, (await slowSent).sha, 'slow stream: intact after resuming')
})

/** A pair over a path with `oneWayMs` of delay each way (RTT = 2 x oneWayMs). */
function delayedPair (t: Test, oneWayMs: number, options: Partial<MuxOptions>): { a: Side, b: Side } {
  const p = pair(t, options, options)
  p.a.transport.delayMs = oneWayMs
  p.b.transport.delayMs = oneWayMs
  return p
}

t.test('window auto-tuning: at a 50 ms round trip a busy stream\'s window grows past its initial size, within maxWindow', async t => {
  const initialWindow = 256 * 1024
  const maxWindow = 4 * 1024 * 1024
  const { a, b } = delayedPair(t, 25, { initialWindow, maxWindow })
  const stream = a.open('bulk')
  const sent = writeAll(stream, 24 * 1024 * 1024)
  const peer = await b.nextStream()
  const seen: number[] = []
  peer.on('data', () => seen.push(peer.receiveWindow))
  const got = await hashAll(peer)
  t.same(got, await sent, 'every byte, in order')
  const largest = Math.max(...seen)
  t.ok(largest > 4 * initialWindow, `the window grew to the path (largest ${largest} bytes)`)
  t.ok(largest <= maxWindow, 'and never past maxWindow')
  stream.resume()
  peer.end()
  await streamClosed(peer, 'receiver closed')
  await streamClosed(stream, 'sender closed')
  t.equal(b.mux.windowBudgetFree, 64 * 1024 * 1024, 'its growth went back to the link\'s budget when it closed')
})

t.test('window auto-tuning: a reader that stops gets no growth; memory stays at the initial window', async t => {
  const initialWindow = 128 * 1024
  const { a, b } = delayedPair(t, 10, { initialWindow, maxWindow: 8 * 1024 * 1024 })
  const stream = a.open('stalled')
  void writeAll(stream, 16 * 1024 * 1024, 64 * 1024, false)
  const peer = await b.nextStream()
  peer.pause()
  await new Promise(resolve => setTimeout(resolve, 500))
  t.equal(peer.receiveWindow, initialWindow, 'the window did not grow')
  t.ok(peer.readableLength <= initialWindow, `buffered ${peer.readableLength} bytes, at most one initial window`)
  stream.destroy()
})

t.test('window auto-tuning: streams grow only within the link\'s budget', async t => {
  const initialWindow = 128 * 1024
  const windowBudget = 512 * 1024
  const { a, b } = delayedPair(t, 25, { initialWindow, maxWindow: 8 * 1024 * 1024, windowBudget })
  const streams = [a.open('one'), a.open('two'), a.open('three')]
  const sent = streams.map(s => writeAll(s, 8 * 1024 * 1024))
  const peers = [await b.nextStream(), await b.nextStream(), await b.nextStream()]
  let largestTotal = 0
  for (const p of peers) p.on('data', () => { largestTotal = Math.max(largestTotal, peers.reduce((sum, q) => sum + q.receiveWindow, 0)) })
  const got = await Promise.all(peers.map(async p => await hashAll(p)))
  t.same(got, await Promise.all(sent))
  t.ok(largestTotal > 3 * initialWindow, 'they grew')
  t.ok(largestTotal <= 3 * initialWindow + windowBudget, `together never past their initial windows plus the budget (${largestTotal})`)
  t.ok(b.mux.windowBudgetFree >= 0)
})

/** Opens a stream from `a`, sends 8 MiB that `b` reads, and leaves it open: its receive window has grown. */
async function grownStream (a: Side, b: Side, name: string): Promise<{ stream: MuxStream, peer: MuxStream }> {
  const stream = a.open(name)
  void writeAll(stream, 8 * 1024 * 1024, 64 * 1024, false)
  const peer = await b.nextStream()
  let got = 0
  peer.on('data', (c: Buffer) => { got += c.length })
  await until(() => got === 8 * 1024 * 1024, 10_000, `the bulk part of ${name}`)
  return { stream, peer }
}

t.test('window auto-tuning: a stream that grew and went idle gives its growth back, so a later stream on the link can grow', async t => {
  const initialWindow = 128 * 1024
  const windowBudget = 1024 * 1024
  const { a, b } = delayedPair(t, 10, { initialWindow, maxWindow: 8 * 1024 * 1024, windowBudget, windowReviewMs: 200 })
  // A download that takes the whole budget, then stays open and quiet (a kept-alive connection after its response).
  const { stream: first, peer: peer1 } = await grownStream(a, b, 'first')
  t.ok(peer1.receiveWindow > initialWindow, `the first stream grew (${peer1.receiveWindow})`)
  t.equal(b.mux.windowBudgetFree, 0, 'and took the link\'s whole budget')

  await settle(300)
  const second = a.open('second')
  const sent2 = writeAll(second, 8 * 1024 * 1024)
  const peer2 = await b.nextStream()
  let largest = 0
  peer2.on('data', () => { largest = Math.max(largest, peer2.receiveWindow) })
  t.same(await hashAll(peer2, 'the second download'), await sent2, 'the second download arrives intact')
  t.equal(peer1.receiveWindow, initialWindow, 'the idle stream went back to its initial window')
  t.ok(largest > initialWindow, `the second stream grew with the budget the idle one gave back (largest ${largest})`)
  t.ok(b.mux.windowBudgetFree >= 0)
  first.destroy()
})

t.test('window auto-tuning: a grown stream that slows to a trickle keeps a window of four times what it moves per review, and gives the rest back', async t => {
  const initialWindow = 64 * 1024
  const windowBudget = 16 * 1024 * 1024
  const { a, b } = delayedPair(t, 10, { initialWindow, maxWindow: 8 * 1024 * 1024, windowBudget, windowReviewMs: 200 })
  const { stream: s, peer } = await grownStream(a, b, 'trickle')
  const grown = peer.receiveWindow
  t.ok(grown >= 1024 * 1024, `the stream grew (${grown})`)
  // Then 32 KiB every 50 ms: 128 KiB per 200 ms review, a window of 512 KiB covers it four times over.
  const trickle = setInterval(() => s.write(randomBytes(32 * 1024)), 50)
  t.teardown(() => clearInterval(trickle))
  await until(() => peer.receiveWindow <= 512 * 1024, 10_000, 'the window shrinks to what the trickle needs')
  clearInterval(trickle)
  t.ok(peer.receiveWindow >= initialWindow, `not below the initial window (${peer.receiveWindow})`)
  t.ok(peer.receiveWindow >= 256 * 1024, `nor below four times what it moves per review (${peer.receiveWindow})`)
  t.equal(b.mux.windowBudgetFree, windowBudget - (peer.receiveWindow - initialWindow), 'the rest went back to the link\'s budget')
  s.destroy()
})

t.test('window auto-tuning: with openWindowBoost a new stream starts with more window from the budget, which comes back when unused', async t => {
  const initialWindow = 128 * 1024
  const openWindowBoost = 384 * 1024
  const windowBudget = 640 * 1024
  const { a, b } = pair(t, { initialWindow, openWindowBoost, windowBudget, windowReviewMs: 100 }, { initialWindow, openWindowBoost, windowBudget, windowReviewMs: 100 })
  const opened = a.open('boosted')
  t.equal(opened.receiveWindow, initialWindow + openWindowBoost, 'the opener\'s stream starts with the boost')
  const accepted = await b.nextStream()
  t.equal(accepted.receiveWindow, initialWindow + openWindowBoost, 'so does the accepting side\'s')
  await until(() => accepted.sendWindow === initialWindow + openWindowBoost && opened.sendWindow === initialWindow + openWindowBoost, 3000, 'each side hears the other\'s boost as credit')
  t.equal(a.mux.windowBudgetFree, windowBudget - openWindowBoost, 'the boost came out of the link\'s budget')
  const second = a.open('second')
  t.equal(second.receiveWindow, initialWindow + windowBudget - openWindowBoost, 'a second stream gets what the budget has left, no more')
  t.equal(a.mux.windowBudgetFree, 0)
  await b.nextStream()

  // Quiet for a review period, then data on another stream: the unused boosts go back.
  await settle(150)
  const third = a.open('third')
  const peer3 = await b.nextStream()
  peer3.write(randomBytes(1024))
  await until(() => opened.receiveWindow === initialWindow && second.receiveWindow === initialWindow, 3000, 'the unused boosts return')
  t.ok(a.mux.windowBudgetFree > 0, `the budget has room again (${a.mux.windowBudgetFree})`)
  for (const s of [opened, second, third]) s.destroy()
})

t.test('session frames are not queued behind bulk data', async t => {
  const chunkSize = 16 * 1024
  const highWaterMark = 64 * 1024
  const { a, b } = pair(t, { chunkSize, highWaterMark, initialWindow: 1024 * 1024 }, { chunkSize, highWaterMark, initialWindow: 1024 * 1024 })
  const total = 8 * 1024 * 1024
  const s = a.open('bulk')
  const bs = await b.nextStream()

  let received = 0
  let bulkDone = false
  const sentAt = new Map<number, number>()
  const arrivedAt = new Map<number, number>()
  const answeredBeforeBulkEnd = new Set<number>()
  let nextSeq = 1
  let nextMark = 256 * 1024

  bs.on('data', (c: Buffer) => {
    received += c.length
    // Every 256 KB received, the dialer sends a check-in (from inside the bulk transfer).
    while (received >= nextMark && nextSeq <= 20) {
      const seq = nextSeq++
      sentAt.set(seq, received)
      a.mux.send(frames.checkin(seq))
      nextMark += 256 * 1024
    }
  })

  // The listener answers every check-in at once; the dialer notes answers that beat the bulk.
  b.onFrame = f => {
    if (f.type !== FrameType.CHECKIN) return
    const { seq } = decodeCheckin(f.payload)
    arrivedAt.set(seq, received)
    b.mux.send(frames.checkinAnswer({ seq, flags: CheckinFlag.TUNNEL, intervalSeconds: 5 }))
  }
  a.onFrame = f => {
    if (f.type === FrameType.CHECKIN_ANSWER && !bulkDone) answeredBeforeBulkEnd.add(decodeCheckinAnswer(f.payload).seq)
  }

  const [sent] = await Promise.all([
    writeAll(s, total, 256 * 1024),
    within(once(bs, 'end'), 20_000, 'bulk ends').then(() => { bulkDone = true })
  ])
  t.equal(received, total)
  t.ok(sent.bytes === total)
  t.equal(sentAt.size, 20, 'twenty check-ins sent during the transfer')
  t.equal(arrivedAt.size, 20, 'all arrived before the bulk transfer ended')
  for (const [seq, at] of sentAt) {
    const delay = (arrivedAt.get(seq) ?? Infinity) - at
    t.ok(delay <= highWaterMark + 2 * chunkSize, `check-in ${seq} waited behind ${delay} bulk bytes (at most one buffer)`)
  }
  t.ok(answeredBeforeBulkEnd.size >= 19, `answers reached the dialer during the transfer (${answeredBeforeBulkEnd.size})`)
})

t.test('RESET from one side errors the other side with a coded error; the link lives on', async t => {
  const { a, b } = pair(t)

  // A coded error keeps its code across the link.
  const s1 = a.open('one')
  const b1 = await b.nextStream()
  b1.destroy(new RelaygateError('RG_ERR_QUEUE_FULL', 'no room'))
  t.equal((await errorOf(s1)).code, 'RG_ERR_QUEUE_FULL')

  // A plain error becomes RG_ERR_STREAM_RESET.
  const s2 = a.open('two')
  const b2 = await b.nextStream()
  s2.destroy(new Error('local failure'))
  t.equal((await errorOf(b2)).code, 'RG_ERR_STREAM_RESET')

  // destroy() without an error, mid-stream, is a reset too.
  const s3 = a.open('three')
  s3.write('partial')
  const b3 = await b.nextStream()
  b3.destroy()
  const e3 = await errorOf(s3)
  t.equal(e3.code, 'RG_ERR_STREAM_RESET')
  t.equal(e3.closeCode, ErrorCode.RG_ERR_STREAM_RESET.close)

  // A reset while the sender is blocked on credit releases it.
  const s4 = a.open('four')
  const b4 = await b.nextStream()
  const blocked = writeAll(s4, 2 * 1024 * 1024).catch((err: unknown) => err)
  await until(() => b4.readableLength > 0 && s4.sendWindow === 0, 5000, 'sender blocked on credit')
  b4.destroy(new RelaygateError('RG_ERR_STREAM_RESET', 'enough'))
  t.equal((await errorOf(s4)).code, 'RG_ERR_STREAM_RESET')
  t.ok((await within(blocked, 3000, 'blocked writer released')) instanceof Error, 'the blocked writer fails')

  await until(() => a.mux.streamCount === 0 && b.mux.streamCount === 0, 3000, 'streams are forgotten')
  t.notOk(a.mux.closed)
  t.notOk(b.mux.closed)

  // The link still works.
  const s5 = a.open('after')
  s5.end('still fine')
  t.equal((await readAll(await b.nextStream())).toString(), 'still fine')
})

t.test('late data for a stream that was reset is dropped, not a protocol error', async t => {
  const { a, b } = pair(t, { initialWindow: 1024 * 1024 }, { initialWindow: 1024 * 1024 })
  const s = a.open('x')
  const bs = await b.nextStream()
  const writing = writeAll(s, 1024 * 1024, 16 * 1024).catch(() => {})
  await until(() => bs.readableLength > 0, 3000, 'data flows')
  bs.destroy()
  await errorOf(s)
  await writing
  await settle(20)
  t.notOk(b.mux.closed, 'the listener did not treat late DATA as an error')
  t.notOk(a.mux.closed)
})

t.test('maxStreams exceeded at the peer: the opener\'s stream is reset with RG_ERR_TOO_MANY_STREAMS', async t => {
  const { a, b } = pair(t, { maxStreams: 10 }, { maxStreams: 2 })
  const s1 = a.open('1')
  const s2 = a.open('2')
  const s3 = a.open('3')
  t.equal((await errorOf(s3, 'third stream refused')).code, 'RG_ERR_TOO_MANY_STREAMS')
  t.equal(b.accepted.length, 2, 'the listener accepted two')
  t.equal(b.mux.streamCount, 2)

  // The first two still work.
  s1.end('one')
  s2.end('two')
  const b1 = await b.nextStream()
  const b2 = await b.nextStream()
  t.same([b1.meta.toString(), b2.meta.toString()], ['1', '2'])
  t.equal((await readAll(b1)).toString(), 'one')
  t.equal((await readAll(b2)).toString(), 'two')
  s1.resume()
  s2.resume()
  b1.end()
  b2.end()
  await Promise.all([streamClosed(s1), streamClosed(s2)])
  await until(() => b.mux.streamCount === 0, 3000, 'listener forgets them')

  // Room again.
  const s4 = a.open('4')
  s4.end('four')
  t.equal((await readAll(await b.nextStream())).toString(), 'four', 'a new stream fits once others closed')
})

t.test('maxStreams locally: openStream throws RG_ERR_TOO_MANY_STREAMS', async t => {
  const { a } = pair(t, { maxStreams: 2 })
  a.open()
  a.open()
  t.throws(() => a.open(), { code: 'RG_ERR_TOO_MANY_STREAMS' })
  t.equal(a.mux.streamCount, 2)
})

t.test('a peer without onStream refuses streams', async t => {
  const [ta, tb] = MemoryTransport.pair()
  const a = side(ta, { role: 'dialer' })
  const b = new Mux(tb, { role: 'listener' })
  t.teardown(async () => { await Promise.all([a.mux.destroy(), b.destroy()]) })
  const s = a.open()
  t.equal((await errorOf(s)).code, 'RG_ERR_STREAM_REFUSED')
})

interface Violation {
  name: string
  frames: () => Buffer[]
  code: ErrorCodeName
}

const DATA = FrameType.DATA
const violations: Violation[] = [
  { name: 'unknown frame type', frames: () => [Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0])], code: 'RG_ERR_PROTOCOL' },
  { name: 'garbage bytes', frames: () => [Buffer.from('GET / HTTP/1.1\r\n\r\n')], code: 'RG_ERR_PROTOCOL' },
  { name: 'frame over maxPayload', frames: () => [encodeFrame(FrameType.CONTROL, 0, 0, Buffer.alloc(4097))], code: 'RG_ERR_FRAME_TOO_LARGE' },
  { name: 'DATA beyond the window in one frame', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(DATA, 0, 1, Buffer.alloc(1025))], code: 'RG_ERR_FLOW_CONTROL' },
  { name: 'DATA beyond the window over several frames', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(DATA, 0, 1, Buffer.alloc(600)), encodeFrame(DATA, 0, 1, Buffer.alloc(600))], code: 'RG_ERR_FLOW_CONTROL' },
  { name: 'WINDOW that overflows the credit', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(FrameType.WINDOW, 0, 1, encodeWindow(0xffffffff))], code: 'RG_ERR_FLOW_CONTROL' },
  { name: 'DATA for a stream never opened', frames: () => [encodeFrame(DATA, 0, 7, Buffer.from('x'))], code: 'RG_ERR_PROTOCOL' },
  { name: 'DATA for our own stream id never opened', frames: () => [encodeFrame(DATA, 0, 8, Buffer.from('x'))], code: 'RG_ERR_PROTOCOL' },
  { name: 'OPEN with the wrong parity', frames: () => [encodeFrame(FrameType.OPEN, 0, 2)], code: 'RG_ERR_PROTOCOL' },
  { name: 'OPEN of stream 0', frames: () => [encodeFrame(FrameType.OPEN, 0, 0)], code: 'RG_ERR_PROTOCOL' },
  { name: 'OPEN reusing an id', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(FrameType.OPEN, 0, 1)], code: 'RG_ERR_PROTOCOL' },
  { name: 'OPEN going backwards', frames: () => [encodeFrame(FrameType.OPEN, 0, 5), encodeFrame(FrameType.OPEN, 0, 3)], code: 'RG_ERR_PROTOCOL' },
  { name: 'DATA after FIN', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(DATA, FrameFlag.FIN, 1), encodeFrame(DATA, 0, 1, Buffer.from('x'))], code: 'RG_ERR_PROTOCOL' },
  { name: 'session frame on a stream id', frames: () => [encodeFrame(FrameType.CHECKIN, 0, 5, Buffer.from([0, 1]))], code: 'RG_ERR_PROTOCOL' },
  { name: 'PING of the wrong size', frames: () => [encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(3))], code: 'RG_ERR_PROTOCOL' },
  { name: 'WINDOW of zero', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(FrameType.WINDOW, 0, 1, Buffer.alloc(4))], code: 'RG_ERR_PROTOCOL' },
  { name: 'WINDOW of the wrong size', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(FrameType.WINDOW, 0, 1, Buffer.alloc(2, 1))], code: 'RG_ERR_PROTOCOL' },
  { name: 'GOAWAY too short', frames: () => [encodeFrame(FrameType.GOAWAY, 0, 0, Buffer.alloc(1))], code: 'RG_ERR_PROTOCOL' },
  { name: 'RESET too short', frames: () => [encodeFrame(FrameType.OPEN, 0, 1), encodeFrame(FrameType.RESET, 0, 1)], code: 'RG_ERR_PROTOCOL' }
]

t.test('bad input from the peer closes the link with the matching close code', async t => {
  for (const v of violations) {
    await t.test(v.name, async t => {
      const { raw, b, rawClosed } = rawPeer(t, { initialWindow: 1024, maxPayload: 4096 })
      // Accepted streams are not read, so no credit goes back.
      for (const frame of v.frames()) raw.send(frame)
      const info = await within(b.closed, 3000, 'listener closes the link')
      t.equal(codeOf(info), v.code, `onClose reports ${v.code}`)
      t.equal(info.code, ErrorCode[v.code].close, 'with its close code')
      const seen = await within(rawClosed, 3000, 'the raw peer sees the close')
      t.equal(seen.code, ErrorCode[v.code].close, 'the peer receives the close code')
      t.equal(b.closes.length, 1, 'onClose fires once')
      t.ok(b.mux.closed)
      for (const s of b.accepted) t.ok(s.destroyed, 'open streams are destroyed with the link')
    })
  }
})

t.test('a peer that sends more than the window (crafted DATA) ends the link with RG_ERR_FLOW_CONTROL', async t => {
  const initialWindow = 4096
  const { raw, b, rawClosed, received } = rawPeer(t, { initialWindow, maxPayload: 64 * 1024 })
  raw.send(encodeFrame(FrameType.OPEN, 0, 1, Buffer.from('m')))
  const bs = await b.nextStream()
  // Within the window: fine.
  raw.send(encodeFrame(DATA, 0, 1, Buffer.alloc(initialWindow, 1)))
  await until(() => bs.readableLength === initialWindow, 3000, 'the window is filled')
  t.notOk(b.mux.closed, 'exactly the window is allowed')
  t.equal(received.filter(f => f.type === FrameType.WINDOW).length, 0, 'no credit was granted (nothing read)')
  // One byte more.
  raw.send(encodeFrame(DATA, 0, 1, Buffer.alloc(1)))
  const info = await within(b.closed, 3000, 'closed')
  t.equal(codeOf(info), 'RG_ERR_FLOW_CONTROL')
  t.equal((await rawClosed).code, ErrorCode.RG_ERR_FLOW_CONTROL.close)
  t.equal((await errorOf(bs)).code, 'RG_ERR_FLOW_CONTROL', 'the stream fails with the link error')
})

t.test('credit is granted back as the reader consumes, so a raw peer may send more than one window in total', async t => {
  const initialWindow = 4096
  const { raw, b, received } = rawPeer(t, { initialWindow })
  raw.send(encodeFrame(FrameType.OPEN, 0, 1))
  const bs = await b.nextStream()
  const got = readAll(bs)
  let credit = initialWindow
  let sent = 0
  const total = 10 * initialWindow
  let seenWindows = 0
  while (sent < total) {
    const n = Math.min(credit, 1000, total - sent)
    if (n > 0) {
      raw.send(encodeFrame(DATA, 0, 1, Buffer.alloc(n, sent & 0xff)))
      sent += n
      credit -= n
      continue
    }
    await until(() => received.filter(f => f.type === FrameType.WINDOW).length > seenWindows, 3000, 'a WINDOW frame')
    const windows = received.filter(f => f.type === FrameType.WINDOW)
    for (const w of windows.slice(seenWindows)) {
      t.equal(w.streamId, 1)
      credit += w.payload.readUInt32BE(0)
    }
    seenWindows = windows.length
  }
  raw.send(encodeFrame(DATA, FrameFlag.FIN, 1))
  t.equal((await got).length, total)
  t.notOk(b.mux.closed)
  t.ok(credit <= initialWindow, 'credit never exceeds the window')
})

t.test('malformed bytes from a Mux peer: the link is destroyed with RG_ERR_PROTOCOL on both sides', async t => {
  const { a, b } = pair(t)
  const s = a.open('x')
  const bs = await b.nextStream()
  a.transport.send(Buffer.from([0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
  const [ia, ib] = await within(Promise.all([a.closed, b.closed]), 3000, 'both close')
  t.equal(codeOf(ib), 'RG_ERR_PROTOCOL', 'the receiver reports RG_ERR_PROTOCOL')
  t.equal(ib.code, ErrorCode.RG_ERR_PROTOCOL.close)
  t.equal(codeOf(ia), 'RG_ERR_PROTOCOL', 'the sender learns it from the close code')
  t.equal(ia.code, ErrorCode.RG_ERR_PROTOCOL.close)
  t.equal((await errorOf(s)).code, 'RG_ERR_PROTOCOL')
  t.equal((await errorOf(bs)).code, 'RG_ERR_PROTOCOL')
  t.throws(() => a.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_CLOSED' })
})

t.test('PING is answered with ACK carrying the same payload', async t => {
  const { raw, received } = rawPeer(t)
  const payload = Buffer.from('01234567')
  raw.send(encodeFrame(FrameType.PING, 0, 0, payload))
  raw.send(encodeFrame(FrameType.PING, FrameFlag.ACK, 0, payload)) // an answer is not answered
  await until(() => received.length > 0, 3000, 'pong')
  await settle(20)
  t.equal(received.length, 1, 'one answer, for the ping only')
  t.equal(received[0].type, FrameType.PING)
  t.equal(received[0].flags, FrameFlag.ACK)
  t.same(received[0].payload, payload)
})

t.test('session frames reach onFrame in order', async t => {
  const { a, b } = pair(t)
  a.mux.send(frames.checkin(1))
  a.mux.send(frames.control({ kind: 'delta', n: 2 }))
  a.mux.sendFrame(FrameType.ERROR, 0, encodeCodeReason(4000, 'x'))
  a.mux.send(frames.checkinAnswer({ seq: 4, flags: CheckinFlag.WORK, intervalSeconds: 10 }))
  await until(() => b.frames.length === 4, 3000, 'four frames')
  t.same(b.frames.map(f => f.type), [FrameType.CHECKIN, FrameType.CONTROL, FrameType.ERROR, FrameType.CHECKIN_ANSWER])
  t.same(JSON.parse(b.frames[1].payload.toString()), { kind: 'delta', n: 2 })
  t.equal(a.frames.length, 0)
})

t.test('keep-alive: an answering peer keeps the link up past the liveness timeout', async t => {
  // Margins are wide (a 350 ms stall of a loaded machine is tolerated): the point is
  // that pings answered again and again keep the link up for twice the timeout.
  const keepAliveMs = 40
  const livenessTimeoutMs = 400
  const { a, b } = pair(t, { keepAliveMs, livenessTimeoutMs })
  const pingBytes = HEADER_SIZE + 8
  const started = Date.now()
  await until(() => a.mux.closed || (Date.now() - started > 2 * livenessTimeoutMs && a.mux.bytesIn >= 5 * pingBytes), 10_000, 'pings answered for twice the liveness timeout')
  t.notOk(a.mux.closed, 'the pinging side is still up')
  t.notOk(b.mux.closed)
  t.ok(b.mux.bytesIn >= 5 * pingBytes, `pings were sent (${b.mux.bytesIn / pingBytes})`)
  t.ok(a.mux.bytesIn >= 5 * pingBytes, 'and answered')
  t.equal(b.mux.bytesOut, b.mux.bytesIn, 'every ping got its answer (the listener sends nothing else)')
  t.same(a.closes, [])
})

t.test('keep-alive: a peer that stops answering is destroyed with RG_ERR_LIVENESS', async t => {
  for (const opts of [{ keepAliveMs: 50, livenessTimeoutMs: 200 }, { keepAliveMs: 50 }]) {
    await t.test(JSON.stringify(opts), async t => {
      const { a, b } = pair(t, opts)
      const s = a.open('x')
      await b.nextStream()
      t.notOk(a.mux.closed, 'up while the peer reads')
      b.transport.pause() // the listener stops reading: pings go unanswered
      const info = await within(a.closed, 5000, 'liveness timeout')
      t.equal(codeOf(info), 'RG_ERR_LIVENESS')
      t.equal(info.code, ErrorCode.RG_ERR_LIVENESS.close)
      t.equal((await errorOf(s)).code, 'RG_ERR_LIVENESS', 'open streams fail with the link')
      const ib = await within(b.closed, 3000, 'the peer sees the close')
      t.equal(codeOf(ib), 'RG_ERR_LIVENESS', 'the peer learns why from the close code')
    })
  }
})

t.test('liveness timeout without pings: a silent peer is dropped', async t => {
  const { a } = pair(t, { livenessTimeoutMs: 100 })
  const info = await within(a.closed, 3000, 'liveness')
  t.equal(codeOf(info), 'RG_ERR_LIVENESS')
})

t.test('GOAWAY: no new streams either way, existing streams finish', async t => {
  const { a, b } = pair(t)
  const s = a.open('before')
  const bs = await b.nextStream()
  s.write('first half ')

  b.mux.goAway(1000, 'maintenance')
  const raced = a.open('raced') // sent before the GOAWAY arrived: the listener refuses it
  t.throws(() => b.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_GOING_AWAY' }, 'the side going away opens nothing')
  await until(() => a.goAways.length === 1, 3000, 'onGoAway fires')
  t.same(a.goAways, [{ code: 1000, reason: 'maintenance' }])
  t.throws(() => a.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_GOING_AWAY' }, "the peer's openStream throws")
  t.equal((await errorOf(raced)).code, 'RG_ERR_GOING_AWAY', 'a stream that crossed the GOAWAY is refused')

  b.mux.goAway() // idempotent
  await settle(10)
  t.equal(a.goAways.length, 1, 'one GOAWAY only')

  // The existing stream finishes both ways.
  const back = readAll(s)
  s.end('second half')
  t.equal((await readAll(bs)).toString(), 'first half second half')
  bs.end('reply')
  t.equal((await back).toString(), 'reply')
  await streamClosed(s)
  t.notOk(a.mux.closed, 'GOAWAY alone does not close the link')
})

t.test('close() is graceful: waits for open streams, then closes cleanly; idempotent', async t => {
  const { a, b } = pair(t)
  const s = a.open('work')
  const bs = await b.nextStream()

  const closing = a.mux.close()
  t.equal(a.mux.close(), closing, 'a second close() returns the same promise')
  t.throws(() => a.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_GOING_AWAY' }, 'no new streams while closing')
  await until(() => b.goAways.length === 1, 3000, 'the peer is told')
  t.notOk(a.mux.closed, 'still open while a stream is running')

  // The stream still works.
  const back = readAll(s)
  s.end('done?')
  t.equal((await readAll(bs)).toString(), 'done?')
  t.notOk(a.mux.closed, 'still open: the peer has not finished')
  bs.end('done.')
  t.equal((await back).toString(), 'done.')

  await within(closing, 3000, 'close() resolves once streams finished')
  t.ok(a.mux.closed)
  const [ia, ib] = await Promise.all([a.closed, b.closed])
  t.equal(ia.code, 1000)
  t.equal(ia.error, undefined, 'a clean close has no error')
  t.equal(ib.code, 1000)
  t.equal(ib.error, undefined)

  await a.mux.close()
  await a.mux.destroy(new Error('late'))
  t.equal(a.closes.length, 1, 'onClose fired once')
  t.equal(b.closes.length, 1)
  t.throws(() => a.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_CLOSED' })
  t.throws(() => b.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_CLOSED' })
  a.mux.send(frames.checkin(1)) // ignored, does not throw
  a.mux.goAway()
  t.pass('calls after close do not throw')
})

t.test('close() with no streams closes at once; a stuck stream is cut after closeTimeoutMs', async t => {
  await t.test('no streams', async t => {
    const { a, b } = pair(t)
    await within(a.mux.close(), 3000, 'close')
    t.equal((await b.closed).error, undefined)
  })
  await t.test('stuck stream', async t => {
    const { a, b } = pair(t, { closeTimeoutMs: 100 })
    const s = a.open('stuck')
    const bs = await b.nextStream()
    const started = Date.now()
    await within(a.mux.close(), 3000, 'close gives up waiting')
    t.ok(Date.now() - started >= 90, 'waited for the stream first')
    t.ok(a.mux.closed)
    t.ok((await errorOf(s)) instanceof RelaygateError, 'the stuck stream fails')
    t.ok((await errorOf(bs)) instanceof RelaygateError, "and the peer's end too")
  })
})

t.test('destroy() is immediate and idempotent; the peer learns the code', async t => {
  const cases: Array<{ err: unknown, local?: ErrorCodeName, close: number, remote?: ErrorCodeName }> = [
    { err: undefined, local: undefined, close: 1000, remote: undefined },
    { err: new RelaygateError('RG_ERR_REPLACED'), local: 'RG_ERR_REPLACED', close: 4012, remote: 'RG_ERR_REPLACED' },
    { err: new RelaygateError('RG_ERR_ENDPOINT_DELETED', 'gone'), local: 'RG_ERR_ENDPOINT_DELETED', close: 4013, remote: 'RG_ERR_ENDPOINT_DELETED' },
    { err: new Error('boom'), local: 'RG_ERR_INTERNAL', close: 4019, remote: 'RG_ERR_INTERNAL' },
    { err: new RelaygateError('RG_ERR_CLOSED'), local: 'RG_ERR_CLOSED', close: 4019, remote: 'RG_ERR_INTERNAL' }
  ]
  for (const c of cases) {
    await t.test(String(c.local), async t => {
      const { a, b } = pair(t)
      const s = a.open('x')
      const bs = await b.nextStream()
      const p1 = a.mux.destroy(c.err)
      t.ok(a.mux.closed, 'closed at once')
      t.equal(a.closes.length, 1, 'onClose fired synchronously')
      t.equal(a.closes[0].code, c.close)
      t.equal(codeOf(a.closes[0]), c.local)
      const p2 = a.mux.destroy(new RelaygateError('RG_ERR_AUTH'))
      t.equal(p1, p2, 'same promise')
      await within(p1, 3000, 'destroy resolves')
      t.equal(a.closes.length, 1, 'onClose fired once')
      t.equal(codeOf(a.closes[0]), c.local, 'the first reason stays')
      t.ok(s.destroyed, 'local streams are destroyed')
      await errorOf(s)
      const ib = await within(b.closed, 3000, 'peer closes')
      t.equal(ib.code, c.close, 'the peer gets the close code')
      t.equal(codeOf(ib), c.remote)
      t.ok((await errorOf(bs)) instanceof RelaygateError, "the peer's streams fail")
      t.throws(() => a.mux.openStream(Buffer.alloc(0)), { code: 'RG_ERR_CLOSED' })
      await a.mux.close()
      t.equal(a.closes.length, 1)
    })
  }
})

t.test('whenClosed resolves when the peer goes away', async t => {
  const { a, b } = pair(t)
  const done = a.mux.whenClosed()
  void b.mux.destroy(new RelaygateError('RG_ERR_AUTH'))
  await within(done, 3000, 'whenClosed')
  t.equal(codeOf(a.closes[0]), 'RG_ERR_AUTH')
})

t.test('a transport lost without a close code fails the link with RG_ERR_LIVENESS', async t => {
  const { a, b } = pair(t)
  b.transport.terminate()
  const info = await within(a.closed, 3000, 'close')
  t.equal(info.code, 1006)
  t.equal(codeOf(info), 'RG_ERR_LIVENESS')
})

t.test('drain: a peer that never reads is disconnected after drainTimeoutMs', async t => {
  const { a, b } = pair(t, { drainTimeoutMs: 100, highWaterMark: 16 * 1024, chunkSize: 16 * 1024 })
  const s = a.open('x')
  await b.nextStream()
  b.transport.pause() // stops reading the socket altogether
  const writing = writeAll(s, 1024 * 1024).catch((err: unknown) => err)
  const started = Date.now()
  const info = await within(a.closed, 3000, 'drain timeout')
  t.equal(codeOf(info), 'RG_ERR_DRAIN_TIMEOUT')
  t.equal(info.code, ErrorCode.RG_ERR_DRAIN_TIMEOUT.close)
  t.ok(Date.now() - started >= 90, 'not before the timeout')
  t.ok(a.transport.bufferedAmount <= 16 * 1024 + 16 * 1024 + HEADER_SIZE, `buffered stayed bounded (${a.transport.bufferedAmount})`)
  t.ok((await within(writing, 3000, 'writer released')) instanceof Error, 'the writer fails')
  t.equal(codeOf(await within(b.closed, 3000, 'peer closed')), 'RG_ERR_DRAIN_TIMEOUT')
})

t.test('drain: session frames past maxBufferedBytes disconnect at once', async t => {
  const maxBufferedBytes = 256 * 1024
  const { a } = pair(t, { maxBufferedBytes, highWaterMark: 64 * 1024 })
  a.transport.peer.pause()
  const payload = Buffer.alloc(16 * 1024)
  let sent = 0
  while (!a.mux.closed && sent < 1000) {
    a.mux.send(encodeFrame(FrameType.CONTROL, 0, 0, payload))
    sent++
    t.ok(a.transport.bufferedAmount <= maxBufferedBytes + payload.length + HEADER_SIZE || a.mux.closed)
  }
  t.ok(a.mux.closed, 'destroyed')
  t.ok(sent <= maxBufferedBytes / payload.length + 1, `after ${sent} frames, not more`)
  t.equal(codeOf(a.closes[0]), 'RG_ERR_DRAIN_TIMEOUT')
})

t.test('drain: a slow but steady reader is not disconnected (regression: drain timer never reset during a long transfer)', async t => {
  const drainTimeoutMs = 200
  const { a, b } = pair(t, { drainTimeoutMs, keepAliveMs: 20, livenessTimeoutMs: 10_000, highWaterMark: 64 * 1024, chunkSize: 16 * 1024 })
  const s = a.open('long')
  const bs = await b.nextStream()
  // The reading side takes in one batch of messages every 10 ms (far below the
  // drain timeout), so the sender's buffer sits above its high-water mark nearly
  // all the time, and the transfer (about 64 KB per step) lasts several drain timeouts.
  b.transport.pause()
  const step = setInterval(() => {
    b.transport.resume()
    setImmediate(() => b.transport.pause())
  }, 10)
  t.teardown(() => clearInterval(step))
  const total = 4 * 1024 * 1024
  const started = Date.now()
  let result: [{ sha: string, bytes: number }, { sha: string, bytes: number }] | undefined
  try {
    result = await Promise.all([writeAll(s, total, 64 * 1024), hashAll(bs, 'long transfer')])
  } finally {
    clearInterval(step)
    b.transport.resume()
  }
  const elapsed = Date.now() - started
  t.ok(elapsed > 2 * drainTimeoutMs, `the transfer outlasted the drain timeout twice over (${elapsed} ms)`)
  t.notOk(a.mux.closed, 'still connected')
  t.same(a.closes, [])
  t.equal(result[1].sha, result[0].sha)
})

t.test('a mux high-water mark below the transport\'s does not stall sending', async t => {
  const { a, b } = pair(t, { highWaterMark: 8 * 1024, initialWindow: 4 * 1024 * 1024 }, { initialWindow: 4 * 1024 * 1024 }, 256 * 1024)
  const s = a.open('x')
  const bs = await b.nextStream()
  const [sent, got] = await Promise.all([writeAll(s, 2 * 1024 * 1024), hashAll(bs, 'transfer over a mismatched high-water mark')])
  t.equal(got.sha, sent.sha)
})

t.test('flow control holds with many streams at once (round-robin)', async t => {
  const { a, b } = pair(t, { initialWindow: 32 * 1024 }, { initialWindow: 32 * 1024 })
  const n = 20
  const results = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const s = a.open(`s${i}`)
    const bs = await new Promise<MuxStream>(resolve => {
      const check = (): void => {
        const found = b.accepted.find(x => x.meta.toString() === `s${i}`)
        if (found !== undefined) resolve(found)
        else setImmediate(check)
      }
      check()
    })
    const [sent, got] = await Promise.all([writeAll(s, 256 * 1024 + i * 1000, 10_000), hashAll(bs, `stream ${i}`)])
    return sent.sha === got.sha
  }))
  t.same(results, Array(n).fill(true), 'every stream intact')
})

t.test('encodeJson is what CONTROL carries', async t => {
  const { a, b } = pair(t)
  a.mux.sendFrame(FrameType.CONTROL, 0, encodeJson({ ok: true }))
  await until(() => b.frames.length === 1, 3000, 'control frame')
  t.same(JSON.parse(b.frames[0].payload.toString()), { ok: true })
})

/** A transport scripted by the test: records what is sent, reports what it is told to. */
class StubTransport {
  readonly remote = 'stub'
  bufferedAmount = 0
  sent: Buffer[] = []
  closes: Array<{ code: number, reason: string }> = []
  terminated = 0
  throwOnClose = false
  /** Buffered bytes added per send (0: the "socket" takes everything at once). */
  growth = 0
  events: Parameters<MemoryTransport['attach']>[0] | null = null
  attach (events: Parameters<MemoryTransport['attach']>[0]): void { this.events = events }
  send (data: Buffer): boolean {
    this.sent.push(data)
    this.bufferedAmount += this.growth === 0 ? 0 : data.length
    return true
  }

  close (code: number, reason: string): void {
    this.closes.push({ code, reason })
    if (this.throwOnClose) throw new Error('close failed')
  }

  terminate (): void { this.terminated++ }
}

t.test('close() gives up on a transport that never reports the close, and terminates it', async t => {
  const stub = new StubTransport()
  const closes: CloseInfo[] = []
  const mux = new Mux(stub, { role: 'dialer', closeTimeoutMs: 50, onClose: info => closes.push(info) })
  t.teardown(async () => { await mux.destroy() })
  await within(mux.close(), 3000, 'close gives up')
  t.same(stub.closes.map(c => c.code), [1000], 'asked the transport to close')
  t.equal(stub.terminated, 1, 'then terminated it')
  t.equal(closes.length, 1)
  t.equal(closes[0].code, 1006)
  t.ok(mux.closed)
  const goAway = new FrameDecoder().push(stub.sent[0])
  t.equal(goAway[0].type, FrameType.GOAWAY, 'a GOAWAY went out first')
})

t.test('destroy() terminates a transport whose close() throws', async t => {
  const stub = new StubTransport()
  stub.throwOnClose = true
  const closes: CloseInfo[] = []
  const mux = new Mux(stub, { role: 'dialer', onClose: info => closes.push(info) })
  await mux.destroy(new RelaygateError('RG_ERR_AUTH'))
  t.equal(stub.terminated, 1)
  t.equal(closes.length, 1)
  t.equal(codeOf(closes[0]), 'RG_ERR_AUTH')
})

t.test('a missed drain event does not stall sending: the drain timer notices the buffer went down', async t => {
  const stub = new StubTransport()
  stub.growth = 1
  const mux = new Mux(stub, { role: 'dialer', highWaterMark: 16 * 1024, chunkSize: 8 * 1024, drainTimeoutMs: 40 })
  t.teardown(async () => { await mux.destroy() })
  const s = watch(mux.openStream(Buffer.from('x')))
  s.write(Buffer.alloc(64 * 1024))
  await until(() => stub.bufferedAmount >= 16 * 1024, 3000, 'buffer above the high-water mark')
  const sentBefore = stub.sent.length
  await settle(10)
  t.equal(stub.sent.length, sentBefore, 'sending stopped at the high-water mark')
  stub.bufferedAmount = 0 // the socket drained, but no drain event comes
  await until(() => stub.sent.length > sentBefore, 3000, 'sending resumes')
  t.notOk(mux.closed, 'not disconnected: the buffer was low when the timer fired')
})

t.test('zero-length writes are accepted and send nothing', async t => {
  const { a, b } = pair(t)
  const s = a.open('z')
  const bs = await b.nextStream()
  const before = a.mux.bytesOut
  await new Promise<void>((resolve, reject) => s.write(Buffer.alloc(0), err => { if (err != null) reject(err); else resolve() }))
  t.equal(a.mux.bytesOut, before, 'no frame for an empty write')
  s.end('after')
  t.equal((await readAll(bs)).toString(), 'after')
})

t.test('relay cut-through (spliceStreams): bytes cross two links intact both ways, from ephemeral messages, around slow readers', async t => {
  // agent <-> relay (the relay's side gets uWS-style ephemeral messages) and relay <-> server.
  const { a: agent, b: relayAgentSide } = pair(t)
  relayAgentSide.transport.ephemeral = true
  const { a: relayServerSide, b: server } = pair(t)

  const fromServer = server.open('tunnel')
  const up = await relayServerSide.nextStream()
  const down = relayAgentSide.open('tunnel')
  spliceStreams(up, down)
  const atAgent = await agent.nextStream()

  // The server's reader stops for a while: data queues on the slow path, then
  // the cut-through resumes once the queues are empty again.
  server.transport.pause()
  const upload = writeAll(atAgent, 6 * 1024 * 1024, 50_000)
  const download = writeAll(fromServer, 3 * 1024 * 1024, 70_001)
  const [gotUp, gotDown] = await Promise.all([
    (async () => { await settle(150); server.transport.resume(); return await hashAll(fromServer, '6 MB at the server') })(),
    hashAll(atAgent, '3 MB at the agent')
  ])
  const [sentUp, sentDown] = await Promise.all([upload, download])
  t.equal(gotUp.bytes, sentUp.bytes)
  t.equal(gotUp.sha, sentUp.sha, 'agent -> server: same sha256 (the ephemeral buffers were overwritten after each message)')
  t.equal(gotDown.bytes, sentDown.bytes)
  t.equal(gotDown.sha, sentDown.sha, 'server -> agent: same sha256')
  t.ok(down.forwardedBytes > 0, `agent -> server went straight through: ${down.forwardedBytes} bytes`)
  t.ok(down.forwardedBytes < sentUp.bytes, 'and partly the slow way while the server was not reading')
  t.ok(up.forwardedBytes > 0, `server -> agent went straight through: ${up.forwardedBytes} bytes`)
  await Promise.all([streamClosed(up), streamClosed(down)])
})

t.test('relay cut-through over links that keep references (ws with a zero mask): a forwarded frame reuses the room of the message it came in, bytes intact', async t => {
  // Every link hands over the very buffers sent, as `ws` does now that our dialers do not mask.
  const { a: agent, b: relayAgentSide } = pair(t)
  const { a: relayServerSide, b: server } = pair(t)
  for (const s of [agent, relayAgentSide, relayServerSide, server]) s.transport.copiesOnSend = false
  // The ArrayBuffers of the messages the relay received from the server, and of the frames it sent to the agent.
  const fromServerBuffers = new Set<ArrayBufferLike>()
  let framesInPlace = 0
  const delivered = server.transport.send.bind(server.transport)
  server.transport.send = (data: Buffer) => { fromServerBuffers.add(data.buffer); return delivered(data) }
  const relayToAgent = relayAgentSide.transport.send.bind(relayAgentSide.transport)
  relayAgentSide.transport.send = (data: Buffer) => {
    if (data[0] === FrameType.DATA && fromServerBuffers.has(data.buffer)) framesInPlace++
    return relayToAgent(data)
  }

  const fromServer = server.open('tunnel')
  const up = await relayServerSide.nextStream()
  const down = relayAgentSide.open('tunnel')
  spliceStreams(up, down)
  const atAgent = await agent.nextStream()
  const upload = writeAll(atAgent, 4 * 1024 * 1024, 50_000)
  const download = writeAll(fromServer, 4 * 1024 * 1024, 70_001)
  const [gotUp, gotDown] = await Promise.all([hashAll(fromServer, '4 MB at the server'), hashAll(atAgent, '4 MB at the agent')])
  const [sentUp, sentDown] = await Promise.all([upload, download])
  t.equal(gotUp.sha, sentUp.sha, 'agent -> server: same sha256')
  t.equal(gotDown.sha, sentDown.sha, 'server -> agent: same sha256')
  t.ok(up.forwardedBytes > 0, `server -> agent went straight through: ${up.forwardedBytes} bytes`)
  t.ok(framesInPlace > 0, `${framesInPlace} frames went on in the buffer they arrived in (no copy at the relay)`)
  await Promise.all([streamClosed(up), streamClosed(down)])
})

t.test('a buffer with frame room (allocFramed) is framed in place once; a later part of it and any other buffer are copied', async t => {
  const room = allocFramed(1000)
  t.equal(room.length, 1000)
  const rest = room.subarray(400)
  t.notOk(claimFrameRoom(rest), 'a part that does not start the buffer has no room of its own')
  t.notOk(claimFrameRoom(Buffer.alloc(1000)), 'an ordinary buffer has none')
  t.ok(claimFrameRoom(room), 'the start of it has')
  t.notOk(claimFrameRoom(room), 'once only')

  // Over a link that keeps references: a whole record is sent in its own
  // buffer; a record split by a small window still arrives intact.
  const { a, b } = pair(t, { initialWindow: 64 * 1024 }, { initialWindow: 64 * 1024 })
  a.transport.copiesOnSend = false
  const sentBuffers: ArrayBufferLike[] = []
  const send = a.transport.send.bind(a.transport)
  a.transport.send = (data: Buffer) => { if (data[0] === FrameType.DATA) sentBuffers.push(data.buffer); return send(data) }
  const s = a.open('records')
  const bs = await b.nextStream()
  const records = [10_000, 60_000, 100_000].map(n => { const r = allocFramed(n); randomFillSync(r); return r })
  const expected = createHash('sha256')
  for (const r of records) { expected.update(r); s.write(r) }
  s.end()
  const got = await hashAll(bs, 'records')
  t.equal(got.sha, expected.digest('hex'), 'every record arrived intact')
  t.equal(sentBuffers[0], records[0].buffer, 'the first record went out in the buffer it was sealed in')
  t.ok(sentBuffers.filter(buf => buf === records[2].buffer).length <= 1, 'the 100 KB record, split across frames, used its room at most once')
})

t.test('cut-through respects credit: a sender over the window still ends the link with RG_ERR_FLOW_CONTROL', async t => {
  const { raw, b } = rawPeer(t, { initialWindow: 1000 })
  b.transport.ephemeral = true
  const [tOut, tSink] = MemoryTransport.pair()
  const sink = side(tSink, { role: 'listener' })
  const outMux = new Mux(tOut, { role: 'dialer' })
  t.teardown(async () => { await Promise.all([outMux.destroy(), sink.mux.destroy()]) })

  raw.send(encodeFrame(FrameType.OPEN, 0, 1, Buffer.from('x')))
  const inbound = await b.nextStream()
  const outbound = outMux.openStream(Buffer.from('y'))
  spliceStreams(inbound, outbound)
  raw.send(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(1200)))
  const info = await within(b.closed, 3000, 'link closed')
  t.equal(codeOf(info), 'RG_ERR_FLOW_CONTROL')
})
