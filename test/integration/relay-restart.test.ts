import t from 'tap'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { start, readyFile, type Child } from '../helpers/child.js'
import { startServer, startAgent, tempDir, freePort, eventually, type TapLike } from '../helpers/cluster.js'

/**
 * A relay as systemd runs it: killed, restarted on its fixed port, started
 * twice by mistake, started before its address is up. The exit status tells
 * the unit what to do (README: 1 = restart later, 2 = fix the config).
 */

async function site (t: TapLike): Promise<{ serverUrl: string, relayToken: string, api: Awaited<ReturnType<typeof startServer>>['api'] }> {
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'field' })
  return { serverUrl: server.httpUrl, relayToken: created.token, api }
}

function relayArgs (serverUrl: string, token: string, dataDir: string, host: string, port: number, extra: string[] = []): string[] {
  return ['relay', '--server', serverUrl, '--token', token, '--host', host, '--port', String(port), '--tls-port', 'off', '--data-dir', dataDir, ...extra]
}

/** A relay on 127.0.0.1:`port` with its data in `dir/data`, once linked (its ready file, `dir/<run>.json`, read: one per run). */
async function linkedRelay (t: TapLike, site: { serverUrl: string, relayToken: string }, dir: string, data: string, run: string, port: number, timeoutMs?: number): Promise<{ relay: Child, ready: any }> {
  const relay = start(t, relayArgs(site.serverUrl, site.relayToken, join(dir, data), '127.0.0.1', port, ['--ready-file', join(dir, `${run}.json`)]))
  return { relay, ready: await readyFile(relay, join(dir, `${run}.json`), timeoutMs) }
}

async function exited (child: Child, timeoutMs: number): Promise<number | null> {
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), timeoutMs)
  const exit = await child.closed
  clearTimeout(timer)
  return exit.code
}

t.test('a relay SIGKILLed with agents online restarts on its fixed port at once, and the agents come back', async t => {
  const s = await site(t)
  const { api } = s
  const dir = tempDir(t)
  const port = await freePort()
  const { relay: first } = await linkedRelay(t, s, dir, 'relay', 'r1', port)
  const endpoints = []
  for (let i = 0; i < 8; i++) {
    const ep = await api.ok('POST', '/api/endpoints', { name: `a${i}` })
    endpoints.push(ep)
    startAgent(t, ep.joinToken, { relays: [`ws://127.0.0.1:${port}`] })
  }
  const online = async (): Promise<number> => (await api.ok('GET', '/api/endpoints')).filter((e: any) => e.status === 'online').length
  await eventually(async () => (await online()) === endpoints.length || undefined, 15_000)

  first.proc.kill('SIGKILL')
  await first.closed
  const { relay: second, ready } = await linkedRelay(t, s, dir, 'relay', 'r2', port, 10_000)
  t.equal(ready.wsUrl, `ws://127.0.0.1:${port}`, 'listening on the same port')
  t.equal(second.exit, null, 'still running')
  await eventually(async () => (await online()) === endpoints.length || undefined, 30_000)
  t.pass('every agent is online again through the restarted relay')
})

t.test('a second relay on a taken port exits 2 with one line naming it, and the first keeps every agent', async t => {
  const s = await site(t)
  const dir = tempDir(t)
  const port = await freePort()
  const { relay: first } = await linkedRelay(t, s, dir, 'one', 'one', port)
  const second = start(t, relayArgs(s.serverUrl, s.relayToken, join(dir, 'two'), '127.0.0.1', port))
  t.equal(await exited(second, 20_000), 2, 'exit status 2: a configuration to fix, not a crash to restart')
  const lines = second.stderr.trim().split('\n').filter(l => l.startsWith('relaygate:'))
  t.equal(lines.length, 1, 'one line')
  t.match(lines[0], `127.0.0.1:${port}`, 'names the address')
  t.match(lines[0], 'RG_ERR_PORT_IN_USE')
  t.equal(first.exit, null, 'the first relay still runs')
  const health = await fetch(`http://127.0.0.1:${port}/healthz`)
  t.equal(health.status, 200, 'and answers on the port')
})

t.test('an address that is not up yet is tried again until --listen-retry, then exit 1 (a supervisor restarts later)', async t => {
  const { serverUrl, relayToken } = await site(t)
  const dir = tempDir(t)
  // 192.0.2.0/24 is TEST-NET-1: on no interface here, so the listen fails with EADDRNOTAVAIL.
  const relay = start(t, relayArgs(serverUrl, relayToken, join(dir, 'relay'), '192.0.2.55', await freePort(), ['--listen-retry', '2']))
  t.equal(await exited(relay, 20_000), 1, 'exit 1, not 2')
  t.match(relay.stdout, /cannot listen yet; trying again/, 'the retries are logged')
  t.match(relay.stderr, /relaygate: error: cannot listen on 192\.0\.2\.55:\d+ \(EADDRNOTAVAIL\); gave up after 2 s \(RG_ERR_LISTEN\)/)
})

t.test('an address that comes up while the relay waits: it listens then (an interface up late at boot)', async t => {
  // A /32 on the loopback interface stands for the late interface; the test needs CAP_NET_ADMIN (CI runs as root).
  const address = '192.0.2.77'
  const ip = (...args: string[]): void => { execFileSync('ip', args, { stdio: 'ignore' }) }
  try { ip('addr', 'del', `${address}/32`, 'dev', 'lo') } catch {}
  t.teardown(() => { try { ip('addr', 'del', `${address}/32`, 'dev', 'lo') } catch {} })
  const { serverUrl, relayToken } = await site(t)
  const dir = tempDir(t)
  const port = await freePort()
  const relay = start(t, relayArgs(serverUrl, relayToken, join(dir, 'relay'), address, port, ['--listen-retry', '30', '--ready-file', join(dir, 'r.json')]))
  await eventually(() => /cannot listen yet/.test(relay.stdout) || undefined, 10_000)
  ip('addr', 'add', `${address}/32`, 'dev', 'lo')
  const ready = await readyFile(relay, join(dir, 'r.json'), 20_000)
  t.equal(ready.wsUrl, `ws://${address}:${port}`)
})

t.test('/healthz answers 503 while the relay has no server link (200 once linked: see the taken-port test)', async t => {
  const dir = tempDir(t)
  const deadServer = await freePort()
  const port = await freePort()
  const relay = start(t, relayArgs(`http://127.0.0.1:${deadServer}`, 'rgr_not_linked_yet', join(dir, 'relay'), '127.0.0.1', port))
  const res = await eventually(async () => await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined), 10_000) as Response
  t.equal(res.status, 503)
  const body = await res.json() as any
  t.equal(body.linked, false)
  t.equal(body.ok, false)
  t.equal(relay.exit, null)
})

t.test('giving up after --give-up-after exits 1 (try again later), not 3 (refused for good)', async t => {
  const { api } = await site(t)
  const dir = tempDir(t)
  const nobody = await freePort()
  const relay = start(t, relayArgs(`http://127.0.0.1:${nobody}`, 'rgr_never_linked', join(dir, 'relay'), '127.0.0.1', 0, ['--give-up-after', '1']))
  t.equal(await exited(relay, 20_000), 1, 'the relay')
  t.match(relay.stderr, /RG_ERR_UPSTREAM_UNAVAILABLE/)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'gives-up' })
  const agent = start(t, ['agent', '--join-token', ep.joinToken, '--data-dir', join(dir, 'agent'), '--relay', `ws://127.0.0.1:${nobody}`, '--give-up-after', '1'])
  t.equal(await exited(agent, 20_000), 1, 'the agent')
  t.match(agent.stderr, /RG_ERR_NO_RELAY/)
})

t.test('a second demo moves its relay to a free port instead of sharing a taken one', async t => {
  const dir = tempDir(t)
  const taken = await freePort()
  const { relay } = await linkedRelay(t, await site(t), dir, 'relay', 'relay', taken)
  const demo = start(t, ['demo', '--agents', '1', '--http-port', '0', '--https-port', 'off', '--relay-port', String(taken), '--relay-tls-port', '0', '--data-dir', join(dir, 'demo'), '--ready-file', join(dir, 'demo.json')])
  const ready = await readyFile(demo, join(dir, 'demo.json'), 45_000)
  t.not(ready.wsUrl, `ws://127.0.0.1:${taken}`, 'the demo relay is elsewhere')
  t.match(demo.stdout + demo.stderr, new RegExp(`relay port ${taken} is taken; using a free port instead`))
  t.equal(relay.exit, null, 'the first relay still runs')
})
