import t from 'tap'
import fs from 'node:fs'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { setImmediate as tick } from 'node:timers/promises'
import { pino } from 'pino'
import { ArtifactCache, type CacheOptions, type Upstream } from '../../cache/index.js'
import { RelaygateError } from '../../protocol/errors.js'
import { tempDir, eventually, type TapLike } from '../helpers/cluster.js'

const logger = pino({ level: process.env.RELAYGATE_TEST_LOG ?? 'silent' })
const CHUNK = 16 * 1024

function sha (b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

function blob (size: number): { bytes: Buffer, sha: string } {
  const bytes = randomBytes(size)
  return { bytes, sha: sha(bytes) }
}

async function collect (stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

interface Call { sha: string, offset: number }

/**
 * The cache's injected upstream, serving from memory. `body` can be replaced
 * to shape a transfer (trickle, stall, break); by default it yields CHUNK-sized
 * pieces with a turn of the event loop between them.
 */
function fakeUpstream (): {
  blobs: Map<string, Buffer>
  calls: Call[]
  body: (bytes: Buffer, call: Call, n: number) => AsyncGenerator<Buffer>
  fetch: CacheOptions['fetch']
} {
  const up: ReturnType<typeof fakeUpstream> = {
    blobs: new Map<string, Buffer>(),
    calls: [] as Call[],
    body: async function * (bytes: Buffer): AsyncGenerator<Buffer> {
      for (let off = 0; off < bytes.length; off += CHUNK) {
        yield bytes.subarray(off, off + CHUNK)
        await tick()
      }
    },
    fetch: async (digest: string, offset: number): Promise<Upstream> => {
      const call = { sha: digest, offset }
      up.calls.push(call)
      const bytes = up.blobs.get(digest)
      if (bytes === undefined) throw new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact ${digest}`)
      return { size: bytes.length, body: Readable.from(up.body(bytes.subarray(offset), call, up.calls.length)) }
    }
  }
  return up
}

async function openCache (t: TapLike, dir: string, up: ReturnType<typeof fakeUpstream>, extra: Partial<CacheOptions> = {}): Promise<ArtifactCache> {
  const cache = new ArtifactCache({ dir, maxBytes: 64 * 1024 * 1024, minFreeBytes: 0, fetch: up.fetch, logger, ...extra })
  await cache.open()
  t.teardown(() => cache.close())
  return cache
}

/** Bytes on disk under the cache dir: kept files and fills in progress (tmp). */
function bytesOnDisk (dir: string): number {
  let total = 0
  for (const d of [dir, join(dir, 'tmp')]) {
    let names: string[] = []
    try { names = fs.readdirSync(d) } catch { continue }
    for (const n of names) {
      try {
        const st = fs.statSync(join(d, n))
        if (st.isFile()) total += st.size
      } catch {}
    }
  }
  return total
}

function tmpFiles (dir: string): string[] {
  return fs.readdirSync(join(dir, 'tmp'))
}

t.test('hits and misses are counted; a hit is served from disk without fetching', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(100_000)
  up.blobs.set(a.sha, a.bytes)
  const cache = await openCache(t, dir, up)

  const first = await cache.get(a.sha)
  t.equal(first.hit, false)
  t.equal(first.size, a.bytes.length)
  t.equal(sha(await collect(first.stream)), a.sha)
  t.ok(cache.has(a.sha), 'kept once the fill completed')
  t.ok(fs.existsSync(join(dir, a.sha)), 'the file is named by its digest')

  const second = await cache.get(a.sha)
  t.equal(second.hit, true)
  t.equal(sha(await collect(second.stream)), a.sha)

  const tail = await cache.get(a.sha, 60_000)
  t.equal(tail.hit, true)
  t.same(await collect(tail.stream), a.bytes.subarray(60_000), 'a hit from an offset serves the rest')

  t.equal(up.calls.length, 1, 'one upstream transfer')
  t.match(cache.getStats(), {
    hits: 2,
    misses: 1,
    bytesFetched: a.bytes.length,
    bytesServed: 2 * a.bytes.length + (a.bytes.length - 60_000),
    entries: 1,
    bytesUsed: a.bytes.length,
    fillsInProgress: 0,
    corruptDropped: 0,
    hashedServes: 0
  })
  t.same(tmpFiles(dir), [], 'no temp file left')
})

t.test('single-flight: 20 concurrent readers, one fetch, bytes streamed before the fill completes', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(2 * 1024 * 1024 + 333)
  up.blobs.set(a.sha, a.bytes)
  let upstreamFinished = false
  let sawEarlyByte!: () => void
  const earlyByte = new Promise<void>(resolve => { sawEarlyByte = resolve })
  let earlyReaders = 0
  up.body = async function * (bytes) {
    const last = bytes.length - CHUNK
    for (let off = 0; off < last; off += CHUNK) {
      yield bytes.subarray(off, Math.min(off + CHUNK, last))
      await tick()
    }
    // Hold the last piece until a reader has seen bytes (or give up after 5 s: the assertion below fails).
    let timer: NodeJS.Timeout | undefined
    await Promise.race([earlyByte, new Promise(resolve => { timer = setTimeout(resolve, 5000) })])
    clearTimeout(timer)
    yield bytes.subarray(last)
    upstreamFinished = true
  }
  const cache = await openCache(t, dir, up)

  const read = async (): Promise<string> => {
    const { stream, hit } = await cache.get(a.sha)
    t.equal(hit, false)
    const hash = createHash('sha256')
    let first = true
    for await (const c of stream) {
      if (first) {
        first = false
        if (!upstreamFinished) {
          earlyReaders++
          sawEarlyByte()
        }
      }
      hash.update(c as Buffer)
    }
    return hash.digest('hex')
  }
  const readers = Array.from({ length: 20 }, read)
  // One more joins half-way through the fill: it follows the same transfer from byte 0.
  await eventually(() => cache.getStats().bytesFetched > 0, 5000, 1)
  t.equal(upstreamFinished, false, 'the late reader joins while the fill is running')
  readers.push(read())
  const digests = await Promise.all(readers)

  t.equal(up.calls.length, 1, 'fetch called once for 21 readers')
  t.same(digests, Array(21).fill(a.sha), 'every reader got the right bytes')
  t.ok(earlyReaders > 0, 'readers received bytes while the upstream had not finished')
  t.match(cache.getStats(), { misses: 21, hits: 0, bytesFetched: a.bytes.length, bytesServed: 21 * a.bytes.length, entries: 1, fillsInProgress: 0 })
})

t.test('a fill whose bytes do not match the digest fails and is not kept', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const claimed = sha(Buffer.from('what the digest promises'))
  up.blobs.set(claimed, randomBytes(200_000))
  const cache = await openCache(t, dir, up)

  const got = await cache.get(claimed)
  t.equal(got.size, 200_000)
  await t.rejects(collect(got.stream), { code: 'RG_ERR_DIGEST_MISMATCH' })
  t.notOk(cache.has(claimed))
  t.match(cache.getStats(), { entries: 0, bytesUsed: 0, fillsInProgress: 0 })
  t.notOk(fs.existsSync(join(dir, claimed)), 'no file under the digest')
  await eventually(() => tmpFiles(dir).length === 0)

  // Not remembered as unknown: the next request tries the upstream again.
  const again = await cache.get(claimed)
  await t.rejects(collect(again.stream), { code: 'RG_ERR_DIGEST_MISMATCH' })
  t.equal(up.calls.length, 2)
})

t.test('an unknown digest is an error and is remembered for negativeTtlMs', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(50_000)
  const cache = await openCache(t, dir, up, { negativeTtlMs: 300 })

  await t.rejects(cache.get(a.sha), { code: 'RG_ERR_ARTIFACT_UNKNOWN' })
  await t.rejects(cache.get(a.sha), { code: 'RG_ERR_ARTIFACT_UNKNOWN' })
  await t.rejects(cache.prestage(a.sha), { code: 'RG_ERR_ARTIFACT_UNKNOWN' })
  t.equal(up.calls.length, 1, 'the second and third ask did not go upstream')
  t.equal(cache.getStats().fillsInProgress, 0)

  // Once the artifact exists and the negative entry has expired, it is fetched.
  up.blobs.set(a.sha, a.bytes)
  const got = await eventually(async () => {
    try {
      return await cache.get(a.sha)
    } catch (err) {
      t.equal((err as RelaygateError).code, 'RG_ERR_ARTIFACT_UNKNOWN')
      return undefined
    }
  }, 5000, 20)
  t.equal(sha(await collect(got!.stream)), a.sha)
  t.equal(up.calls.length, 2)
  await t.rejects(cache.get('not-a-digest'), { code: 'RG_ERR_BAD_REQUEST' })
})

t.test('budget: concurrent fills never put more than maxBytes on disk', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const size = 256 * 1024
  const maxBytes = 4 * size
  const artifacts = Array.from({ length: 8 }, () => blob(size))
  for (const a of artifacts) up.blobs.set(a.sha, a.bytes)
  let maxDisk = 0
  let maxUsed = 0
  let samples = 0
  const cache = await openCache(t, dir, up, { maxBytes, fillConcurrency: 3 })
  const sample = (): void => {
    samples++
    maxDisk = Math.max(maxDisk, bytesOnDisk(dir))
    maxUsed = Math.max(maxUsed, cache.getStats().bytesUsed)
  }
  // Sample between every two chunks the cache writes, on every fill.
  up.body = async function * (bytes) {
    for (let off = 0; off < bytes.length; off += CHUNK) {
      sample()
      yield bytes.subarray(off, off + CHUNK)
      await tick()
    }
    sample()
  }
  const digests = await Promise.all(artifacts.map(async a => sha(await collect((await cache.get(a.sha)).stream))))
  sample()
  t.same(digests, artifacts.map(a => a.sha), 'every artifact served correctly')
  t.ok(samples > 8 * (size / CHUNK), `sampled ${samples} times`)
  t.ok(maxUsed <= maxBytes, `bytesUsed peaked at ${maxUsed} <= ${maxBytes}`)
  t.ok(maxDisk <= maxBytes, `bytes on disk peaked at ${maxDisk} <= ${maxBytes}`)
  const stats = cache.getStats()
  t.equal(stats.entries, 4, 'as many as fit are kept')
  t.equal(stats.bytesUsed, 4 * size)
  t.equal(bytesOnDisk(dir), 4 * size)
  t.equal(up.calls.length, 8)
})

t.test('budget: the least recently used entry is evicted', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const size = 100_000
  const [a, b, c, d] = Array.from({ length: 4 }, () => blob(size))
  for (const x of [a, b, c, d]) up.blobs.set(x!.sha, x!.bytes)
  const cache = await openCache(t, dir, up, { maxBytes: 3 * size + 10 })
  for (const x of [a, b, c]) await collect((await cache.get(x!.sha)).stream)
  t.equal(cache.getStats().entries, 3)
  // Use a again: b is now the least recently used.
  t.equal((await cache.get(a!.sha)).hit, true)
  await collect((await cache.get(a!.sha)).stream)
  await collect((await cache.get(d!.sha)).stream)
  t.ok(cache.has(a!.sha), 'a (recently used) kept')
  t.notOk(cache.has(b!.sha), 'b (least recently used) evicted')
  t.ok(cache.has(c!.sha))
  t.ok(cache.has(d!.sha))
  await eventually(() => !fs.existsSync(join(dir, b!.sha)))
  t.match(cache.getStats(), { entries: 3, bytesUsed: 3 * size })
  // The evicted one is fetched again on demand.
  const again = await cache.get(b!.sha)
  t.equal(again.hit, false)
  t.equal(sha(await collect(again.stream)), b!.sha)
})

t.test('budget: with every byte reserved by fills in progress, another fill is served through, not kept', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const size = 100_000
  const [a, b] = [blob(size), blob(size)]
  up.blobs.set(a.sha, a.bytes)
  up.blobs.set(b.sha, b.bytes)
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  up.body = async function * (bytes) {
    yield bytes.subarray(0, 10)
    await gate
    yield bytes.subarray(10)
  }
  const cache = await openCache(t, dir, up, { maxBytes: size + 10, fillConcurrency: 2 })
  const ra = cache.get(a.sha)
  const rb = cache.get(b.sha)
  const [ga, gb] = await Promise.all([ra, rb])
  t.ok(cache.getStats().bytesUsed <= size + 10, 'only one fill reserved')
  release()
  t.equal(sha(await collect(ga.stream)), a.sha)
  t.equal(sha(await collect(gb.stream)), b.sha)
  t.equal(cache.getStats().entries, 1, 'one kept, the other served through')
  t.ok(cache.has(a.sha) !== cache.has(b.sha))
  await eventually(() => tmpFiles(dir).length === 0)
})

t.test('an artifact larger than the budget is served but not kept', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const big = blob(300_000)
  up.blobs.set(big.sha, big.bytes)
  const cache = await openCache(t, dir, up, { maxBytes: 100_000 })
  const got = await cache.get(big.sha)
  t.equal(got.size, big.bytes.length)
  t.equal(sha(await collect(got.stream)), big.sha)
  t.notOk(cache.has(big.sha))
  t.match(cache.getStats(), { entries: 0, bytesUsed: 0, fillsInProgress: 0, bytesFetched: big.bytes.length })
  t.notOk(fs.existsSync(join(dir, big.sha)))
  await eventually(() => tmpFiles(dir).length === 0)
  // Every request goes upstream again.
  t.equal(sha(await collect((await cache.get(big.sha)).stream)), big.sha)
  t.equal(up.calls.length, 2)
})

t.test('rebuild: a new cache on the same dir has the same entries; a corrupted file is dropped and refetched', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(120_000)
  const b = blob(80_000)
  up.blobs.set(a.sha, a.bytes)
  up.blobs.set(b.sha, b.bytes)
  const first = new ArtifactCache({ dir, maxBytes: 1024 * 1024, minFreeBytes: 0, fetch: up.fetch, logger })
  await first.open()
  for (const x of [a, b]) await collect((await first.get(x.sha)).stream)
  await first.close()
  await t.rejects(first.get(a.sha), { code: 'RG_ERR_CLOSED' }, 'calls after close fail with a coded error')

  const up2 = fakeUpstream()
  up2.blobs = up.blobs
  const second = await openCache(t, dir, up2, { maxBytes: 1024 * 1024 })
  t.match(second.getStats(), { entries: 2, bytesUsed: a.bytes.length + b.bytes.length, corruptDropped: 0 })
  const hit = await second.get(a.sha)
  t.equal(hit.hit, true)
  t.equal(sha(await collect(hit.stream)), a.sha)
  t.equal(up2.calls.length, 0, 'served from the rebuilt index')
  await second.close()

  // Overwrite one byte of b: the next open drops it.
  const fd = fs.openSync(join(dir, b.sha), 'r+')
  fs.writeSync(fd, Buffer.from([b.bytes[1000]! ^ 0xff]), 0, 1, 1000)
  fs.closeSync(fd)
  const up3 = fakeUpstream()
  up3.blobs = up.blobs
  const third = await openCache(t, dir, up3, { maxBytes: 1024 * 1024 })
  t.match(third.getStats(), { entries: 1, bytesUsed: a.bytes.length, corruptDropped: 1 })
  t.ok(third.has(a.sha))
  t.notOk(third.has(b.sha))
  t.notOk(fs.existsSync(join(dir, b.sha)), 'the corrupted file is gone')
  const refetched = await third.get(b.sha)
  t.equal(refetched.hit, false)
  t.equal(sha(await collect(refetched.stream)), b.sha)
  t.same(up3.calls.map(c => c.sha), [b.sha])
  t.ok(third.has(b.sha))
})

t.test('a whole-file hit that does not hash to its digest is dropped while served', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(150_000)
  up.blobs.set(a.sha, a.bytes)
  const cache = await openCache(t, dir, up)
  await collect((await cache.get(a.sha)).stream)
  const fd = fs.openSync(join(dir, a.sha), 'r+')
  fs.writeSync(fd, Buffer.from([a.bytes[5]! ^ 0x01]), 0, 1, 5)
  fs.closeSync(fd)

  const bad = await cache.get(a.sha)
  t.equal(bad.hit, true)
  t.not(sha(await collect(bad.stream)), a.sha, 'the corrupted bytes went out (the reader verifies)')
  t.notOk(cache.has(a.sha), 'dropped once the mismatch was seen')
  t.equal(cache.getStats().corruptDropped, 1)
  const again = await cache.get(a.sha)
  t.equal(again.hit, false)
  t.equal(sha(await collect(again.stream)), a.sha)
  t.equal(up.calls.length, 2)
})

t.test('hits are hashed only when the file changed since it verified, or when asked to verify', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(150_000)
  up.blobs.set(a.sha, a.bytes)
  const cache = await openCache(t, dir, up)
  await collect((await cache.get(a.sha)).stream)
  for (let i = 0; i < 3; i++) t.equal(sha(await collect((await cache.get(a.sha)).stream)), a.sha)
  t.equal(cache.getStats().hashedServes, 0, 'verified by the fill: whole-file hits are not hashed again')

  t.equal(sha(await collect((await cache.get(a.sha, 0, { verify: true })).stream)), a.sha)
  t.equal(cache.getStats().hashedServes, 1, 'verify: true hashes the hit')
  t.ok(cache.has(a.sha), 'a hit that verifies stays')

  // Same bytes written again: the file changed on disk (times), so the next
  // whole-file hit is hashed once, verifies, and later hits are not.
  fs.writeFileSync(join(dir, a.sha), a.bytes)
  await collect((await cache.get(a.sha)).stream)
  t.equal(cache.getStats().hashedServes, 2, 'a file changed on disk is hashed on its next whole-file hit')
  await collect((await cache.get(a.sha)).stream)
  await collect((await cache.get(a.sha, 1000)).stream)
  t.equal(cache.getStats().hashedServes, 2, 'then trusted again (and a ranged hit is never hashed)')
  t.equal(cache.getStats().corruptDropped, 0)
  t.equal(up.calls.length, 1)
})

t.test('read buffers given back with recycle() are read into again, and the bytes stay right', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(1024 * 1024 + 4321)
  up.blobs.set(a.sha, a.bytes)
  const cache = await openCache(t, dir, up)
  await collect((await cache.get(a.sha)).stream)

  const seen = new Set<ArrayBufferLike>()
  let reused = 0
  for (let round = 0; round < 4; round++) {
    const got = await cache.get(a.sha, round * 1000)
    const hash = createHash('sha256')
    for await (const chunk of got.stream) {
      const buf = chunk as Buffer
      if (seen.has(buf.buffer)) reused++
      seen.add(buf.buffer)
      hash.update(buf)
      got.recycle(buf) // as the relay does once uWS has taken the bytes
    }
    t.equal(hash.digest('hex'), sha(a.bytes.subarray(round * 1000)), `round ${round}: the right bytes`)
  }
  t.ok(reused > 0, `read buffers were reused (${reused} chunks in a recycled buffer)`)
  t.ok(seen.size <= 8, `a handful of buffers served every round (${seen.size})`)
})

t.test('an interrupted upstream resumes from the offset reached', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(500_000)
  up.blobs.set(a.sha, a.bytes)
  up.body = async function * (bytes, _call, n) {
    for (let off = 0; off < bytes.length; off += CHUNK) {
      if (n === 1 && off >= 5 * CHUNK) throw new Error('upstream connection reset')
      yield bytes.subarray(off, off + CHUNK)
      await tick()
    }
  }
  const cache = await openCache(t, dir, up)
  const got = await cache.get(a.sha)
  t.equal(sha(await collect(got.stream)), a.sha, 'the reader gets the whole artifact')
  t.equal(up.calls.length, 2)
  t.equal(up.calls[0]!.offset, 0)
  t.equal(up.calls[1]!.offset, 5 * CHUNK, 'the second fetch starts where the first stopped')
  t.match(cache.getStats(), { bytesFetched: a.bytes.length, entries: 1 })
  t.equal(sha(fs.readFileSync(join(dir, a.sha))), a.sha, 'the kept file is correct')
})

t.test('close() ends a fill whose upstream stalls, and its readers get RG_ERR_CLOSED', async t => {
  const dir = tempDir(t)
  const up = fakeUpstream()
  const a = blob(100_000)
  up.blobs.set(a.sha, a.bytes)
  let upstreamBody: Readable | undefined
  // 1000 bytes, then nothing: the connection is alive but silent.
  const fetch: CacheOptions['fetch'] = async () => {
    upstreamBody = new Readable({ read () {} })
    upstreamBody.push(a.bytes.subarray(0, 1000))
    return { size: a.bytes.length, body: upstreamBody }
  }
  const cache = new ArtifactCache({ dir, maxBytes: 1024 * 1024, minFreeBytes: 0, fetch, logger })
  await cache.open()
  const got = await cache.get(a.sha)
  const reading = collect(got.stream)
  reading.catch(() => {})
  await eventually(() => cache.getStats().bytesFetched === 1000)
  const started = Date.now()
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([
    cache.close().then(() => true),
    new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), 5000) })
  ])
  clearTimeout(timer)
  t.ok(closed, `close() returned (after ${Date.now() - started} ms)`)
  await t.rejects(reading, { code: 'RG_ERR_CLOSED' })
  t.ok(upstreamBody?.destroyed, 'the upstream transfer was ended')
  t.match(cache.getStats(), { fillsInProgress: 0, bytesUsed: 0 })
  await t.rejects(cache.get(a.sha), { code: 'RG_ERR_CLOSED' })
})
