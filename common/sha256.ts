import { createHash } from 'node:crypto'
import fs from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'

/** A sha256 digest as relaygate writes it everywhere: 64 lowercase hex digits. */
export const SHA256_HEX = /^[0-9a-f]{64}$/

export function isSha256Hex (value: unknown): value is string {
  return typeof value === 'string' && SHA256_HEX.test(value)
}

export function sha256Hex (data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The sha256 of a file's bytes, read in 1 MiB chunks. */
export async function hashFile (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of fs.createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/**
 * A pass-through that hashes (sha256) and counts the bytes flowing through
 * it; past `limit` bytes it fails with `tooLarge()`.
 */
export class HashingMeter extends Transform {
  bytes = 0
  private readonly hash = createHash('sha256')

  constructor (private readonly limit = Number.POSITIVE_INFINITY, private readonly tooLarge?: () => Error) {
    super()
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.limit) {
      cb(this.tooLarge?.() ?? new Error(`more than ${this.limit} bytes`))
      return
    }
    this.hash.update(chunk)
    cb(null, chunk)
  }

  /** The sha256 of everything that passed (once, after the end). */
  digest (): string {
    return this.hash.digest('hex')
  }
}
