import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, closeSync, openSync, writeSync } from 'node:fs'

/**
 * `bytes` bytes written to `file`: `head` first (a stand-in build's script),
 * then random bytes in 1 MiB pieces. Returns the sha256 of the whole file.
 */
export function writeRandomFile (file: string, bytes: number, options: { head?: Buffer, mode?: number } = {}): string {
  const head = options.head ?? Buffer.alloc(0)
  const hash = createHash('sha256').update(head)
  const fd = openSync(file, 'w', options.mode ?? 0o644)
  try {
    writeSync(fd, head)
    for (let left = bytes - head.length; left > 0;) {
      const chunk = randomBytes(Math.min(left, 1024 * 1024))
      writeSync(fd, chunk)
      hash.update(chunk)
      left -= chunk.length
    }
  } finally {
    closeSync(fd)
  }
  if (options.mode !== undefined) chmodSync(file, options.mode)
  return hash.digest('hex')
}
