import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { RelaygateError } from '../protocol/errors.js'

/**
 * Files embedded in the one-file executable (issue 16: a Node single
 * executable application; `npm run dist`): the native addons (uWebSockets.js
 * for the relay, better-sqlite3 for the server) and the dashboard. They are
 * written to disk on first use, content-addressed, and an existing copy is
 * used only when its bytes hash to the embedded ones (the temp dir may be
 * shared with other users).
 */
type Sea = { isSea: () => boolean, getAsset: (key: string) => ArrayBuffer }

let seaModule: Sea | null | undefined

/** node:sea exists from Node 20.12; older runtimes simply are not one file. */
function sea (): Sea | null {
  if (seaModule === undefined) {
    try {
      seaModule = createRequire(import.meta.url)('node:sea') as Sea
    } catch {
      seaModule = null
    }
  }
  return seaModule
}

/** True when running as the one-file executable. */
export function isOneFile (): boolean {
  return sea()?.isSea() === true
}

interface Manifest { version: string, files: Record<string, string> }

let manifest: { parsed: Manifest, id: string } | null = null

/** The build's list of embedded files with their sha256 (the executable has no other way to list them). */
function embeddedManifest (): Manifest {
  if (manifest === null) {
    const bytes = Buffer.from(sea()!.getAsset('manifest.json'))
    manifest = { parsed: JSON.parse(bytes.toString('utf8')) as Manifest, id: createHash('sha256').update(bytes).digest('hex').slice(0, 16) }
  }
  return manifest.parsed
}

/** One folder per build: its files sit together (the dashboard's pages import each other). */
function buildId (): string {
  embeddedManifest()
  return manifest!.id
}

/** Where embedded files may go, the first usable wins: RELAYGATE_NATIVE_DIR, beside the executable (its install or versions dir), the temp dir. */
function candidateDirs (): string[] {
  const dirs = [process.env.RELAYGATE_NATIVE_DIR, join(dirname(process.execPath), '.relaygate-files')]
  dirs.push(join(tmpdir(), `relaygate-files-${process.getuid?.() ?? 'user'}`))
  return dirs.filter((d): d is string => d !== undefined && d !== '')
}

/** Writes one embedded file to disk (once) and returns its path. */
export function extractEmbedded (name: string): string {
  const s = sea()
  if (s === null || !s.isSea()) throw new RelaygateError('RG_ERR_INTERNAL', `${name} is only embedded in the one-file executable`)
  const want = embeddedManifest().files[name]
  if (want === undefined) throw new RelaygateError('RG_ERR_INTERNAL', `${name} is not embedded in this executable`)
  return writeOnce(join(buildId(), name), want, () => Buffer.from(s.getAsset(name)))
}

/** Loads a native addon whose bytes a bundle carries (relaygate-relay.mjs: npm run dist). */
export function loadAddonBytes (name: string, bytes: Uint8Array): unknown {
  const want = createHash('sha256').update(bytes).digest('hex')
  const module = { exports: {} as unknown }
  process.dlopen(module, writeOnce(join(want.slice(0, 16), name), want, () => Buffer.from(bytes)))
  return module.exports
}

/** `relative` under the first usable candidate folder, holding bytes that hash to `want`; written if it does not. */
function writeOnce (relative: string, want: string, bytesOf: () => Buffer): string {
  const errors: string[] = []
  for (const dir of candidateDirs()) {
    const file = join(dir, relative)
    try {
      if (existsSync(file) && statSync(file).isFile() && createHash('sha256').update(readFileSync(file)).digest('hex') === want) return file
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
      const bytes = bytesOf()
      if (createHash('sha256').update(bytes).digest('hex') !== want) throw new Error('the embedded bytes do not match their sha256')
      const part = `${file}.${process.pid}.part`
      writeFileSync(part, bytes, { mode: 0o600 })
      chmodSync(part, 0o500)
      renameSync(part, file)
      return file
    } catch (err) {
      errors.push(`${dir}: ${(err as Error).message}`)
    }
  }
  throw new RelaygateError('RG_ERR_CONFIG', `cannot write the embedded ${relative} anywhere (set RELAYGATE_NATIVE_DIR to a writable folder): ${errors.join('; ')}`)
}

/** Loads an embedded native addon, as `require` would load it from node_modules. */
export function loadEmbeddedAddon (name: string): unknown {
  const module = { exports: {} as unknown }
  process.dlopen(module, extractEmbedded(name))
  return module.exports
}

/** The dashboard's folder, written out of the executable; null when not running as one file. */
export function embeddedUiDir (): string | null {
  if (!isOneFile()) return null
  let root: string | null = null
  for (const name of Object.keys(embeddedManifest().files)) {
    if (!name.startsWith('ui/')) continue
    const file = extractEmbedded(name)
    root ??= file.slice(0, file.length - name.length)
  }
  return root === null ? null : join(root, 'ui')
}

/** The version the one-file build was made as (set by npm run dist), or null. */
export function embeddedVersion (): string | null {
  return isOneFile() ? embeddedManifest().version : null
}
