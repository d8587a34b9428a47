import t from 'tap'
import net from 'node:net'
import { startSite, startAgent, eventually, type TapLike } from '../helpers/cluster.js'
import { httpRequest, readAll, within } from '../helpers/tunnel-data.js'

// The server's HTTP proxy reads the target's responses itself (server/http-splice.ts):
// these answers come from a raw TCP target, written byte by byte as a test needs them.

interface RawTarget { port: number, connections: number, open: number, heads: string[] }

/** Answers bodyless requests by path, on kept-alive connections; writes some answers in pieces. */
async function rawTarget (t: TapLike): Promise<RawTarget> {
  const state: RawTarget = { port: 0, connections: 0, open: 0, heads: [] }
  const sockets = new Set<net.Socket>()
  const pieces = (socket: net.Socket, parts: string[], then?: () => void): void => {
    const next = (): void => {
      const part = parts.shift()
      if (part === undefined) { then?.(); return }
      socket.write(part)
      setTimeout(next, 5)
    }
    next()
  }
  const server = net.createServer(socket => {
    state.connections++
    state.open++
    sockets.add(socket)
    socket.on('close', () => { state.open--; sockets.delete(socket) })
    socket.on('error', () => {})
    let buf = ''
    socket.on('data', chunk => {
      buf += chunk.toString('latin1')
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end)
        buf = buf.slice(end + 4)
        state.heads.push(head)
        const [method, path] = head.split(' ')
        const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n${method === 'HEAD' ? '' : body}`
        switch (path) {
          case '/chunked':
            pieces(socket, ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5;name=value\r', '\nhel', 'lo\r\n6\r\n wo', 'rld\r\n0\r\nx-trailer: t\r\n', '\r\n'])
            break
          case '/close':
            pieces(socket, ['HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ', 'the end'], () => socket.end())
            break
          case '/head':
            socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ncontent-type: text/plain\r\n\r\n')
            break
          case '/continue':
            pieces(socket, ['HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'])
            break
          case '/cookies':
            socket.write(ok('c', 'Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Mixed-Case: Yes\r\n'))
            break
          case '/not-modified':
            socket.write('HTTP/1.1 304 Not Modified\r\netag: "x"\r\n\r\n')
            break
          case '/no-content':
            socket.write('HTTP/1.1 204 No Content\r\n\r\n')
            break
          case '/short':
            pieces(socket, ['HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n', 'only ten b'], () => socket.destroy())
            break
          case '/folded':
            socket.write('HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n')
            break
          case '/not-http':
            socket.write('SSH-2.0-OpenSSH_9.2\r\n\r\n')
            break
          case '/two-lengths':
            socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab')
            break
          case '/closing':
            socket.write(ok('bye', 'connection: close\r\n'))
            socket.end()
            break
          case '/later':
            setTimeout(() => socket.write(ok('later')), 100)
            break
          case '/keep-alive-1s':
            socket.write(ok('brief', 'Keep-Alive: timeout=1\r\n'))
            break
          case '/idle-close':
            // Kept alive by its headers, then closed by the target while idle (a keep-alive timeout).
            socket.write(ok('soon closed'))
            setTimeout(() => socket.end(), 50)
            break
          case '/endless': {
            socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n')
            const timer = setInterval(() => socket.write('400\r\n' + 'x'.repeat(1024) + '\r\n'), 5)
            socket.once('close', () => clearInterval(timer))
            break
          }
          default:
            socket.write(ok(`${method} ${path}`))
        }
      }
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as net.AddressInfo).port
  t.teardown(() => new Promise<void>(resolve => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  return state
}

async function setup (t: TapLike): Promise<{ target: RawTarget, url: string, auth: Record<string, string> }> {
  const target = await rawTarget(t)
  const site = await startSite(t)
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'raw', tunnelTarget: `http://127.0.0.1:${target.port}` })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  return { target, url: `${site.server.httpUrl}/api/endpoints/${ep.id}/proxy`, auth: { authorization: `Bearer ${site.api.token}` } }
}

async function get (url: string, auth: Record<string, string>, method = 'GET'): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, rawHeaders: string[], body: string, complete: boolean }> {
  const res = await within(httpRequest(url, { method, headers: auth }).response, 15_000, `${method} ${url}`)
  let body = ''
  let complete = true
  try {
    body = (await readAll(res)).toString('latin1')
  } catch {
    complete = false
  }
  return { status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body, complete: complete && res.complete }
}

t.test('responses framed every way reach the client whole, and kept-alive streams are reused', async t => {
  const { target, url, auth } = await setup(t)

  const first = await get(`${url}/a`, auth)
  t.same([first.status, first.body], [200, 'GET /a'])
  const head = target.heads.at(-1)!
  t.match(head, /^GET \/a HTTP\/1\.1\r\n/, 'the target sees the path below the endpoint')
  t.match(head, new RegExp(`\r\nhost: 127\\.0\\.0\\.1:${target.port}`, 'i'), 'and its own Host')
  t.notMatch(head, /authorization/i, 'not the admin\'s token')

  const chunked = await get(`${url}/chunked`, auth)
  t.same([chunked.status, chunked.body, chunked.complete], [200, 'hello world', true], 'chunked, with an extension and a trailer, in pieces')
  const close = await get(`${url}/close`, auth)
  t.same([close.status, close.body, close.complete], [200, 'until the end', true], 'delimited by the target closing')
  const headed = await get(`${url}/head`, auth, 'HEAD')
  t.same([headed.status, headed.headers['content-length'], headed.body], [200, '1234', ''], 'HEAD: the length of the GET, no body')
  const cont = await get(`${url}/continue`, auth)
  t.same([cont.status, cont.body], [200, 'ok'], '100 Continue before the answer is not passed on')
  const cookies = await get(`${url}/cookies`, auth)
  t.same(cookies.headers['set-cookie'], ['a=1', 'b=2'], 'repeated fields stay apart')
  t.ok(cookies.rawHeaders.includes('X-Mixed-Case'), 'field names as the target wrote them')
  for (const [path, status] of [['/not-modified', 304], ['/no-content', 204]] as const) {
    const r = await get(`${url}${path}`, auth)
    t.same([r.status, r.body], [status, ''], `${status}: no body`)
  }
  const after = await get(`${url}/b`, auth)
  t.same([after.status, after.body], [200, 'GET /b'], 'the stream is still in step after all that')
  t.equal(target.connections, 2, 'every answer came on one kept-alive connection, except after the close-delimited one')

  const closing = await get(`${url}/closing`, auth)
  t.equal(closing.body, 'bye')
  const next = await get(`${url}/c`, auth)
  t.equal(next.body, 'GET /c')
  t.equal(target.connections, 3, 'connection: close from the target: a new stream for the next request')

  const before = target.connections
  await get(`${url}/keep-alive-1s`, auth)
  await eventually(() => target.open === 0, 5000)
  t.pass('a target that keeps connections one second: not kept (a request could cross its close)')
  t.equal((await get(`${url}/g`, auth)).body, 'GET /g')
  t.equal(target.connections, before + 1, 'the next request on a new stream')

  await get(`${url}/idle-close`, auth)
  await eventually(() => target.open === 0, 5000)
  const again = await get(`${url}/d`, auth)
  t.same([again.status, again.body], [200, 'GET /d'], 'a kept-alive stream the target closed while idle is not used again')
})

t.test('a response cut short is cut short for the client; what is not HTTP answers 502 RG_ERR_BAD_GATEWAY', async t => {
  const { url, auth } = await setup(t)
  const short = await get(`${url}/short`, auth)
  t.equal(short.status, 200)
  t.notOk(short.complete, 'the client sees a premature end, not a complete body')

  for (const path of ['/folded', '/not-http', '/two-lengths']) {
    const r = await get(`${url}${path}`, auth)
    t.equal(r.status, 502, path)
    t.equal(JSON.parse(r.body).error.code, 'RG_ERR_BAD_GATEWAY', `${path}: ${JSON.parse(r.body).error.message as string}`)
  }
  const fine = await get(`${url}/e`, auth)
  t.same([fine.status, fine.body], [200, 'GET /e'], 'the proxy carries on')
})

t.test('a client that goes away mid-download closes the target\'s connection', async t => {
  const { target, url, auth } = await setup(t)
  const { req, response } = httpRequest(`${url}/endless`, { headers: auth })
  req.on('error', () => {})
  const res = await within(response, 15_000, 'the endless response')
  await new Promise(resolve => res.once('data', resolve))
  t.equal(target.open, 1)
  res.destroy()
  await eventually(() => target.open === 0, 10_000)
  t.pass('the target\'s connection closed')
  const r = await get(`${url}/f`, auth)
  t.same([r.status, r.body], [200, 'GET /f'])
})

t.test('more requests at once than streams a tunnel uses: they wait their turn and all succeed', async t => {
  const { target, url, auth } = await setup(t)
  const answers = await Promise.all(Array.from({ length: 80 }, async () => await get(`${url}/later`, auth)))
  t.same(answers.filter(a => a.status === 200 && a.body === 'later').length, 80, '80 of 80 answered')
  t.ok(target.connections <= 64, `at most 64 streams (so target connections) at once: ${target.connections}`)
})
