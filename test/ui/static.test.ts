import t from 'tap'
import http from 'node:http'
import https from 'node:https'
import { join } from 'node:path'
import { startServer } from '../helpers/cluster.js'
import { packageRoot } from '../../server/static.js'

t.test('the dashboard files: no token needed, right types, no-cache, a strict CSP', async t => {
  const { server } = await startServer(t)
  const cases: Array<[string, RegExp]> = [
    ['/', /^text\/html/],
    ['/index.html', /^text\/html/],
    ['/ui/app.js', /^text\/javascript/],
    ['/ui/style.css', /^text\/css/],
    ['/ui/favicon.svg', /^image\/svg\+xml/],
    ['/ui/vendor/preact.mjs', /^text\/javascript/],
    ['/ui/vendor/hooks.mjs', /^text\/javascript/],
    ['/ui/vendor/htm.mjs', /^text\/javascript/]
  ]
  for (const [path, type] of cases) {
    const res = await fetch(server.httpUrl + path)
    t.equal(res.status, 200, path)
    t.match(res.headers.get('content-type'), type, path)
    t.equal(res.headers.get('cache-control'), 'no-cache', path)
    t.match(res.headers.get('content-security-policy'), /default-src 'self'; script-src 'self';/, path)
    t.equal(res.headers.get('x-content-type-options'), 'nosniff', path)
    await res.arrayBuffer()
  }
  const hooks = await (await fetch(`${server.httpUrl}/ui/vendor/hooks.mjs`)).text()
  t.notMatch(hooks, /from\s*["']preact["']/, 'bare imports are rewritten for the browser')
  t.match(hooks, /from"\.\/preact\.mjs"/)

  const first = await fetch(`${server.httpUrl}/ui/app.js`)
  await first.arrayBuffer()
  const etag = first.headers.get('etag')!
  const again = await fetch(`${server.httpUrl}/ui/app.js`, { headers: { 'if-none-match': etag } })
  t.equal(again.status, 304, 'revalidation answers 304')

  const head = await fetch(`${server.httpUrl}/`, { method: 'HEAD' })
  t.equal(head.status, 200)
})

t.test('only known dashboard files are served', async t => {
  const { server, api } = await startServer(t)
  // node:http sends the path as written (fetch would normalize the dots away).
  const raw = (path: string): Promise<{ status: number, body: string }> => new Promise((resolve, reject) => {
    const { hostname, port } = new URL(server.httpUrl)
    http.get({ hostname, port, path, headers: { authorization: `Bearer ${api.token}` } }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
  for (const path of ['/ui/nope.js', '/ui/../package.json', '/ui/%2e%2e/package.json', '/ui/..%2fpackage.json', '/ui/vendor/react.mjs', '/ui/vendor/../app.js', '/ui/.hidden.js', '/ui/app.ts', '/ui/vendor/../../package.json']) {
    const res = await raw(path)
    t.equal(res.status, 404, path)
    t.equal(JSON.parse(res.body).error.code, 'RG_ERR_NOT_FOUND', path)
  }
  const post = await api.request('POST', '/')
  t.equal(post.status, 404, 'only GET and HEAD reach the dashboard files')
})

t.test('the HTTPS port serves the dashboard too', async t => {
  const { server } = await startServer(t)
  const { status, type } = await new Promise<{ status: number, type: string }>((resolve, reject) => {
    https.get(`${server.httpsUrl!}/`, { rejectUnauthorized: false }, res => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']) }))
    }).on('error', reject)
  })
  t.equal(status, 200)
  t.match(type, /^text\/html/)
})

t.test('the ui folder is found from the source tree and from dist/', async t => {
  const root = packageRoot()
  t.equal(packageRoot(join(root, 'server', 'static.ts')), root)
  t.equal(packageRoot(join(root, 'dist', 'server', 'static.js')), root)
})

t.test('GET /api/endpoints pages and searches, with x-total-count', async t => {
  const { server, api } = await startServer(t)
  for (let i = 0; i < 12; i++) await api.ok('POST', '/api/endpoints', { name: `${i % 2 === 0 ? 'web' : 'db'}-${String(i).padStart(2, '0')}` })
  const get = async (query: string): Promise<{ names: string[], total: string | null }> => {
    const res = await fetch(`${server.httpUrl}/api/endpoints${query}`, { headers: { authorization: `Bearer ${api.token}` } })
    t.equal(res.status, 200, query)
    return { names: ((await res.json()) as Array<{ name: string }>).map(e => e.name), total: res.headers.get('x-total-count') }
  }
  const all = await get('')
  t.equal(all.names.length, 12, 'no parameters: the whole list, as before')
  t.equal(all.total, '12')
  t.same(await get('?offset=10&limit=5'), { names: ['web-10', 'db-11'], total: '12' })
  t.same(await get('?q=WEB&limit=2'), { names: ['web-00', 'web-02'], total: '6' }, 'search ignores case')
  t.same(await get('?q=web&offset=4&limit=4'), { names: ['web-08', 'web-10'], total: '6' })
  t.same(await get('?q=nothing-like-this'), { names: [], total: '0' })
  const one = (await api.ok('GET', '/api/endpoints?limit=1'))[0]
  t.same((await get(`?q=${one.id}`)).names, [one.name], 'search by id')
  for (const bad of ['?limit=-1', '?offset=x', '?limit=1.5']) {
    const res = await api.request('GET', `/api/endpoints${bad}`)
    t.equal(res.status, 400, bad)
    t.equal(res.body.error.code, 'RG_ERR_BAD_REQUEST', bad)
  }
})

t.test('the dashboard is flat ES modules: every import of every module is served, and every module is reached from app.js', async t => {
  const { server } = await startServer(t)
  const seen = new Set<string>()
  const queue = ['/ui/app.js']
  while (queue.length > 0) {
    const path = queue.shift()!
    if (seen.has(path)) continue
    seen.add(path)
    const res = await fetch(server.httpUrl + path)
    t.equal(res.status, 200, `${path} is served`)
    const text = await res.text()
    for (const m of text.matchAll(/^import\s[^'"]*['"]([^'"]+)['"]/gm)) {
      queue.push(new URL(m[1], `http://x${path}`).pathname)
    }
  }
  const { readdirSync } = await import('node:fs')
  const own = readdirSync(join(packageRoot(), 'server', 'ui')).filter(f => f.endsWith('.js')).map(f => `/ui/${f}`)
  t.same(own.filter(f => !seen.has(f)), [], 'no module is left unused')
  t.ok(own.length >= 10, `${own.length} modules`)
})
