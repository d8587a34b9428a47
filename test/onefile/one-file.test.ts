import t from 'tap'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Api, tempDir, eventually, type TapLike } from '../helpers/cluster.js'
import { readyFile, type Child, type Exit } from '../helpers/child.js'

// Issue 16: the one-file executable (npm run dist) runs every role on a host
// without Node: here with an empty PATH, an empty HOME and a working
// directory outside the repository, so nothing of this checkout is found.
const root = fileURLToPath(new URL('../../', import.meta.url))
const out = tempDir(t)
const version = '9.9.9-onefile'
execFileSync(process.execPath, [join(root, 'scripts', 'dist.mjs'), '--out', out, '--version', version], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], timeout: 180_000 })
const exe = join(out, `relaygate-${process.platform}-${process.arch}`)
const work = tempDir(t)
const bare = { PATH: '/nonexistent', HOME: work, RELAYGATE_LOG_LEVEL: 'warn' }

/** Starts the executable as a process with nothing but `bare` in its environment. */
function startExe (test: TapLike, args: string[]): Child {
  const proc = spawn(exe, args, { cwd: work, env: bare, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  proc.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const child: Child = {
    proc,
    get stdout () { return stdout },
    get stderr () { return stderr },
    exit: null,
    closed: new Promise<Exit>(resolve => proc.once('close', (code, signal) => { child.exit = { code, signal }; resolve(child.exit) }))
  }
  test.teardown(async () => { if (child.exit === null) { proc.kill('SIGKILL'); await child.closed } })
  return child
}

t.test('the build: one executable and its checksum', async t => {
  t.ok(existsSync(exe), exe)
  const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8')
  const hash = execFileSync('sha256sum', [exe], { encoding: 'utf8' }).split(' ')[0]
  t.match(sums, new RegExp(`^${hash}  relaygate-${process.platform}-${process.arch}$`, 'm'), 'SHA256SUMS names it with its sha256')
  const v = spawnSync(exe, ['--version'], { cwd: work, env: bare, encoding: 'utf8' })
  t.equal(v.status, 0)
  t.equal(v.stdout.trim(), version, 'the version stamped into the build')
  const bad = spawnSync(exe, ['agent', '--no-such-flag'], { cwd: work, env: bare, encoding: 'utf8' })
  t.equal(bad.status, 2, 'a bad flag is a usage error, as from npm')
})

t.test('server, relay and agent all from the executable: the agent comes online, the dashboard is served', async t => {
  const server = startExe(t, ['server', '--data-dir', join(work, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(work, 'server.json')])
  const s = await readyFile(server, join(work, 'server.json'), 60_000)
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const page = await fetch(`${s.httpUrl}/`)
  t.equal(page.status, 200, 'the dashboard page')
  t.match(await page.text(), /<html/i)
  const vendor = await fetch(`${s.httpUrl}/ui/vendor/preact.mjs`)
  t.equal(vendor.status, 200, 'and its vendor modules')

  const r = await api.ok('POST', '/api/relays', { name: 'one-file-site' })
  const relay = startExe(t, ['relay', '--server', s.httpUrl, '--token', r.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(work, 'relay'), '--ready-file', join(work, 'relay.json')])
  await readyFile(relay, join(work, 'relay.json'), 60_000)
  const e = await api.ok('POST', '/api/endpoints', { name: 'one-file-box' })
  const agent = startExe(t, ['agent', '--join-token', e.joinToken, '--data-dir', join(work, 'agent'), '--ready-file', join(work, 'agent.json')])
  await readyFile(agent, join(work, 'agent.json'), 60_000)
  const online = await eventually(async () => {
    const ep = await api.ok('GET', `/api/endpoints/${e.id as string}`)
    return ep.status === 'online' ? ep : null
  }, 30_000, 100)
  t.equal(online.relayId, r.id)
  const relays = await api.ok('GET', '/api/relays')
  t.equal(relays.find((x: { id: string }) => x.id === r.id)?.version, version, 'the relay reports the build\'s version')
  t.notOk(/error/i.test(server.stderr + relay.stderr + agent.stderr), `no errors logged: ${server.stderr}${relay.stderr}${agent.stderr}`)
})
