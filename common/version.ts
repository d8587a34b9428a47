import { readFileSync } from 'node:fs'
import { embeddedVersion } from './embedded.js'

declare const RELAYGATE_BUNDLE_VERSION: string | undefined

/** The package version, read once from package.json (works from source and from dist/), or the one-file build's or bundle's own. */
export const VERSION: string = (() => {
  if (typeof RELAYGATE_BUNDLE_VERSION === 'string') return RELAYGATE_BUNDLE_VERSION
  const embedded = embeddedVersion()
  if (embedded !== null) return embedded
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'relaygate' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  return '0.0.0'
})()

/** True when `version` (major.minor.patch, anything after ignored) is `min` or later; unreadable counts as older. */
export function atLeastVersion (version: string, min: string): boolean {
  const parse = (v: string): number[] | null => {
    const m = /^(\d+)\.(\d+)\.(\d+)/.exec(v)
    return m === null ? null : [Number(m[1]), Number(m[2]), Number(m[3])]
  }
  const a = parse(version)
  const b = parse(min)
  if (a === null || b === null) return false
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] > b[i]
  return true
}

/** The first version whose relays and agents carry and obey update orders (issue 16). */
export const UPDATES_SINCE = '0.3.0'
