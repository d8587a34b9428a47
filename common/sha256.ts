import { createHash } from 'node:crypto'
import fs from 'node:fs'

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
