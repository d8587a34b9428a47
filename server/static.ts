import type { IncomingMessage, ServerResponse } from 'node:http'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/errors.js'
import { embeddedUiDir } from '../common/embedded.js'
import { sendError } from './http-util.js'

/**
 * The web dashboard's files: `server/ui/*` and a few ES modules from
 * node_modules (preact, its hooks, htm), served without a bundler. They hold
 * no data, so they need no token; every API call the page makes does.
 */

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon'
}

/** Same origin only; no inline script or style, no frames, no plugins. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'"
].join('; ')

/** The folder holding package.json, from here (source: server/, build: dist/server/). */
export function packageRoot (from: string = fileURLToPath(import.meta.url)): string {
  let dir = dirname(from)
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir
    const up = dirname(dir)
    if (up === dir) throw new RelaygateError('RG_ERR_CONFIG', `no package.json above ${from}`)
    dir = up
  }
}

/**
 * Vendor modules by the name the page imports them under. Their bare
 * `from "preact"` imports are rewritten to the sibling file, so the browser
 * needs no import map (an inline one would need a CSP exception).
 */
const vendorModules: Record<string, string> = {
  'preact.mjs': 'preact',
  'hooks.mjs': 'preact/hooks',
  'htm.mjs': 'htm'
}

function resolveVendor (specifier: string): string {
  // require.resolve gives the CommonJS build (dist/x.js); the ES module sits beside it as dist/x.mjs.
  const cjs = createRequire(import.meta.url).resolve(specifier)
  return cjs.replace(/\.js$/, '.mjs')
}

interface Asset {
  body: Buffer
  type: string
  etag: string
}

export interface StaticUiOptions {
  logger: Logger
  /** Folder with index.html, app.js, style.css; default <package root>/server/ui. */
  dir?: string
}

/** Returns a handler for `/`, `/index.html` and `/ui/...`; false for any other path. */
export function createStaticUi (options: StaticUiOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const embedded = options.dir === undefined ? embeddedUiDir() : null
  const dir = options.dir ?? embedded ?? join(packageRoot(), 'server', 'ui')
  const cache = new Map<string, Promise<Asset | null>>()

  const load = async (file: string, rewrite = false): Promise<Asset | null> => {
    let body: Buffer
    try {
      body = await readFile(file)
    } catch (err) {
      options.logger.warn({ file, code: (err as NodeJS.ErrnoException).code }, 'dashboard file missing')
      return null
    }
    if (rewrite) body = Buffer.from(body.toString('utf8').replace(/from\s*(["'])preact\1/g, 'from"./preact.mjs"'))
    const ext = /\.[a-z0-9]+$/.exec(file)?.[0] ?? ''
    return { body, type: contentTypes[ext] ?? 'application/octet-stream', etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` }
  }

  /** The file for a URL path, or null: only known names, never a path out of the folder. */
  const fileFor = (path: string): { file: string, rewrite: boolean } | null => {
    if (path === '/' || path === '/index.html') return { file: join(dir, 'index.html'), rewrite: false }
    const vendor = /^\/ui\/vendor\/([a-z]+\.mjs)$/.exec(path)
    if (vendor !== null) {
      const specifier = vendorModules[vendor[1]]
      if (specifier === undefined) return null
      return { file: embedded !== null ? join(dir, 'vendor', vendor[1]) : resolveVendor(specifier), rewrite: true }
    }
    const own = /^\/ui\/([a-z0-9][a-z0-9-]*\.(?:js|css|svg|png|ico))$/.exec(path)
    if (own !== null) return { file: join(dir, own[1]), rewrite: false }
    return null
  }

  const serve = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const found = fileFor(path)
    // Files are read once per process (and again after a failed read): they change only with a new build.
    let pending = found === null ? null : cache.get(found.file)
    if (found !== null && pending === undefined) {
      pending = load(found.file, found.rewrite)
      cache.set(found.file, pending)
    }
    const asset = pending === null || pending === undefined ? null : await pending
    if (asset === null) {
      if (found !== null) cache.delete(found.file)
      sendError(res, new RelaygateError('RG_ERR_NOT_FOUND', `no file ${path}`))
      return
    }
    const headers: Record<string, string | number> = {
      'content-type': asset.type,
      'cache-control': 'no-cache',
      etag: asset.etag,
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY'
    }
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers).end()
      return
    }
    headers['content-length'] = asset.body.length
    res.writeHead(200, headers)
    res.end(req.method === 'HEAD' ? undefined : asset.body)
  }

  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    const path = (req.url ?? '/').split('?')[0]
    if (path !== '/' && path !== '/index.html' && !path.startsWith('/ui/')) return false
    serve(req, res, path).catch(err => {
      options.logger.error({ err, path }, 'serving a dashboard file failed')
      sendError(res, new RelaygateError('RG_ERR_INTERNAL', 'cannot serve this file'))
    })
    return true
  }
}
