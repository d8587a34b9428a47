import { writeFileSync, renameSync, mkdirSync, chmodSync } from 'node:fs'
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

/** `--ready-file`: one JSON object, written once the process is ready. */
export function writeReadyFile (path: string | undefined, body: object): void {
  if (path === undefined || path === '') return
  writeFileAtomic(path, JSON.stringify(body) + '\n')
}
