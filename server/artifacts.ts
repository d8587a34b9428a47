import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, mkdirSync, existsSync, renameSync, rmSync, statSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import { RelaygateError, type MuxStream } from '../protocol/index.js'
import { encodeArtifactHeader } from '../protocol/messages.js'
import { SHA256_HEX } from '../common/sha256.js'
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
export class ArtifactStore {
  readonly dir: string
  private readonly tmpDir: string
  private readonly store: Store
  private readonly logger: Logger
  bytesServed = 0

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
    const hash = createHash('sha256')
    let size = 0
    const meter = new Transform({
      transform (chunk: Buffer, _enc, cb) {
        size += chunk.length
        if (size > limit) {
          cb(new RelaygateError('RG_ERR_BODY_TOO_LARGE', `artifact is above the upload limit of ${limit} bytes (setting maxUploadBytes)`))
          return
        }
        hash.update(chunk)
        cb(null, chunk)
      }
    })
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
    const sha256 = hash.digest('hex')
    const final = this.pathOf(sha256)
    if (existsSync(final)) rmSync(tmp, { force: true })
    else renameSync(tmp, final)
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

  private async collect (sha256: string): Promise<void> {
    if (!await this.store.digestInUse(sha256)) rmSync(this.pathOf(sha256), { force: true })
  }

  /**
   * Serves an artifact on a stream a relay opened: a 16-byte header (size,
   * offset) then the bytes from `offset`, with the stream's flow control.
   */
  serve (stream: MuxStream, sha256: string, offset: number): void {
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
