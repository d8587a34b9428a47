// Preload (NODE_OPTIONS=--import=<this file>) that makes the optional native
// package better-sqlite3 impossible to import in this process, as on a host
// where npm skipped it (no C++ toolchain, no prebuilt binary): a resolve hook
// answers ERR_MODULE_NOT_FOUND for it, exactly what Node says for a package
// that is not installed.
import { register } from 'node:module'

const hook = `
export async function resolve (specifier, context, next) {
  if (specifier === 'better-sqlite3' || specifier.startsWith('better-sqlite3/')) {
    const err = new Error("Cannot find package 'better-sqlite3' (hidden by no-sqlite-preload)")
    err.code = 'ERR_MODULE_NOT_FOUND'
    throw err
  }
  return next(specifier, context)
}
`
register(`data:text/javascript,${encodeURIComponent(hook)}`)
