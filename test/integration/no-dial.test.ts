import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import https from 'node:https'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Api, startRelay, startAgent, eventually, tempDir, type TapLike } from '../helpers/cluster.js'
import { databaseFor } from '../helpers/postgres.js'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import type { RelaygateError } from '../../protocol/errors.js'
import type { RelaygateAgent } from '../../agent/agent.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const bin = join(root, 'dist', 'cli', 'main.js')
const preload = pathToFileURL(join(root, 'test', 'helpers', 'no-dial-preload.mjs')).href

interface Watched {
  proc: ChildProcess
  log: string
  readonly stderr: string
  closed: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  exited: boolean
}

/** Runs `node --import <no-dial preload> ...args`, recording dials to a log file. */
function spawnWatched (t: TapLike, dir: string, args: string[]): Watched {
  const log = join(dir, 'dials.jsonl')
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RELAYGATE_')) env[k] = v
  if (env.NODE_OPTIONS?.includes('@tapjs') === true) delete env.NODE_OPTIONS
  env.NO_DIAL_LOG = log
  const proc = spawn(process.execPath, ['--import', preload, ...args], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const watched: Watched = {
    proc,
    log,
    get stderr () { return stderr },
    exited: false,
    closed: new Promise(resolve => proc.once('close', (code, signal) => {
      watched.exited = true
      resolve({ code, signal })
    }))
  }
  t.teardown(async () => {
    if (!watched.exited) {
      proc.kill('SIGKILL')
      await watched.closed
    }
  })
  return watched
}

function dials (log: string): Array<{ kind: string, args: unknown, stack: string[] }> {
  if (!existsSync(log)) return []
  return readFileSync(log, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l))
}

function loadedIn (log: string): number[] {
  return existsSync(`${log}.loaded`) ? readFileSync(`${log}.loaded`, 'utf8').split('\n').filter(l => l !== '').map(Number) : []
}

t.test('control: the preload records a dial', async t => {
  const dir = tempDir(t)
  let connections = 0
  const listener = net.createServer(socket => { connections++; socket.end() })
  t.teardown(() => new Promise(resolve => listener.close(resolve)))
  await new Promise<void>(resolve => listener.listen(0, '127.0.0.1', resolve))
  const { port } = listener.address() as net.AddressInfo
  const script = join(dir, 'dial.mjs')
  writeFileSync(script, [
    "import net from 'node:net'",
    `const socket = net.connect(${port}, '127.0.0.1')`,
    "socket.on('connect', () => socket.end())",
    "socket.on('error', err => { console.error(err); process.exit(1) })",
    "socket.on('close', () => process.exit(0))"
  ].join('\n'))
  const child = spawnWatched(t, dir, [script])
  t.same(await child.closed, { code: 0, signal: null }, `the dialing script ran (${child.stderr})`)
  t.equal(connections, 1, 'and its connection arrived')
  t.same(loadedIn(child.log), [child.proc.pid], 'the preload was loaded in the child')
  const kinds = dials(child.log).map(d => d.kind)
  t.ok(kinds.includes('net.client.socket'), 'the diagnostics channel saw the client socket')
  t.ok(kinds.includes('net.Socket.connect'), 'the connect wrapper saw the dial')
})

t.test('the server never opens an outbound connection', { timeout: 90_000 }, async t => {
  if (!existsSync(bin)) {
    t.fail(`${bin} is missing: run \`npm run build\` first`)
    return
  }
  const dir = tempDir(t)
  const readyFile = join(dir, 'server.json')
  const server = spawnWatched(t, dir, [bin, 'server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', '0', '--ready-file', readyFile, '--log-level', 'warn'])
  const info = await eventually(() => {
    if (server.exited) throw new Error(`server exited early: ${server.stderr}`)
    return existsSync(readyFile) ? JSON.parse(readFileSync(readyFile, 'utf8')) : null
  }, 30_000)
  t.same(loadedIn(server.log), [server.proc.pid], 'the preload is active in the server process')
  const api = new Api(info.httpUrl, readFileSync(info.adminTokenFile, 'utf8').trim())

  // Relays dial in over HTTP and over HTTPS (pinning the server's certificate).
  const a = await api.ok('POST', '/api/relays', { name: 'site-a' })
  const b = await api.ok('POST', '/api/relays', { name: 'site-b' })
  const relayA = await startRelay(t, info.httpUrl, a.token)
  const relayB = await startRelay(t, info.httpsUrl, b.token, { serverFingerprint: info.fingerprint, tlsPort: -1 })
  t.ok(relayA.linked && relayB.linked, 'both relays linked')

  // Agents dial the relays; the server hears of them only through the links.
  const endpoints: any[] = []
  for (const name of ['box-1', 'box-2', 'box-3']) endpoints.push(await api.ok('POST', '/api/endpoints', { name, tunnelTarget: 'http://127.0.0.1:2375' }))
  const agents: RelaygateAgent[] = [
    startAgent(t, endpoints[0].joinToken, { relays: [relayA.wssUrl!] }),
    startAgent(t, endpoints[1].joinToken, { relays: [relayA.wsUrl!] }),
    startAgent(t, endpoints[2].joinToken, { relays: [relayB.wsUrl!] })
  ]
  await Promise.all(agents.map(agent => agent.whenOnline()))
  const list = await api.ok('GET', '/api/endpoints')
  t.equal(list.length, 3)
  t.ok(list.every((e: any) => e.status === 'online'), 'all online')
  t.equal((await api.ok('GET', `/api/endpoints/${endpoints[2].id}`)).relayId, b.id)
  t.equal((await api.ok('GET', '/api/relays')).filter((r: any) => r.connected).length, 2)
  const health = await new Promise<number>((resolve, reject) => {
    https.get(`${info.httpsUrl as string}/healthz`, { rejectUnauthorized: false }, res => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject)
  })
  t.equal(health, 200, 'HTTPS answers too')

  // A settings change travels server -> relays -> agents.
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 1, tunnelIdleTimeoutSeconds: 60 })
  await eventually(() => agents.every(agent => agent.intervalSeconds === 1), 20_000)
  t.pass('every agent checks in at the new interval')

  // Deleting an endpoint kicks its agent through its relay.
  const fatal = new Promise<RelaygateError>(resolve => agents[1].once('fatal', resolve))
  t.equal((await api.request('DELETE', `/api/endpoints/${endpoints[1].id}`)).status, 204)
  t.equal((await fatal).code, 'RG_ERR_ENDPOINT_DELETED')

  // Revoking a relay drops its link (and its agents go offline).
  t.equal((await api.request('DELETE', `/api/relays/${b.id}`)).status, 204)
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${endpoints[2].id}`)).status === 'offline')
  await eventually(() => !relayB.linked)

  // A relay that drops its link and comes back: the server only accepts.
  await relayA.destroy()
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${endpoints[0].id}`)).status === 'offline')
  await agents[0].close()
  const again = await startRelay(t, info.httpUrl, a.token)
  const agent = startAgent(t, endpoints[0].joinToken, { relays: [again.wsUrl!], edgeId: agents[0].edgeId })
  await agent.whenOnline()
  t.equal((await api.ok('GET', `/api/endpoints/${endpoints[0].id}`)).status, 'online', 'back online through the new relay link')

  server.proc.kill('SIGTERM')
  t.same(await server.closed, { code: 0, signal: null }, `the server stopped cleanly (${server.stderr})`)
  const seen = dials(server.log)
  t.same(seen, [], 'no outbound connection, socket, UDP socket or name lookup in the server process')
})

/** The port a recorded dial went to (net.Socket#connect(port, host), ({port, host}), or tls.connect({port})). */
function dialPort (args: unknown): number | undefined {
  const flat: unknown[] = []
  const walk = (v: unknown): void => { if (Array.isArray(v)) v.forEach(walk); else flat.push(v) }
  walk(args)
  for (const v of flat) {
    if (typeof v === 'number') return v
    if (typeof v === 'object' && v !== null && 'port' in v) return Number((v as { port: unknown }).port)
  }
  return undefined
}

t.test('in a cluster a replica dials only its database and its siblings\' peer URLs', { timeout: 120_000 }, async t => {
  if (!existsSync(bin)) {
    t.fail(`${bin} is missing: run \`npm run build\` first`)
    return
  }
  const dir = tempDir(t)
  const databaseUrl = await databaseFor(dir)
  const dbPort = Number(new URL(databaseUrl).port)
  const secretFile = join(dir, 'secret')
  writeFileSync(secretFile, randomBytes(32).toString('hex'))
  const replica = async (name: string): Promise<{ watched: Watched, info: any, api: Api }> => {
    const home = join(dir, name)
    const readyFile = join(dir, `${name}.json`)
    const { mkdirSync } = await import('node:fs')
    mkdirSync(home, { recursive: true })
    const watched = spawnWatched(t, home, [bin, 'server', '--data-dir', home, '--host', '127.0.0.1', '--http-port', '0', '--https-port', '0',
      '--database-url', databaseUrl, '--cluster-secret-file', secretFile, '--ready-file', readyFile, '--log-level', 'warn'])
    const info = await eventually(() => {
      if (watched.exited) throw new Error(`replica exited early: ${watched.stderr}`)
      return existsSync(readyFile) ? JSON.parse(readFileSync(readyFile, 'utf8')) : null
    }, 30_000)
    return { watched, info, api: new Api(info.httpUrl, readFileSync(info.adminTokenFile, 'utf8').trim()) }
  }
  const a = await replica('a')
  const b = await replica('b')
  const target = http.createServer((_req, res) => res.end('target'))
  await new Promise<void>(resolve => target.listen(0, '127.0.0.1', resolve))
  t.teardown(() => target.close())

  // A relay on B, an agent behind it; A reaches it through B (A dials B's peer URL, nothing else).
  const r = await a.api.ok('POST', '/api/relays', { name: 'site' })
  const relay = await startRelay(t, b.info.httpUrl, r.token)
  const ep = await a.api.ok('POST', '/api/endpoints', { name: 'box', tunnelTarget: `http://127.0.0.1:${(target.address() as net.AddressInfo).port}` })
  await startAgent(t, ep.joinToken, { relays: [relay.wsUrl!] }).whenOnline()
  const res = await a.api.request('GET', `/api/endpoints/${ep.id}/proxy/x`)
  t.equal(res.body, 'target', 'the request went A -> B -> relay -> agent')

  for (const w of [a, b]) {
    w.watched.proc.kill('SIGTERM')
    await w.watched.closed
  }
  const peerPort = (info: any): number => Number(new URL(info.peerUrl).port)
  const allowed = (self: any, sibling: any): Set<number> => new Set([dbPort, peerPort(sibling)])
  for (const [name, self, sibling] of [['A', a, b], ['B', b, a]] as const) {
    const seen = dials(self.watched.log)
    const ports = seen.filter(d => d.kind !== 'net.client.socket').map(d => dialPort(d.args))
    const stray = seen.filter(d => d.kind !== 'net.client.socket' && !allowed(self.info, sibling.info).has(dialPort(d.args) ?? -1))
    t.same(stray, [], `replica ${name} dialed only its database (${dbPort}) and its sibling's peer URL (${peerPort(sibling.info)})`)
    t.ok(ports.includes(dbPort), `replica ${name} did dial its database (the check sees dials)`)
  }
  t.ok(dials(a.watched.log).some(d => dialPort(d.args) === peerPort(b.info)), 'A dialed B\'s peer URL')
  t.notOk(dials(b.watched.log).some(d => dialPort(d.args) === Number(new URL(relay.wsUrl!).port)), 'B never dialed its relay')
})
