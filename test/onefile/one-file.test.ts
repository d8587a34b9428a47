import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Api, tempDir, eventually, type TapLike } from '../helpers/cluster.js'
import { readyFile, startCommand, type Child } from '../helpers/child.js'
import { UnitRunner } from '../helpers/unit.js'
import { uploadArtifact, flipByte } from '../helpers/artifacts.js'

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
  return startCommand(test, exe, args, bare, work)
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

t.test('one paste installs an agent from its site\'s relay: checked against the sha256 in the line, unit written, and it runs as the unit would', async t => {
  const dir = tempDir(t)
  const exeSha = execFileSync('sha256sum', [exe], { encoding: 'utf8' }).split(' ')[0]
  const server = startExe(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')])
  const s = await readyFile(server, join(dir, 'server.json'), 60_000)
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  // A server running as the one file offers itself to new machines.
  const own = await api.ok('GET', `/api/artifacts/relaygate-${process.platform}-${process.arch}`)
  t.equal(own.sha256, exeSha, 'the server published its own executable')
  const r = await api.ok('POST', '/api/relays', { name: 'install-site' })
  t.match(r.installCommand, new RegExp(`install/relaygate-${process.platform}-${process.arch}.* && \\./relaygate install relay --server`), 'a relay gets its one line too')
  const relay = startExe(t, ['relay', '--server', s.httpUrl, '--token', r.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'relay'), '--ready-file', join(dir, 'relay.json')])
  const rr = await readyFile(relay, join(dir, 'relay.json'), 60_000)
  const relayHttp = (rr.wsUrl as string).replace(/^ws/, 'http')

  // What the relay gives anyone, and what it does not.
  const script = await eventually(async () => { const res = await fetch(`${relayHttp}/install/agent.sh`); return res.status === 200 ? await res.text() : null }, 20_000, 100)
  t.match(script, /sha256sum -c/, 'agent.sh checks the download')
  const secret = await api.request('PUT', '/api/artifacts/site-secrets.tar', 'not for everyone', { 'content-type': 'application/octet-stream' })
  t.equal(secret.status, 201)
  t.equal((await fetch(`${relayHttp}/install/site-secrets.tar`)).status, 404, 'another artifact is not an installer')
  t.equal((await fetch(`${relayHttp}/artifacts/${secret.body.sha256 as string}`)).status, 401, 'and still needs a download token')

  const e = await api.ok('POST', '/api/endpoints', { name: 'pasted-box' })
  t.type(e.installCommand, 'string')
  t.ok((e.installCommand as string).includes(exeSha), 'the line carries the executable\'s sha256')
  t.ok((e.installCommand as string).includes(`${relayHttp}/install/`), 'and downloads from the site\'s relay')

  // A swapped binary (here: a line whose sha256 is not the served file's) installs nothing.
  const badRoot = join(dir, 'bad-root')
  const badLine = (e.installCommand as string).replace(exeSha, exeSha.slice(0, 63) + (exeSha[63] === '0' ? '1' : '0'))
  const bad = spawnSync('sh', ['-c', badLine], { cwd: tempDir(t), env: { PATH: '/usr/bin:/bin', RELAYGATE_ROOT: badRoot }, encoding: 'utf8' })
  t.not(bad.status, 0, 'a download that does not match stops the line')
  t.notOk(existsSync(join(badRoot, 'opt')), 'and nothing is installed')

  // The line as pasted, on a clean directory (no systemd here: files under RELAYGATE_ROOT).
  const root = join(dir, 'root')
  const pasted = spawnSync('sh', ['-c', e.installCommand as string], { cwd: tempDir(t), env: { PATH: '/usr/bin:/bin', RELAYGATE_ROOT: root }, encoding: 'utf8', timeout: 60_000 })
  t.equal(pasted.status, 0, `the line succeeds: ${pasted.stdout}${pasted.stderr}`)
  t.match(pasted.stdout, /systemd is not running here/, 'and says how to start it without systemd')
  const installed = join(root, 'opt/relaygate/bin/relaygate')
  t.equal(execFileSync('sha256sum', [installed], { encoding: 'utf8' }).split(' ')[0], exeSha, 'the executable installed is the one checked')
  const envFile = join(root, 'etc/relaygate/agent.env')
  t.equal(statSync(envFile).mode & 0o777, 0o600, 'the join token sits in a file only root reads')
  const env = Object.fromEntries(readFileSync(envFile, 'utf8').trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  t.equal(env.RELAYGATE_JOIN_TOKEN, e.joinToken)
  const unit = readFileSync(join(root, 'etc/systemd/system/relaygate-agent.service'), 'utf8')
  t.match(unit, /^EnvironmentFile=\/etc\/relaygate\/agent\.env$/m)
  t.match(unit, /^DynamicUser=yes$/m)
  t.match(unit, /^ExecStartPre=\/opt\/relaygate\/bin\/relaygate update-guard --data-dir \/var\/lib\/relaygate-agent$/m, 'before each start, the installed executable\'s guard')
  t.match(unit, /^ExecStart=\/var\/lib\/relaygate-agent\/bin\/relaygate agent /m, 'then the version the guard points at (self-update)')

  // Run it the way the unit would (no systemd here): guard, then ExecStart, with the env file's variables.
  const runner = new UnitRunner(t, root, 'etc/systemd/system/relaygate-agent.service', tempDir(t)).start()
  const online = await eventually(async () => {
    const ep = await api.ok('GET', `/api/endpoints/${e.id as string}`)
    return ep.status === 'online' ? ep : null
  }, 30_000, 100)
  t.match(runner.guardLines[0], /versions set up/, 'the guard set the versions dir up on the first start')
  t.equal(online.relayId, r.id, 'the installed agent came online through the relay it was installed from')

  // The relay's cached copy altered (a hostile relay, a bad disk): the same line installs nothing.
  const cached = join(dir, 'relay', 'cache', exeSha)
  t.ok(existsSync(cached), 'the relay served it from its cache')
  flipByte(cached, 5_000_000)
  const tamperedRoot = join(dir, 'tampered-root')
  const again = spawnSync('sh', ['-c', e.installCommand as string], { cwd: tempDir(t), env: { PATH: '/usr/bin:/bin', RELAYGATE_ROOT: tamperedRoot }, encoding: 'utf8', timeout: 60_000 })
  t.not(again.status, 0, 'a swapped executable in the relay\'s cache stops the line')
  t.match(again.stdout + again.stderr, /FAILED|did NOT match/, 'sha256sum says so')
  t.notOk(existsSync(join(tamperedRoot, 'opt')) || existsSync(join(tamperedRoot, 'etc')), 'and nothing is installed')
})

t.test('one paste installs a relay from the server, and it links as the unit would run it', async t => {
  const dir = tempDir(t)
  const server = startExe(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')])
  const s = await readyFile(server, join(dir, 'server.json'), 60_000)
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const script = await fetch(`${s.httpUrl}/install/relay.sh`)
  t.equal(script.status, 200, 'the server serves relay.sh to anyone')
  t.match(await script.text(), /install relay "\$@"/)
  const r = await api.ok('POST', '/api/relays', { name: 'pasted-site' })
  const root = join(dir, 'root')
  const pasted = spawnSync('sh', ['-c', r.installCommand as string], { cwd: tempDir(t), env: { PATH: '/usr/bin:/bin', RELAYGATE_ROOT: root }, encoding: 'utf8', timeout: 60_000 })
  t.equal(pasted.status, 0, `the line succeeds: ${pasted.stdout}${pasted.stderr}`)
  const envFile = join(root, 'etc/relaygate/relay.env')
  t.equal(statSync(envFile).mode & 0o777, 0o600)
  const env = Object.fromEntries(readFileSync(envFile, 'utf8').trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  t.same(env, { RELAYGATE_SERVER: s.httpUrl, RELAYGATE_TOKEN: r.token }, 'the server and the relay token, nothing else')
  const unit = readFileSync(join(root, 'etc/systemd/system/relaygate-relay.service'), 'utf8')
  t.match(unit, /^ExecStart=\/var\/lib\/relaygate-relay\/bin\/relaygate relay /m)
  // As the unit would run it, on free ports (a site's env file may set them too).
  new UnitRunner(t, root, 'etc/systemd/system/relaygate-relay.service', tempDir(t), { env: { RELAYGATE_HOST: '127.0.0.1', RELAYGATE_PORT: '0', RELAYGATE_TLS_PORT: 'off' } }).start()
  const linked = await eventually(async () => {
    const relay = await api.ok('GET', `/api/relays/${r.id as string}`)
    return relay.connected === true ? relay : null
  }, 30_000, 100)
  t.equal(linked.version, version, 'the installed relay linked, running the executable it was installed from')
})

t.test('the per-role bundles: relaygate-relay.mjs and relaygate-agent.mjs run their role on a host with Node, and only it', async t => {
  const dir = tempDir(t)
  const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8')
  for (const role of ['agent', 'relay']) t.match(sums, new RegExp(`^[0-9a-f]{64}  relaygate-${role}\\.mjs$`, 'm'), `relaygate-${role}.mjs is in SHA256SUMS`)
  const nodeBare = { ...bare, PATH: dirname(process.execPath) }
  const other = spawnSync(process.execPath, [join(out, 'relaygate-agent.mjs'), 'server'], { cwd: work, env: nodeBare, encoding: 'utf8' })
  t.equal(other.status, 2, 'the agent bundle has no server command')
  const server = startExe(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')])
  const s = await readyFile(server, join(dir, 'server.json'), 60_000)
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const r = await api.ok('POST', '/api/relays', { name: 'mjs-site' })
  const bundle = (role: string, args: string[]): Child =>
    startCommand(t, process.execPath, [join(out, `relaygate-${role}.mjs`), ...args], { ...nodeBare, RELAYGATE_NATIVE_DIR: join(dir, 'native') }, tempDir(t))
  const relay = bundle('relay', ['relay', '--server', s.httpUrl, '--token', r.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'relay'), '--ready-file', join(dir, 'relay.json')])
  await readyFile(relay, join(dir, 'relay.json'), 60_000)
  const e = await api.ok('POST', '/api/endpoints', { name: 'mjs-box' })
  const agent = bundle('agent', ['agent', '--join-token', e.joinToken, '--data-dir', join(dir, 'agent'), '--ready-file', join(dir, 'agent.json')])
  await readyFile(agent, join(dir, 'agent.json'), 60_000)
  const online = await eventually(async () => {
    const ep = await api.ok('GET', `/api/endpoints/${e.id as string}`)
    return ep.status === 'online' ? ep : null
  }, 30_000, 100)
  t.equal(online.relayId, r.id, 'online through the bundled relay (uWebSockets.js out of the bundle)')
  t.ok(existsSync(join(dir, 'native')), 'the relay wrote its native addon to RELAYGATE_NATIVE_DIR')
})

t.test('the linux-arm64 executable (run here under qemu-user): its version, a relay and an agent from it online through it; its server asks for PostgreSQL', async t => {
  const arm = join(out, 'relaygate-linux-arm64')
  const head = readFileSync(arm).subarray(0, 20)
  t.equal(head.readUInt16LE(18), 183, 'an ELF for AArch64 (e_machine 183)')
  t.match(readFileSync(join(out, 'SHA256SUMS'), 'utf8'), new RegExp(`^${execFileSync('sha256sum', [arm], { encoding: 'utf8' }).split(' ')[0]}  relaygate-linux-arm64$`, 'm'), 'in SHA256SUMS')
  // qemu-user runs the arm64 binary with Debian's arm64 C libraries (.ci/run installs both).
  const qemu = '/usr/bin/qemu-aarch64-static'
  const onArm = (args: string[]): string[] => ['-L', '/usr/aarch64-linux-gnu', arm, ...args]
  const v = spawnSync(qemu, onArm(['--version']), { cwd: work, env: bare, encoding: 'utf8', timeout: 60_000 })
  t.equal(v.stdout.trim(), version, `the same version: ${v.stderr}`)
  const dir = tempDir(t)
  const server = startExe(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')])
  const s = await readyFile(server, join(dir, 'server.json'), 60_000)
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const r = await api.ok('POST', '/api/relays', { name: 'arm-site' })
  const relay = startCommand(t, qemu, onArm(['relay', '--server', s.httpUrl, '--token', r.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'relay'), '--ready-file', join(dir, 'relay.json')]), bare, work)
  await readyFile(relay, join(dir, 'relay.json'), 120_000)
  // Given the arm64 executable too, the server offers a line per kind of machine.
  const upload = await uploadArtifact(api, 'relaygate-linux-arm64', readFileSync(arm))
  t.equal(upload.status, 201)
  const e = await eventually(async () => {
    const created = await api.ok('POST', '/api/endpoints', { name: `arm-box-${Date.now()}` })
    return created.installCommands?.['linux-arm64'] !== undefined ? created : null
  }, 20_000, 200)
  t.ok(e.installCommands['linux-arm64'].includes(execFileSync('sha256sum', [arm], { encoding: 'utf8' }).split(' ')[0]), 'the arm64 line carries the arm64 executable\'s sha256')
  t.equal(e.installCommands['linux-x64'], e.installCommand, 'the x64 line is the default one')
  const agent = startCommand(t, qemu, onArm(['agent', '--join-token', e.joinToken, '--data-dir', join(dir, 'agent'), '--ready-file', join(dir, 'agent.json')]), bare, work)
  await readyFile(agent, join(dir, 'agent.json'), 120_000)
  const online = await eventually(async () => {
    const ep = await api.ok('GET', `/api/endpoints/${e.id as string}`)
    return ep.status === 'online' && ep.agentVersion === version ? ep : null
  }, 60_000, 200)
  t.equal(online.relayId, r.id, 'the arm64 agent is online through the arm64 relay (uWebSockets.js for arm64 inside)')
  const armServer = spawnSync(qemu, onArm(['server', '--data-dir', join(dir, 'arm-server'), '--http-port', '0', '--https-port', 'off']), { cwd: work, env: bare, encoding: 'utf8', timeout: 60_000 })
  t.equal(armServer.status, 2, 'its server without a database URL is a configuration error')
  t.match(armServer.stderr, /no embedded SQLite.*--database-url.*\(RG_ERR_CONFIG\)/)
})
