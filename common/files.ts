import { writeFileSync, renameSync, mkdirSync, chmodSync } from 'node:fs'
import { writeFile, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'

/** Writes a file atomically (temp file + rename), creating its directory. */
export function writeFileAtomic (path: string, data: string | Buffer, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true })
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  writeFileSync(tmp, data, { mode })
  chmodSync(tmp, mode)
  renameSync(tmp, path)
}

/**
 * writeFileAtomic off the event loop, for hot paths: a busy disk can hold a
 * create or rename for tens of milliseconds, and a process that does them
 * synchronously serves nothing meanwhile. The directory must exist.
 */
export async function writeFileAtomicAsync (path: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeFile(tmp, data, { mode })
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

/** `--ready-file`: one JSON object, written once the process is ready. */
export function writeReadyFile (path: string | undefined, body: object): void {
  if (path === undefined || path === '') return
  writeFileAtomic(path, JSON.stringify(body) + '\n')
}
