import t from 'tap'
import http from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import WebSocket, { WebSocketServer } from 'ws'
import { startSite, startAgent, eventually, tempDir, freePort, type TapLike } from '../helpers/cluster.js'
import { connectTcp } from '../../cli/connect.js'
import { patternStream, patternSha256, hashStream, readAll, listenHttp, listenEcho, httpRequest, within, MB, spawnCli, echoSite, cliBin as bin, type Child } from '../helpers/tunnel-data.js'

/** What the agent-side target saw and did. */
interface TargetState {
  /** The Authorization header of every request that reached the target. */
  authorization: Array<string | undefined>
  /** /stall: bytes accepted by res.write(), writes refused (false), whether it waits for 'drain' now. */
  stall: { attempted: number, written: number, refusals: number, blocked: boolean, finished: boolean }
  /** /slow: chunks written, and whether its connection closed. */
  slow: { chunks: number, closed: boolean }
  /** /hang: requests received (never answered). */
  hung: number
}

const STALL_TOTAL = 1024 * MB

/**
 * The agent-side HTTP target:
 *   POST /upload            hashes the body, answers {sha256, bytes}
 *   GET  /download?bytes=&seed=   streams patternStream(seed, bytes)
 *   GET  /stall             tries to write STALL_TOTAL bytes, honouring backpressure
 *   GET  /slow              a chunk every 50 ms, forever
 *   GET  /hang              never answers
 *   GET  /hello             a small JSON answer
 */
function targetHandler (state: TargetState): http.RequestListener {
  return (req, res) => {
    state.authorization.push(req.headers.authorization)
    const url = new URL(req.url ?? '/', 'http://target')
    switch (url.pathname) {
      case '/upload': {
        void hashStream(req).then(({ sha256, bytes }) => {
          res.setHeader('content-type', 'application/json')
          res.end(JSON.stringify({ sha256, bytes }))
        }, () => res.destroy())
        return
      }
      case '/download': {
        const bytes = Number(url.searchParams.get('bytes'))
        const seed = Number(url.searchParams.get('seed'))
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes })
        patternStream(seed, bytes).pipe(res)
        return
      }
      case '/stall': {
        const s = state.stall
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        const chunk = randomBytes(64 * 1024)
        const pump = (): void => {
          s.blocked = false
          while (s.attempted < STALL_TOTAL && !res.destroyed) {
            s.attempted += chunk.length
            const ok = res.write(chunk)
            if (!ok) {
              s.refusals++
              s.blocked = true
              res.once('drain', () => { s.written = s.attempted; pump() })
              return
            }
            s.written = s.attempted
          }
          if (!res.destroyed) res.end(() => { s.finished = true })
        }
        pump()
        return
      }
      case '/slow': {
        res.writeHead(200, { 'content-type': 'text/plain' })
        const timer = setInterval(() => {
          state.slow.chunks++
          res.write(`chunk ${state.slow.chunks}\n`)
        }, 50)
        res.once('close', () => { clearInterval(timer); state.slow.closed = true })
        return
      }
      case '/hang':
        state.hung++
        return
      default:
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ path: req.url }))
    }
  }
}

function newState (): TargetState {
  return {
    authorization: [],
    stall: { attempted: 0, written: 0, refusals: 0, blocked: false, finished: false },
    slow: { chunks: 0, closed: false },
    hung: 0
  }
}

type Site = Awaited<ReturnType<typeof startSite>>

/** A site, an HTTP target on 127.0.0.1:0 (or `tunnelTarget`), an endpoint for it and its agent online. */
async function setup (t: TapLike, options: { tunnelTarget?: string } = {}): Promise<{ state: TargetState, target: http.Server | null, api: Site['api'], site: Site, endpointId: string, proxyUrl: string, auth: Record<string, string> }> {
  const state = newState()
  let tunnelTarget = options.tunnelTarget
  let target: http.Server | null = null
  if (tunnelTarget === undefined) {
    const listening = await listenHttp(t, targetHandler(state))
    target = listening.server
    tunnelTarget = `http://127.0.0.1:${listening.port}`
  }
  const site = await startSite(t)
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'data', tunnelTarget })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  return {
    state,
    target,
    api: site.api,
    site,
    endpointId: ep.id,
    proxyUrl: `${site.server.httpUrl}/api/endpoints/${ep.id}/proxy`,
    auth: { authorization: `Bearer ${site.api.token}` }
  }
}

async function jsonOf (res: http.IncomingMessage): Promise<any> {
  return JSON.parse((await readAll(res)).toString('utf8'))
}

t.test('64 MB each way through the proxy, sha256 intact, the admin token stays on the server', async t => {
  const { state, proxyUrl, auth } = await setup(t)
  const size = 64 * MB

  // Upload: the client streams a body it hashes as it goes; the target hashes what it received.
  const sent = createHash('sha256')
  const body = patternStream(0x5eed, size)
  body.on('data', chunk => sent.update(chunk as Buffer))
  let started = Date.now()
  const up = httpRequest(`${proxyUrl}/upload`, { method: 'POST', headers: { ...auth, 'content-type': 'application/octet-stream' }, body })
  const upRes = await up.response
  const upAnswer = await jsonOf(upRes)
  const upMs = Date.now() - started
  t.equal(upRes.statusCode, 200)
  t.equal(upAnswer.bytes, size, 'the target received every byte')
  t.equal(upAnswer.sha256, sent.digest('hex'), 'the target received the bytes sent')

  // Download: the target streams a deterministic body; the client hashes while reading.
  const expected = patternSha256(0xd0a, size)
  started = Date.now()
  const down = httpRequest(`${proxyUrl}/download?bytes=${size}&seed=${0xd0a}`, { headers: auth })
  const downRes = await down.response
  t.equal(downRes.statusCode, 200)
  t.equal(downRes.headers['content-length'], String(size))
  const got = await hashStream(downRes)
  const downMs = Date.now() - started
  t.equal(got.bytes, size, 'the client received every byte')
  t.equal(got.sha256, expected, 'the client received the bytes the target sent')

  t.ok(state.authorization.length >= 2)
  t.ok(state.authorization.every(a => a === undefined), 'the target never saw an Authorization header')
  const rate = (ms: number): string => `${ms} ms, ${(64 / (ms / 1000)).toFixed(1)} MB/s`
  t.comment(`64 MB upload: ${rate(upMs)}; 64 MB download: ${rate(downMs)}`)
})

t.test('a stalled stream does not slow the others, and its sender is held back', async t => {
  const { state, proxyUrl, auth } = await setup(t)

  // A reader that stops: takes the response head, then never reads.
  const stalled = httpRequest(`${proxyUrl}/stall`, { headers: auth })
  t.teardown(() => stalled.req.destroy())
  const stalledRes = await stalled.response
  stalledRes.pause()
  t.equal(stalledRes.statusCode, 200)
  await eventually(() => state.stall.blocked, 10_000)

  const before = state.stall.written
  const size = 4 * MB
  const seeds = [11, 12, 13, 14]
  const started = Date.now()
  const results = await within(Promise.all(seeds.map(async seed => {
    const { response } = httpRequest(`${proxyUrl}/download?bytes=${size}&seed=${seed}`, { headers: auth })
    const res = await response
    return { status: res.statusCode, ...(await hashStream(res)) }
  })), 30_000, 'the fast downloads')
  const ms = Date.now() - started
  for (const [i, r] of results.entries()) {
    t.equal(r.status, 200)
    t.equal(r.bytes, size)
    t.equal(r.sha256, patternSha256(seeds[i], size), `download ${i} intact`)
  }
  t.comment(`${seeds.length} x 4 MB alongside a stalled stream: ${ms} ms`)

  const s = state.stall
  t.comment(`stalled sender: ${(s.written / MB).toFixed(2)} MB accepted (${(before / MB).toFixed(2)} MB before the others ran), ${s.refusals} refused writes`)
  t.ok(s.refusals > 0, 'the target\'s res.write() returned false')
  t.ok(s.blocked, 'the target still waits for drain')
  t.notOk(s.finished, 'the stalled response did not finish')
  t.ok(s.written < 16 * MB, `the stalled sender got at most a few MB out (${s.written} bytes)`)
  t.ok(s.written * 32 < STALL_TOTAL, 'far below what it tried to send')
  t.notOk(stalledRes.complete, 'the stalled response is still open')
  t.ok(stalledRes.readableLength <= 1 * MB, 'the stalled client buffers little')
})

t.test('WebSocket through the proxy: text and binary messages echo intact', async t => {
  const state = newState()
  const upgrades: Array<string | undefined> = []
  const target = await listenHttp(t, targetHandler(state))
  const wss = new WebSocketServer({ server: target.server, path: '/echo' })
  t.teardown(() => new Promise(resolve => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve(undefined)) }))
  wss.on('connection', (ws, req) => {
    upgrades.push(req.headers.authorization)
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
  })
  const { site, endpointId, auth } = await setup(t, { tunnelTarget: `http://127.0.0.1:${target.port}` })

  const url = `${site.server.httpUrl.replace(/^http/, 'ws')}/api/endpoints/${endpointId}/proxy/echo`
  const ws = new WebSocket(url, { headers: auth })
  t.teardown(() => ws.terminate())
  const received: Array<{ data: Buffer, binary: boolean }> = []
  ws.on('message', (data: Buffer, binary) => received.push({ data, binary }))
  await within(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }), 10_000, 'the WebSocket open')

  const messages: Array<{ data: Buffer, binary: boolean }> = [
    { data: Buffer.from('hello'), binary: false },
    { data: randomBytes(10), binary: true },
    { data: Buffer.from('ünïcödé ✓'), binary: false },
    { data: randomBytes(1 * MB), binary: true },
    { data: Buffer.from('x'.repeat(100_000)), binary: false },
    { data: randomBytes(70_000), binary: true },
    { data: Buffer.from('bye'), binary: false }
  ]
  for (const m of messages) ws.send(m.binary ? m.data : m.data.toString('utf8'), { binary: m.binary })
  await eventually(() => received.length >= messages.length, 15_000)
  t.equal(received.length, messages.length)
  for (const [i, m] of messages.entries()) {
    t.equal(received[i].binary, m.binary, `message ${i} kept its type`)
    t.ok(received[i].data.equals(m.data), `message ${i} (${m.data.length} bytes) echoed intact`)
  }
  t.same(upgrades, [undefined], 'the target never saw the Authorization header')
  const closed = new Promise(resolve => ws.once('close', resolve))
  ws.close(1000)
  await within(closed, 10_000, 'the WebSocket close')
})

t.test('in-flight requests and sessions end when the tunnel is closed', async t => {
  const { state, target, api, site, endpointId, proxyUrl, auth } = await setup(t)
  const wss = new WebSocketServer({ server: target!, path: '/echo' })
  t.teardown(() => new Promise(resolve => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve(undefined)) }))
  wss.on('connection', ws => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })))

  // One request the target has not answered yet, one response streaming, one WebSocket open.
  const hanging = httpRequest(`${proxyUrl}/hang`, { headers: auth })
  const slow = httpRequest(`${proxyUrl}/slow`, { headers: auth })
  slow.req.on('error', () => {})
  const slowRes = await slow.response
  t.equal(slowRes.statusCode, 200)
  let received = 0
  const ended = new Promise<string>(resolve => {
    slowRes.on('data', (c: Buffer) => { received += c.length })
    slowRes.once('error', () => resolve('error'))
    slowRes.once('aborted', () => resolve('aborted'))
    slowRes.once('end', () => resolve('end'))
    slowRes.once('close', () => resolve('close'))
  })
  const ws = new WebSocket(`${site.server.httpUrl.replace(/^http/, 'ws')}/api/endpoints/${endpointId}/proxy/echo`, { headers: auth })
  t.teardown(() => ws.terminate())
  ws.on('error', () => {})
  const wsClosed = new Promise<number>(resolve => ws.once('close', code => resolve(code)))
  await within(new Promise(resolve => ws.once('open', resolve)), 10_000, 'the WebSocket open')
  const pong = new Promise(resolve => ws.once('message', resolve))
  ws.send('ping')
  await within(pong, 10_000, 'the WebSocket echo')
  await eventually(() => received > 0 && state.hung === 1)

  const deleted = await api.request('DELETE', `/api/endpoints/${endpointId}/tunnel`)
  t.ok(deleted.status < 300, `DELETE tunnel answered ${deleted.status}`)

  const hangRes = await within(hanging.response, 10_000, 'the unanswered request')
  t.equal(hangRes.statusCode, 502)
  const body = await jsonOf(hangRes)
  t.equal(body.error.code, 'RG_ERR_TUNNEL_CLOSED')

  // Headers were sent already: the only way to say so is to cut the response short.
  const how = await within(ended, 10_000, 'the streaming response')
  t.comment(`streaming response ended by: ${how}`)
  t.notOk(slowRes.complete, 'the streaming response ended prematurely (not as a complete body)')
  await eventually(() => state.slow.closed, 10_000)
  t.pass('the target\'s connection was closed on the agent side')

  const code = await within(wsClosed, 10_000, 'the WebSocket close')
  t.not(code, 1000, `the WebSocket closed abnormally (${code})`)
})

t.test('a tunnel that cannot open answers 504 RG_ERR_TUNNEL_TIMEOUT', async t => {
  const { server, api } = await startSite(t, { server: { tunnelOpenTimeoutMs: 500 } })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'nobody-home', tunnelTarget: 'http://127.0.0.1:9' })
  const started = Date.now()
  const { response } = httpRequest(`${server.httpUrl}/api/endpoints/${ep.id}/proxy/x`, { headers: { authorization: `Bearer ${api.token}` } })
  const res = await within(response, 10_000, 'the proxied request')
  const took = Date.now() - started
  t.equal(res.statusCode, 504)
  t.equal((await jsonOf(res)).error.code, 'RG_ERR_TUNNEL_TIMEOUT')
  t.ok(took >= 450, `waited for the open timeout (${took} ms)`)
})

t.test('an agent whose target is not listening answers 502 with a coded error', async t => {
  const closedPort = await freePort()
  const { proxyUrl, auth } = await setup(t, { tunnelTarget: `http://127.0.0.1:${closedPort}` })
  const { response } = httpRequest(`${proxyUrl}/x`, { headers: auth })
  const res = await within(response, 10_000, 'the proxied request')
  t.equal(res.statusCode, 502)
  const body = await jsonOf(res)
  t.ok(['RG_ERR_TARGET_UNREACHABLE', 'RG_ERR_TUNNEL_CLOSED'].includes(body.error.code), `error code ${String(body.error.code)}`)
})

t.test('a unix socket target serves a proxied GET', async t => {
  const state = newState()
  const sock = join(tempDir(t, 'rg-unix-'), 'target.sock')
  await listenHttp(t, targetHandler(state), sock)
  const { proxyUrl, auth } = await setup(t, { tunnelTarget: `unix:${sock}` })
  const { response } = httpRequest(`${proxyUrl}/hello/unix?q=1`, { headers: auth })
  const res = await within(response, 10_000, 'the proxied request')
  t.equal(res.statusCode, 200)
  t.same(await jsonOf(res), { path: '/hello/unix?q=1' })
  t.same(state.authorization, [undefined])

  const size = 8 * MB
  const down = await httpRequest(`${proxyUrl}/download?bytes=${size}&seed=77`, { headers: auth }).response
  t.equal((await hashStream(down)).sha256, patternSha256(77, size), '8 MB over the unix socket intact')
})

/** `relaygate connect` on stdin/stdout. */
const connect = (t: TapLike, serverUrl: string, token: string, endpointId: string, port: number): Child =>
  spawnCli(t, token, ['connect', endpointId, String(port), '--server', serverUrl])

const stdoutBytes = (c: Child): number => c.stdout.reduce((n, b) => n + b.length, 0)

t.test('relaygate connect: raw TCP through the tunnel on stdin/stdout', async t => {
  if (!existsSync(bin)) {
    t.fail(`${bin} is missing: run \`npm run build\` first`)
    return
  }
  const echo = await listenEcho(t)
  const closedPort = await freePort()
  const site = await startSite(t)
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'tcp' })
  const agent = startAgent(t, ep.joinToken, { allowTcp: [echo.port, closedPort] })
  await agent.whenOnline()
  const token = site.api.token

  t.test('echo: 1 MB round trip, then a clean exit on stdin end', async t => {
    const child = connect(t, site.server.httpUrl, token, ep.id, echo.port)
    const data = randomBytes(1 * MB)
    child.proc.stdin!.write(data)
    const early = child.exit.then(code => { throw new Error(`connect exited early (${String(code)}): ${child.stderr.trim()}`) })
    early.catch(() => {})
    await within(Promise.race([eventually(() => stdoutBytes(child) >= data.length, 20_000), early]), 25_000, 'the echo')
    const back = Buffer.concat(child.stdout)
    t.equal(back.length, data.length)
    t.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'), 'sha256 of the echo matches')
    child.proc.stdin!.end()
    t.equal(await within(child.exit, 15_000, 'the child exit'), 0, `exit 0 (stderr: ${child.stderr.trim()})`)
  })

  // Regression: `relaygate connect` exited as soon as the connection ended,
  // dropping what stdout (an asynchronous pipe) still buffered: a slow reader
  // lost the tail of the stream.
  t.test('connectTcp resolves only once its output took every byte', async t => {
    const data = randomBytes(2 * MB)
    const input = new PassThrough()
    input.end(data)
    const written: Buffer[] = []
    // A slow consumer with room for everything: writes pile up, nothing pushes back.
    const output = new Writable({
      highWaterMark: 64 * MB,
      write (chunk: Buffer, _encoding, cb) {
        written.push(chunk)
        setTimeout(cb, 1)
      }
    })
    await within(connectTcp({ server: site.server.httpUrl, endpointId: ep.id, port: echo.port, token, input, output }), 30_000, 'connectTcp')
    t.equal(output.writableLength, 0, 'nothing left in the output buffer')
    const back = Buffer.concat(written)
    t.equal(back.length, data.length, 'every byte was written out before it resolved')
    t.ok(back.equals(data), 'the echo is intact')
  })

  t.test('the CLI with a slow stdout reader: bytes written right before stdin ends all come back', async t => {
    const child = connect(t, site.server.httpUrl, token, ep.id, echo.port)
    const data = randomBytes(8 * MB)
    child.proc.stdin!.end(data)
    const out = child.proc.stdout!
    out.on('data', () => {
      out.pause()
      setTimeout(() => out.resume(), 4)
    })
    t.equal(await within(child.exit, 30_000, 'the child exit'), 0, `exit 0 (stderr: ${child.stderr.trim()})`)
    const back = Buffer.concat(child.stdout)
    t.equal(back.length, data.length, 'every byte came back')
    t.ok(back.equals(data), 'the echo is intact')
  })

  t.test('a port the agent does not allow', async t => {
    const notAllowed = echo.port === 65535 ? 65534 : echo.port + 1
    const child = connect(t, site.server.httpUrl, token, ep.id, notAllowed)
    const code = await within(child.exit, 15_000, 'the child exit')
    t.not(code, 0, 'exits non-zero')
    t.match(child.stderr, /RG_ERR_TCP_NOT_ALLOWED/, 'stderr names RG_ERR_TCP_NOT_ALLOWED')
  })

  t.test('an allowed port where nothing listens', async t => {
    const child = connect(t, site.server.httpUrl, token, ep.id, closedPort)
    const code = await within(child.exit, 15_000, 'the child exit')
    t.not(code, 0, 'exits non-zero')
    t.match(child.stderr, /RG_ERR_TARGET_UNREACHABLE/, 'stderr names RG_ERR_TARGET_UNREACHABLE')
  })
})

t.test('relaygate connect exits 1 with a one-line reason when the tunnel drops mid-session (it exited 0 and ssh saw a broken pipe)', async t => {
  const { echo, site, ep, agent } = await echoSite(t, 'drops')
  const child = connect(t, site.server.httpUrl, site.api.token, ep.id, echo.port)
  child.proc.stdin!.write(Buffer.from('before the drop\n'))
  await within(eventually(() => stdoutBytes(child) >= 16 || undefined, 15_000), 20_000, 'the first echo')
  await agent.destroy()
  const code = await within(child.exit, 15_000, 'the child exit')
  t.equal(code, 1, 'exit 1')
  const lines = child.stderr.trim().split('\n')
  t.equal(lines.length, 1, 'one line')
  t.match(lines[0], /^relaygate: error: the tunnel dropped .*\(RG_ERR_TUNNEL_CLOSED\)$/)
  t.equal(Buffer.concat(child.stdout).toString(), 'before the drop\n', 'what came before the drop was delivered')
})

t.test('relaygate forward: a local port like ssh -L, one tunnel connection per accepted connection', async t => {
  const { echo, site, ep } = await echoSite(t, 'forward')
  const start = (port: number): { child: Child, ready: Promise<{ host: string, port: number }> } => {
    const readyFile = join(tempDir(t), 'ready.json')
    const child = spawnCli(t, site.api.token, ['forward', ep.id, String(port), '--listen', '0', '--server', site.server.httpUrl, '--ready-file', readyFile], 'ignore')
    const ready = eventually(() => existsSync(readyFile) ? JSON.parse(readFileSync(readyFile, 'utf8')) as { host: string, port: number } : undefined, 20_000) as Promise<{ host: string, port: number }>
    return { child, ready }
  }
  /** One connection to the local port: writes `data`, ends, resolves with what came back (or the error). */
  const roundTrip = async (port: number, data: Buffer): Promise<Buffer> => await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const socket = net.connect(port, '127.0.0.1', () => socket.end(data))
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => resolve(Buffer.concat(chunks)))
    socket.on('error', reject)
  })

  const { child, ready } = start(echo.port)
  const local = await within(ready, 25_000, 'the ready file')
  t.equal(local.host, '127.0.0.1', 'listens on this machine only by default')
  const payloads = [randomBytes(1 * MB), randomBytes(3 * MB), Buffer.from('small\n')]
  const backs = await within(Promise.all(payloads.map(async p => await roundTrip(local.port, p))), 30_000, 'three connections at once')
  backs.forEach((back, i) => t.ok(back.equals(payloads[i]), `connection ${i}: ${payloads[i].length} bytes echoed intact (got ${back.length})`))

  const denied = start(echo.port === 65535 ? 65534 : echo.port + 1)
  const deniedLocal = await within(denied.ready, 25_000, 'the second ready file')
  const refused = await within(roundTrip(deniedLocal.port, Buffer.from('x')).then(b => b.length, (err: NodeJS.ErrnoException) => err.code), 15_000, 'the refused connection')
  t.ok(refused === 0 || refused === 'ECONNRESET', `a port the agent does not allow: the local connection is closed (${String(refused)})`)
  await within(eventually(() => /RG_ERR_TCP_NOT_ALLOWED/.test(denied.child.stdout.map(String).join('') + denied.child.stderr) || undefined, 10_000), 15_000, 'the refusal in the log')
  t.ok((await roundTrip(local.port, Buffer.from('still here'))).equals(Buffer.from('still here')), 'the first forward still serves after the other was refused')

  child.proc.kill('SIGTERM')
  t.equal(await within(child.exit, 20_000, 'the exit on SIGTERM'), 0, `exit 0 on SIGTERM (stderr: ${child.stderr.trim()})`)

  const wrong = spawnCli(t, site.api.token, ['forward', 'no-such-endpoint', String(echo.port), '--listen', '0', '--server', site.server.httpUrl], 'ignore')
  t.equal(await within(wrong.exit, 20_000, 'the exit on a wrong endpoint'), 1, 'a wrong endpoint: exit 1 at start, before listening')
  t.match(wrong.stderr, /RG_ERR_NOT_FOUND/, 'stderr names RG_ERR_NOT_FOUND')
})
