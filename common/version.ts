import { readFileSync } from 'node:fs'
import { embeddedVersion } from './embedded.js'

/** The package version, read once from package.json (works from source and from dist/), or the one-file build's own. */
export const VERSION: string = (() => {
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
