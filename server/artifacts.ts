import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, mkdirSync, existsSync, renameSync, rmSync, statSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import { RelaygateError, type MuxStream } from '../protocol/index.js'
import { encodeArtifactHeader } from '../protocol/messages.js'
import { SHA256_HEX, HashingMeter } from '../common/sha256.js'
import type { Store, ArtifactRecord } from './store.js'

/** Artifact names: a file name, no paths, no tricks. */
export const ARTIFACT_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/

export function verifyArtifactName (name: string): string {
  if (!ARTIFACT_NAME.test(name) || name.includes('..')) {
    throw new RelaygateError('RG_ERR_BAD_REQUEST', 'artifact names are 1-128 characters of A-Z a-z 0-9 . _ + - (no slashes, no "..", not starting with a dot)')
  }
  return name
}

/**
 * Content-addressed artifact files on the server's disk: `<dir>/<sha256>`.
 * Uploads stream to a temp file while hashing; identical content is kept once.
 */
/**
 * Other server replicas that keep blobs too (a cluster without shared
 * storage): uploads are copied to some before they are acknowledged, and a
 * blob missing here is pulled from one that has it.
 */
export interface BlobPeers {
  /** Copies `file` to other replicas until `others` of them hold it; how many did. */
  replicate: (sha256: string, file: string, size: number, others: number) => Promise<number>
  /** How many replicas (this one included) must hold an upload. */
  copiesWanted: () => Promise<number>
  /** Pulls a blob into `into` (a temp file here) from a replica that has it; false when none has it. */
  pull: (sha256: string, into: string) => Promise<boolean>
  /** Tells the other replicas to drop a blob nothing references any more. */
  dropped: (sha256: string) => void
}

export class ArtifactStore {
  readonly dir: string
  private readonly tmpDir: string
  private readonly store: Store
  private readonly logger: Logger
  bytesServed = 0
  /** Set when this server is one replica of several. */
  peers: BlobPeers | null = null
  /** Pulls from peers in flight, one per digest. */
  private readonly pulls = new Map<string, Promise<boolean>>()

  constructor (options: { dir: string, store: Store, logger: Logger }) {
    this.dir = options.dir
    this.tmpDir = join(options.dir, 'tmp')
    this.store = options.store
    this.logger = options.logger
    mkdirSync(this.tmpDir, { recursive: true })
    // Leftovers of uploads cut short by a crash.
    for (const f of readdirSync(this.tmpDir)) rmSync(join(this.tmpDir, f), { force: true })
  }

  pathOf (sha256: string): string {
    return join(this.dir, sha256)
  }

  has (sha256: string): boolean {
    return SHA256_HEX.test(sha256) && existsSync(this.pathOf(sha256))
  }

  /** Streams a request body to disk, hashing it; at most `limit` bytes. */
  async upload (name: string, body: Readable, declaredLength: number | undefined, limit: number): Promise<ArtifactRecord> {
    verifyArtifactName(name)
    if (declaredLength !== undefined && declaredLength > limit) {
      body.resume()
      throw new RelaygateError('RG_ERR_BODY_TOO_LARGE', `artifact of ${declaredLength} bytes is above the upload limit of ${limit} (setting maxUploadBytes)`)
    }
    const tmp = join(this.tmpDir, `${randomBytes(8).toString('hex')}.part`)
    const meter = new HashingMeter(limit, () => new RelaygateError('RG_ERR_BODY_TOO_LARGE', `artifact is above the upload limit of ${limit} bytes (setting maxUploadBytes)`))
    const file = createWriteStream(tmp, { flags: 'wx' })
    try {
      await pipeline(body, meter, file)
    } catch (err) {
      // The file may still be opening: removing it before it closes would leave it behind.
      if (!file.closed) await new Promise<void>(resolve => file.once('close', () => resolve()))
      rmSync(tmp, { force: true })
      if (err instanceof RelaygateError) throw err
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new RelaygateError('RG_ERR_DISK_FULL', 'the server\'s disk is full; the upload was discarded')
      throw new RelaygateError('RG_ERR_BAD_REQUEST', `upload interrupted: ${(err as Error).message}`)
    }
    const sha256 = meter.digest()
    const size = meter.bytes
    const final = this.pathOf(sha256)
    if (existsSync(final)) rmSync(tmp, { force: true })
    else renameSync(tmp, final)
    if (this.peers !== null) {
      const wanted = await this.peers.copiesWanted()
      const held = 1 + (wanted > 1 ? await this.peers.replicate(sha256, final, size, wanted - 1) : 0)
      if (held < wanted) {
        await this.collect(sha256)
        throw new RelaygateError('RG_ERR_PEER_UNAVAILABLE', `the artifact reached ${held} of the ${wanted} replicas it must be stored on (--artifact-copies); upload it again`)
      }
    }
    const previous = await this.store.getArtifact(name)
    const record: ArtifactRecord = { name, sha256, size, createdAt: Date.now() }
    await this.store.putArtifact(record)
    if (previous !== undefined && previous.sha256 !== sha256) await this.collect(previous.sha256)
    this.logger.info({ name, sha256, size }, 'artifact stored')
    return record
  }

  /** Removes a name; the file goes when nothing references its digest any more. */
  async delete (name: string): Promise<boolean> {
    const record = await this.store.getArtifact(name)
    if (record === undefined || !await this.store.deleteArtifact(name)) return false
    await this.collect(record.sha256)
    return true
  }

  /** Removes the blob unless something references it; other replicas are told to do the same. */
  async collect (sha256: string, tellPeers = true): Promise<void> {
    if (await this.store.digestInUse(sha256)) return
    rmSync(this.pathOf(sha256), { force: true })
    if (tellPeers) this.peers?.dropped(sha256)
  }

  /** The blob is here, or pulled from a replica that has it (verified); false when none has it. */
  async ensure (sha256: string): Promise<boolean> {
    if (this.has(sha256)) return true
    if (this.peers === null || !SHA256_HEX.test(sha256)) return false
    let pull = this.pulls.get(sha256)
    if (pull === undefined) {
      const peers = this.peers
      pull = (async () => {
        const tmp = join(this.tmpDir, `${randomBytes(8).toString('hex')}.pull`)
        try {
          if (!await peers.pull(sha256, tmp)) return false
          renameSync(tmp, this.pathOf(sha256))
          this.logger.info({ sha256 }, 'artifact pulled from another replica')
          return true
        } finally {
          rmSync(tmp, { force: true })
        }
      })().finally(() => this.pulls.delete(sha256))
      this.pulls.set(sha256, pull)
    }
    return await pull
  }

  /**
   * Receives a copy of a blob from another replica: written to a temp file
   * while hashing, kept only if its size and sha256 match what was
   * announced. Answers one byte once it is in place (0 = kept).
   */
  async receive (stream: MuxStream, sha256: string, size: number): Promise<void> {
    const tmp = join(this.tmpDir, `${randomBytes(8).toString('hex')}.copy`)
    const meter = new HashingMeter(size, () => new RelaygateError('RG_ERR_DIGEST_MISMATCH', `copy of ${sha256}: more than the ${size} bytes announced`))
    try {
      await pipeline(stream, meter, createWriteStream(tmp, { flags: 'wx' }), { end: true })
      if (meter.bytes !== size || meter.digest() !== sha256) throw new RelaygateError('RG_ERR_DIGEST_MISMATCH', `copy of ${sha256}: ${meter.bytes} bytes that do not match`)
      if (!this.has(sha256)) renameSync(tmp, this.pathOf(sha256))
      stream.end(Buffer.from([0]))
    } catch (err) {
      this.logger.warn({ sha256, err: (err as Error).message }, 'artifact copy from another replica not kept')
      stream.destroy(err as Error)
    } finally {
      rmSync(tmp, { force: true })
    }
  }

  /**
   * Serves an artifact on a stream a relay opened: a 16-byte header (size,
   * offset) then the bytes from `offset`, with the stream's flow control.
   */
  serve (stream: MuxStream, sha256: string, offset: number): void {
    if (this.has(sha256)) return this.serveHere(stream, sha256, offset)
    // Not here: another replica may hold it (pulled once, kept).
    this.ensure(sha256).then(found => {
      if (found) this.serveHere(stream, sha256, offset)
      else stream.destroy(new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact ${sha256}`))
    }, err => {
      this.logger.warn({ sha256, err: (err as Error).message }, 'artifact not pulled from another replica')
      stream.destroy(new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact ${sha256} here, and none could be pulled`))
    })
  }

  /** Serves only a blob kept here (what replicas ask each other for: no pull chains). */
  serveHere (stream: MuxStream, sha256: string, offset: number): void {
    if (!this.has(sha256)) {
      stream.destroy(new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact ${sha256}`))
      return
    }
    const size = statSync(this.pathOf(sha256)).size
    const from = offset <= size ? offset : 0
    stream.write(encodeArtifactHeader(size, from))
    const file = createReadStream(this.pathOf(sha256), { start: from, highWaterMark: 64 * 1024 })
    file.on('data', (chunk: string | Buffer) => { this.bytesServed += chunk.length })
    pipeline(file, stream).catch(err => {
      this.logger.debug({ sha256, err: (err as Error).message }, 'artifact stream ended early')
      stream.destroy()
    })
  }
}
