import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import { join } from 'node:path'
import { Readable, Transform, pipeline } from 'node:stream'
import { LRUCache } from 'lru-cache'
import PQueue from 'p-queue'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/errors.js'
import { SHA256_HEX, hashFile } from '../common/sha256.js'

/** An upstream transfer: total size, and the bytes from the offset asked for. */
export interface Upstream {
  size: number
  body: Readable
}

export interface CacheOptions {
  dir: string
  /** Byte budget for kept files, fills in progress included. */
  maxBytes: number
  /** Do not keep a file if it would leave less free disk than this. */
  minFreeBytes?: number
  /** Fetches bytes from `offset` of an artifact (from the server, over the relay's one link). */
  fetch: (sha256: string, offset: number) => Promise<Upstream>
  /** Upstream transfers at once. */
  fillConcurrency?: number
  /** How long an unknown digest is remembered as unknown (ms). */
  negativeTtlMs?: number
  /** Retries of an interrupted fill (each resumes where it stopped). */
  fillRetries?: number
  logger: Logger
}

export interface CacheStats {
  hits: number
  misses: number
  bytesServed: number
  bytesFetched: number
  entries: number
  bytesUsed: number
  maxBytes: number
  fillsInProgress: number
  corruptDropped: number
  /** Whole-file hits hashed while served (first serve after a change on disk, or asked to verify). */
  hashedServes: number
}

/** The file as it was (size, times, inode) when its bytes last hashed to its name. */
interface Stamp { size: number, mtimeMs: number, ctimeMs: number, ino: number }

interface Entry { size: number, verified: Stamp | null }

function stampOf (st: fs.Stats): Stamp {
  return { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino }
}

function unchanged (stamp: Stamp | null, st: fs.Stats): boolean {
  return stamp !== null && stamp.size === st.size && stamp.mtimeMs === st.mtimeMs && stamp.ctimeMs === st.ctimeMs && stamp.ino === st.ino
}

/** One upstream transfer into a temp file that any number of readers follow as it grows. */
class Fill extends EventEmitter {
  readonly sha256: string
  readonly tmpPath: string
  size = -1
  written = 0
  done = false
  error: RelaygateError | null = null
  /** Kept in the cache once complete (false: larger than the budget or the disk floor). */
  keep = false
  /** Renamed into the cache and counted by the index. */
  committed = false
  /** The current upstream body (destroyed by close()). */
  upstream: Readable | null = null
  /** Not kept: the upstream answer, for the first reader to take (nothing is written). */
  private through: Upstream | null = null
  readonly ready: Promise<void>
  resolveReady!: () => void
  rejectReady!: (err: RelaygateError) => void

  constructor (sha256: string, tmpPath: string) {
    super()
    this.setMaxListeners(0)
    this.sha256 = sha256
    this.tmpPath = tmpPath
    this.ready = new Promise((resolve, reject) => { this.resolveReady = resolve; this.rejectReady = reject })
    this.ready.catch(() => {})
  }

  /** Ends a fill that is not kept: its upstream answer waits for a reader, and no byte goes to disk. */
  passThrough (upstream: Upstream): void {
    this.through = upstream
    this.done = true
    this.resolveReady()
  }

  /** The upstream answer of a pass-through fill, once (later readers fetch their own). */
  takeThrough (): Upstream | null {
    const up = this.through
    this.through = null
    return up
  }

  fail (err: RelaygateError): void {
    if (this.done) return
    this.error = err
    this.done = true
    this.rejectReady(err)
    this.emit('progress')
  }
}

/** Reads a file from `start` while a fill is still writing it; ends when the fill is done. */
/**
 * Read buffers that the consumer hands back once it has written them out
 * (the `recycle` of ArtifactCache.get). Serving hits at hundreds of MB/s
 * with a new buffer per read made V8 run full GCs back to back (it counts
 * buffers as external memory); recycled ones are simply read into again.
 * Bounded: at most `keep` idle buffers are held.
 */
class ReadBuffers {
  readonly size: number
  private readonly keep: number
  private readonly free: Buffer[] = []
  private readonly ours = new WeakSet<ArrayBufferLike>()

  constructor (size: number, keep: number) {
    this.size = size
    this.keep = keep
  }

  take (): Buffer {
    const b = this.free.pop()
    if (b !== undefined) return b
    const fresh = Buffer.allocUnsafeSlow(this.size)
    this.ours.add(fresh.buffer)
    return fresh
  }

  /** A chunk this pool handed out (or a prefix of one), no longer used by anyone. */
  give (chunk: Buffer): void {
    if (chunk.byteOffset !== 0 || !this.ours.has(chunk.buffer) || this.free.length >= this.keep) return
    this.free.push(Buffer.from(chunk.buffer, 0, this.size))
  }
}

/**
 * Reads a file descriptor into pooled buffers (one positional read per
 * _read); closes the descriptor when done.
 */
abstract class PooledReader extends Readable {
  protected pos: number
  private readonly fd: number
  private readonly buffers: ReadBuffers

  constructor (fd: number, start: number, buffers: ReadBuffers) {
    super({ highWaterMark: buffers.size })
    this.fd = fd
    this.pos = start
    this.buffers = buffers
  }

  /** Reads up to `max` bytes at pos and pushes them; 0 bytes read is an error (the file is shorter than it should be). */
  protected readAt (max: number): void {
    const buf = this.buffers.take()
    fs.read(this.fd, buf, 0, Math.min(max, buf.length), this.pos, (err, bytes) => {
      if (err === null && bytes === 0) err = new RelaygateError('RG_ERR_INTERNAL', 'cache file ended before its size')
      if (err !== null) {
        this.buffers.give(buf)
        this.destroy(err)
        return
      }
      this.pos += bytes
      this.push(bytes === buf.length ? buf : buf.subarray(0, bytes))
    })
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    fs.close(this.fd, () => cb(err))
  }
}

/** [start, end) of a cached file. */
class FileReader extends PooledReader {
  private readonly end: number

  constructor (fd: number, start: number, end: number, buffers: ReadBuffers) {
    super(fd, start, buffers)
    this.end = end
  }

  override _read (): void {
    if (this.pos >= this.end) this.push(null)
    else this.readAt(this.end - this.pos)
  }
}

/** A file being filled, from `start`: bytes as they are written, to the end of the fill. */
class FollowingReader extends PooledReader {
  private readonly fill: Fill
  private waiting = false

  constructor (fill: Fill, fd: number, start: number, buffers: ReadBuffers) {
    super(fd, start, buffers)
    this.fill = fill
  }

  override _read (size: number): void {
    const available = this.fill.written - this.pos
    if (available > 0) {
      this.readAt(Math.min(size, available))
      return
    }
    if (this.fill.error !== null) {
      this.destroy(this.fill.error)
      return
    }
    if (this.fill.done) {
      this.push(null)
      return
    }
    if (this.waiting) return
    this.waiting = true
    this.fill.once('progress', () => {
      this.waiting = false
      this._read(size)
    })
  }
}

/**
 * The relay's artifact cache: files on disk named by sha256, an LRU index
 * with a byte budget (lru-cache), atomic writes, sha256 verified on fill and
 * on rebuild, single-flight fills that waiting readers follow as the bytes
 * arrive, bounded upstream concurrency (p-queue) and a short negative cache.
 */
export class ArtifactCache {
  private readonly opts: Required<CacheOptions>
  private readonly tmpDir: string
  private readonly index: LRUCache<string, Entry>
  private readonly fills = new Map<string, Fill>()
  private readonly unknown = new Map<string, number>()
  private readonly queue: PQueue
  private reserved = 0
  private closed = false
  private readonly stats = { hits: 0, misses: 0, bytesServed: 0, bytesFetched: 0, corruptDropped: 0, hashedServes: 0 }
  /** 64 KiB reads; up to 128 idle buffers (8 MiB) kept for reuse. */
  private readonly buffers = new ReadBuffers(64 * 1024, 128)

  constructor (options: CacheOptions) {
    this.opts = { minFreeBytes: 512 * 1024 * 1024, fillConcurrency: 4, negativeTtlMs: 10_000, fillRetries: 5, ...options }
    this.tmpDir = join(this.opts.dir, 'tmp')
    this.queue = new PQueue({ concurrency: this.opts.fillConcurrency })
    this.index = new LRUCache<string, Entry>({
      maxSize: Math.max(1, this.opts.maxBytes),
      sizeCalculation: e => Math.max(1, e.size),
      dispose: (_value, key, reason) => {
        if (reason === 'set') return
        // At once, so the next fill's bytes never sit beside the evicted file beyond the budget.
        fs.rmSync(this.pathOf(key), { force: true })
      }
    })
  }

  pathOf (sha256: string): string {
    return join(this.opts.dir, sha256)
  }

  /** Rebuilds the index from disk: every file is hashed, corrupted ones are dropped. */
  async open (): Promise<void> {
    fs.mkdirSync(this.tmpDir, { recursive: true })
    for (const f of fs.readdirSync(this.tmpDir)) fs.rmSync(join(this.tmpDir, f), { force: true })
    const files = fs.readdirSync(this.opts.dir).filter(f => SHA256_HEX.test(f))
    const found: Array<{ sha: string, size: number, mtime: number, stamp: Stamp }> = []
    for (const sha of files) {
      const path = this.pathOf(sha)
      const actual = await hashFile(path)
      if (actual !== sha) {
        this.stats.corruptDropped++
        this.opts.logger.warn({ sha256: sha }, 'dropping a corrupted cache file')
        fs.rmSync(path, { force: true })
        continue
      }
      const st = fs.statSync(path)
      found.push({ sha, size: st.size, mtime: st.mtimeMs, stamp: stampOf(st) })
    }
    // Oldest first, so the most recently used end up most recent in the LRU.
    found.sort((a, b) => a.mtime - b.mtime)
    for (const f of found) {
      if (f.size > this.opts.maxBytes) fs.rmSync(this.pathOf(f.sha), { force: true })
      else this.index.set(f.sha, { size: f.size, verified: f.stamp })
    }
    this.opts.logger.info({ entries: this.index.size, bytes: this.index.calculatedSize }, 'artifact cache index rebuilt')
  }

  getStats (): CacheStats {
    return {
      ...this.stats,
      entries: this.index.size,
      bytesUsed: this.index.calculatedSize + this.reserved,
      maxBytes: this.opts.maxBytes,
      fillsInProgress: this.fills.size
    }
  }

  has (sha256: string): boolean {
    return this.index.has(sha256)
  }

  /**
   * The artifact's bytes from `start`: from disk on a hit, else following a
   * fill (one upstream transfer however many ask). Resolves once the size is
   * known; the stream then delivers bytes as they arrive.
   *
   * A whole-file hit is hashed while served (and dropped on a mismatch) when
   * the file changed on disk since its bytes last verified, or when `verify`
   * asks for it (an agent whose download did not verify); other hits are not
   * hashed again.
   */
  async get (sha256: string, start = 0, options: { verify?: boolean } = {}): Promise<{ size: number, stream: Readable, hit: boolean, recycle: (chunk: Buffer) => void }> {
    if (this.closed) throw new RelaygateError('RG_ERR_CLOSED', 'cache closed')
    if (!SHA256_HEX.test(sha256)) throw new RelaygateError('RG_ERR_BAD_REQUEST', 'not a sha256 digest')
    const entry = this.index.get(sha256)
    if (entry !== undefined) {
      let fd: number
      try {
        fd = fs.openSync(this.pathOf(sha256), 'r')
      } catch {
        this.index.delete(sha256)
        return await this.get(sha256, start, options)
      }
      this.stats.hits++
      const st = fs.fstatSync(fd)
      const size = st.size
      const from = Math.min(start, size)
      const file = new FileReader(fd, from, size, this.buffers)
      const hash = from === 0 && (options.verify === true || !unchanged(entry.verified, st))
      if (hash) this.stats.hashedServes++
      return { size, stream: this.meter(file, sha256, hash ? { entry, stamp: stampOf(st) } : null), hit: true, recycle: this.recycle }
    }
    const negative = this.unknown.get(sha256)
    if (negative !== undefined && negative > Date.now()) throw new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact ${sha256}`)
    this.stats.misses++
    const fill = this.fills.get(sha256) ?? this.startFill(sha256)
    await fill.ready
    if (!fill.keep) return await this.getThrough(fill, start)
    const fd = fs.openSync(fill.tmpPath, 'r')
    const from = Math.min(start, fill.size)
    return { size: fill.size, stream: this.meter(new FollowingReader(fill, fd, from, this.buffers), sha256, null), hit: false, recycle: this.recycle }
  }

  /**
   * Hands a chunk read from a get() stream back for reuse: call it once per
   * chunk, only when nothing refers to the chunk any more (written out in
   * full). Optional; a chunk never given back is simply collected.
   */
  readonly recycle = (chunk: Buffer): void => { this.buffers.give(chunk) }

  /**
   * An artifact this cache does not keep (above the budget, or below the
   * disk floor: a full disk) goes from upstream to the reader without
   * touching the disk; each reader after the first fetches its own bytes.
   */
  private async getThrough (fill: Fill, start: number): Promise<{ size: number, stream: Readable, hit: boolean, recycle: (chunk: Buffer) => void }> {
    let up = fill.takeThrough()
    if (up !== null && start > 0) {
      up.body.destroy()
      up = null
    }
    up ??= await this.opts.fetch(fill.sha256, start)
    return { size: up.size, stream: this.meter(up.body, fill.sha256, null, true), hit: false, recycle: this.recycle }
  }

  /** Fetches an artifact into the cache ahead of need (no-op when cached or filling). */
  async prestage (sha256: string): Promise<void> {
    if (this.index.has(sha256)) return
    const negative = this.unknown.get(sha256)
    if (negative !== undefined && negative > Date.now()) throw new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact ${sha256}`)
    const fill = this.fills.get(sha256) ?? this.startFill(sha256)
    await fill.ready
    // Not kept here: nothing to stage.
    if (!fill.keep) {
      fill.takeThrough()?.body.destroy()
      return
    }
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!fill.done) return
        fill.off('progress', check)
        if (fill.error !== null) reject(fill.error)
        else resolve()
      }
      fill.on('progress', check)
      check()
    })
  }

  /** Drops an entry found to be corrupted (the next request refetches it). */
  drop (sha256: string): void {
    if (this.index.delete(sha256)) {
      this.stats.corruptDropped++
      this.opts.logger.warn({ sha256 }, 'dropped a corrupted cache entry')
    }
  }

  async close (): Promise<void> {
    this.closed = true
    this.queue.clear()
    for (const fill of this.fills.values()) {
      fill.fail(new RelaygateError('RG_ERR_CLOSED', 'cache closed'))
      fill.upstream?.destroy()
    }
    await this.queue.onIdle()
  }

  /**
   * Counts bytes served (and fetched, for bytes passed straight through from
   * upstream). With `verify`, the bytes are hashed too: a whole file that
   * matches marks the entry verified as of `stamp`; one that does not is
   * dropped.
   */
  private meter (source: Readable, sha256: string, verify: { entry: Entry, stamp: Stamp } | null, fetched = false): Readable {
    const hash = verify !== null ? createHash('sha256') : null
    let seen = 0
    // A Transform, not a 'data' listener: that would start the flow before
    // the caller listens, and bytes would be lost to a caller that awaits first.
    const out = new Transform({
      highWaterMark: 64 * 1024,
      transform: (chunk: Buffer, _enc, cb) => {
        this.stats.bytesServed += chunk.length
        if (fetched) this.stats.bytesFetched += chunk.length
        seen += chunk.length
        hash?.update(chunk)
        cb(null, chunk)
      },
      flush: cb => {
        if (hash !== null && verify !== null && seen === verify.stamp.size) {
          if (hash.digest('hex') !== sha256) this.drop(sha256)
          else if (this.index.peek(sha256) === verify.entry) verify.entry.verified = verify.stamp
        }
        cb()
      }
    })
    pipeline(source, out, () => {})
    return out
  }

  /** Makes room for `size` bytes: evicts LRU entries; false when it cannot be kept. */
  private reserve (size: number): boolean {
    if (size > this.opts.maxBytes) return false
    try {
      const st = fs.statfsSync(this.opts.dir)
      if (st.bavail * st.bsize - size < this.opts.minFreeBytes) return false
    } catch {}
    while (this.index.calculatedSize + this.reserved + size > this.opts.maxBytes && this.index.size > 0) {
      this.index.pop()
    }
    if (this.index.calculatedSize + this.reserved + size > this.opts.maxBytes) return false
    this.reserved += size
    return true
  }

  private startFill (sha256: string): Fill {
    const fill = new Fill(sha256, join(this.tmpDir, `${sha256}.${randomBytes(4).toString('hex')}`))
    this.fills.set(sha256, fill)
    const log = this.opts.logger.child({ sha256 })
    void this.queue.add(async () => {
      try {
        await this.runFill(fill, log)
      } catch (err) {
        const coded = err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_INTERNAL', (err as Error).message)
        if (coded.code === 'RG_ERR_ARTIFACT_UNKNOWN') this.unknown.set(sha256, Date.now() + this.opts.negativeTtlMs)
        log.warn({ code: coded.code, message: coded.message }, 'fill failed')
        fill.fail(coded)
      } finally {
        this.fills.delete(sha256)
        if (fill.keep && !fill.committed) this.reserved -= Math.max(0, fill.size)
        // Readers hold their own descriptors; the name can go now.
        if (!fill.committed) fs.rm(fill.tmpPath, { force: true }, () => {})
      }
    }).catch(() => {})
    return fill
  }

  private async runFill (fill: Fill, log: Logger): Promise<void> {
    const fd = fs.openSync(fill.tmpPath, 'w+')
    const hash = createHash('sha256')
    try {
      let attempt = 0
      while (true) {
        if (this.closed) throw new RelaygateError('RG_ERR_CLOSED', 'cache closed')
        let upstream: Upstream
        try {
          upstream = await this.opts.fetch(fill.sha256, fill.written)
        } catch (err) {
          if (err instanceof RelaygateError && err.code === 'RG_ERR_ARTIFACT_UNKNOWN') throw err
          if (++attempt > this.opts.fillRetries || this.closed) throw err
          await new Promise(resolve => setTimeout(resolve, Math.min(5000, 200 * 2 ** attempt) * (0.5 + Math.random() / 2)))
          continue
        }
        fill.upstream = upstream.body
        if (this.closed) upstream.body.destroy()
        if (fill.size < 0) {
          fill.size = upstream.size
          fill.keep = this.reserve(upstream.size)
          if (!fill.keep) {
            log.info({ size: upstream.size }, 'artifact served through, not kept (budget or disk floor)')
            fill.upstream = null
            fill.passThrough(upstream)
            return
          }
          fill.resolveReady()
        }
        try {
          for await (const chunk of upstream.body) {
            const buf = chunk as Buffer
            // Off the event loop: on a busy disk a write can wait for writeback,
            // and the relay serves every download from this one thread.
            let off = 0
            while (off < buf.length) off += await writeAt(fd, buf, off, fill.written + off)
            hash.update(buf)
            fill.written += buf.length
            this.stats.bytesFetched += buf.length
            fill.emit('progress')
          }
        } catch (err) {
          if (++attempt > this.opts.fillRetries) throw err
          log.info({ written: fill.written, size: fill.size }, 'fill interrupted; resuming')
          continue
        }
        if (fill.written >= fill.size) break
        if (++attempt > this.opts.fillRetries) throw new RelaygateError('RG_ERR_DOWNLOAD_FAILED', 'upstream ended early')
      }
      const actual = hash.digest('hex')
      if (actual !== fill.sha256 || fill.written !== fill.size) {
        throw new RelaygateError('RG_ERR_DIGEST_MISMATCH', `fill of ${fill.sha256} hashed to ${actual}`)
      }
      await new Promise<void>((resolve, reject) => fs.fsync(fd, err => err === null ? resolve() : reject(err)))
      if (fill.keep) {
        fs.renameSync(fill.tmpPath, this.pathOf(fill.sha256))
        // From here the index accounts for the bytes, not the reservation.
        this.reserved -= fill.size
        fill.committed = true
        // The bytes just hashed to the name: verified as the file is now.
        this.index.set(fill.sha256, { size: fill.size, verified: stampOf(fs.fstatSync(fd)) })
      }
      fill.done = true
      fill.emit('progress')
      log.info({ size: fill.size, kept: fill.keep }, 'fill complete')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new RelaygateError('RG_ERR_DISK_FULL', 'relay disk full during a fill')
      throw err
    } finally {
      fs.closeSync(fd)
    }
  }
}

function writeAt (fd: number, buf: Buffer, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buf, offset, buf.length - offset, position, (err, written) => err === null ? resolve(written) : reject(err))
  })
}
