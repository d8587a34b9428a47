import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import tls from 'node:tls'
import { isAbsolute, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Api, tempDir, eventually, type TapLike } from '../helpers/cluster.js'
import { childEnv, start, run as runChild, readyFile as readyFileOf, type Child, type Env, type Exit } from '../helpers/child.js'
import { encodeJoinToken } from '../../protocol/token.js'
import { newSecret } from '../../protocol/auth.js'
import { Command } from 'commander'
import { opt, envBooleans } from '../../cli/options.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const bin = join(root, 'dist', 'cli', 'main.js')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }

/** Maps with at most `limit` calls in flight (the machine may have 2 cores). */
async function pool<A, R> (items: A[], limit: number, fn: (item: A) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/** Runs `relaygate ...args` to completion. */
async function run (t: TapLike, args: string[], env: Env = {}, timeoutMs = 60_000): Promise<Exit & { stdout: string, stderr: string }> {
  return await runChild(t, args, env, root, timeoutMs)
}

async function readyFile (child: Child, file: string, timeoutMs = 30_000): Promise<any> {
  return await readyFileOf(child, file, timeoutMs)
}

/** Waits for the child to exit, at most `timeoutMs`. */
async function exitWithin (child: Child, timeoutMs = 10_000): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<Exit>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`process did not exit within ${timeoutMs} ms; stderr: ${child.stderr}`)), timeoutMs)
  })
  try {
    return await Promise.race([child.closed, timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function poll<T> (check: () => Promise<T> | T, timeoutMs = 20_000): Promise<T> {
  return await eventually(check, timeoutMs, 100)
}

const lines = (text: string): string[] => text.split('\n').filter(l => l.trim() !== '')

if (!existsSync(bin)) {
  t.fail(`${bin} is missing: run \`npm run build\` before the CLI tests`)
} else {
  t.test('--version and --help', async t => {
    const [version, help, server, relay, agent, demo] = await pool([
      ['--version'], ['--help'], ['server', '--help'], ['relay', '--help'], ['agent', '--help'], ['demo', '--help']
    ], 4, args => run(t, args))
    t.equal(version.code, 0)
    t.equal(version.stdout.trim(), pkg.version, '--version prints the package version')
    t.equal(help.code, 0)
    for (const cmd of ['server', 'relay', 'agent', 'demo']) t.match(help.stdout, new RegExp(`\\b${cmd}\\b`), `--help lists ${cmd}`)
    t.match(help.stdout, /--version/)
    t.match(help.stdout, /RELAYGATE_/, '--help mentions the environment variables')
    const flags: Array<[string, typeof server, string[]]> = [
      ['server', server, ['--data-dir', '--host', '--http-port', '--https-port', '--tls-cert', '--tls-key', '--public-url', '--ready-file']],
      ['relay', relay, ['--server', '--token', '--data-dir', '--port', '--tls-port', '--tls-cert', '--tls-key', '--public-url', '--cache-max-bytes', '--ready-file']],
      ['agent', agent, ['--join-token', '--data-dir', '--edge-id', '--relay', '--tunnel-target', '--allow-exec', '--ready-file']],
      ['demo', demo, ['--agents', '--data-dir', '--http-port', '--https-port', '--relay-port', '--relay-tls-port', '--ready-file']]
    ]
    for (const [name, res, want] of flags) {
      t.equal(res.code, 0, `${name} --help exits 0`)
      t.equal(res.stderr, '', `${name} --help writes nothing to stderr`)
      for (const flag of want) t.ok(res.stdout.includes(flag), `${name} --help mentions ${flag}`)
    }
    t.ok(server.stdout.includes('RELAYGATE_HTTP_PORT'), 'per-flag environment variables are shown')
  })

  t.test('a bad or missing flag exits non-zero with one line naming it', async t => {
    const dir = tempDir(t)
    const noRelayToken = encodeJoinToken({ serverUrl: 'http://127.0.0.1:1', relays: [], endpointId: 'e_x', secret: newSecret(32) })
    const withRelayToken = encodeJoinToken({ serverUrl: 'http://127.0.0.1:1', relays: [{ url: 'ws://127.0.0.1:1', fingerprints: [] }], endpointId: 'e_x', secret: newSecret(32) })
    const cases: Array<{ args: string[], env?: Env, flag: string }> = [
      { args: ['server', '--http-port', 'abc'], flag: '--http-port' },
      { args: ['server', '--https-port', '70000'], flag: '--https-port' },
      { args: ['server', '--bogus'], flag: '--bogus' },
      { args: ['server', '--data-dir', join(dir, 's'), '--tls-cert', join(dir, 'cert.pem')], flag: '--tls-cert' },
      { args: ['server', '--data-dir', join(dir, 's'), '--public-url', 'ftp://x'], flag: '--public-url' },
      { args: ['server'], env: { RELAYGATE_HTTP_PORT: 'abc' }, flag: 'RELAYGATE_HTTP_PORT' },
      { args: ['relay'], flag: '--server' },
      { args: ['relay', '--server', 'http://127.0.0.1:1'], flag: '--token' },
      { args: ['relay', '--server', 'notaurl', '--token', 'x12345678'], flag: '--server' },
      { args: ['relay', '--server', 'http://127.0.0.1:1', '--token', 'short'], flag: '--token is not a relay token' },
      { args: ['relay', '--server', 'http://127.0.0.1:1', '--token', 'x12345678', '--port', '-1'], flag: '--port' },
      { args: ['relay', '--server', 'http://127.0.0.1:1', '--token', 'x12345678', '--cache-max-bytes', 'lots'], flag: '--cache-max-bytes' },
      { args: ['agent'], flag: '--join-token' },
      { args: ['agent', '--join-token', 'garbage'], flag: '--join-token' },
      { args: ['agent'], env: { RELAYGATE_JOIN_TOKEN: 'rg1.garbage' }, flag: '--join-token' },
      { args: ['agent', '--join-token', noRelayToken, '--data-dir', join(dir, 'a1')], flag: '--relay' },
      { args: ['agent', '--join-token', withRelayToken, '--data-dir', join(dir, 'a2'), '--edge-id', 'not-a-uuid'], flag: '--edge-id' },
      { args: ['agent', '--join-token', withRelayToken, '--data-dir', join(dir, 'a3'), '--relay', 'http://127.0.0.1:1'], flag: '--relay' },
      { args: ['agent', '--join-token', withRelayToken, '--data-dir', join(dir, 'a4'), '--tunnel-target', 'ftp://x'], flag: '--tunnel-target' },
      { args: ['agent', '--join-token', withRelayToken, '--data-dir', join(dir, 'a5')], env: { RELAYGATE_ALLOW_EXEC: 'maybe' }, flag: 'RELAYGATE_ALLOW_EXEC' },
      { args: ['demo', '--agents', '0'], flag: '--agents' },
      { args: ['bogus-command'], flag: 'bogus-command' },
      { args: ['--log-level', 'loud', 'server'], flag: '--log-level' },
      { args: ['server'], env: { RELAYGATE_LOG_LEVEL: 'loud' }, flag: 'RELAYGATE_LOG_LEVEL' },
      // A variable meant for the relay's --name does not name an endpoint: endpoint create reads RELAYGATE_ENDPOINT_NAME.
      { args: ['endpoint', 'create', '--server', 'http://127.0.0.1:1'], env: { RELAYGATE_NAME: 'site-relay', RELAYGATE_ADMIN_TOKEN: 'x' }, flag: '--name' }
    ]
    const results = await pool(cases, 4, c => run(t, c.args, c.env))
    cases.forEach((c, i) => {
      const res = results[i]
      const name = `${c.env === undefined ? '' : Object.entries(c.env).map(([k, v]) => `${k}=${v} `).join('')}${c.args.join(' ').slice(0, 80)}`
      t.not(res.code, 0, `${name}: non-zero exit`)
      t.equal(res.signal, null, `${name}: not killed`)
      t.equal(res.stdout, '', `${name}: nothing on stdout`)
      t.equal(lines(res.stderr).length, 1, `${name}: exactly one line on stderr (${JSON.stringify(res.stderr)})`)
      t.ok(res.stderr.includes(c.flag), `${name}: stderr names ${c.flag} (${JSON.stringify(res.stderr)})`)
    })
  })

  t.test('RELAYGATE_ALLOW_EXEC=false does not allow exec (boolean flags read their variable)', async t => {
    const parse = (value: string | undefined, argv: string[] = []): unknown => {
      const saved = process.env.RELAYGATE_ALLOW_EXEC
      if (value === undefined) delete process.env.RELAYGATE_ALLOW_EXEC
      else process.env.RELAYGATE_ALLOW_EXEC = value
      try {
        const program = new Command('relaygate').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} })
        let seen: unknown
        program.command('agent').addOption(opt('--allow-exec', 'allow')).action((o: Record<string, unknown>) => { seen = o.allowExec })
        program.hook('preAction', (_p, command) => envBooleans(command))
        program.parse(['agent', ...argv], { from: 'user' })
        return seen
      } finally {
        if (saved === undefined) delete process.env.RELAYGATE_ALLOW_EXEC
        else process.env.RELAYGATE_ALLOW_EXEC = saved
      }
    }
    for (const off of ['false', '0', 'no', 'off', 'FALSE', '']) t.equal(parse(off), false, `RELAYGATE_ALLOW_EXEC=${JSON.stringify(off)}`)
    for (const on of ['true', '1', 'yes', 'on', 'True']) t.equal(parse(on), true, `RELAYGATE_ALLOW_EXEC=${JSON.stringify(on)}`)
    t.equal(parse(undefined), undefined, 'unset: off')
    t.equal(parse('false', ['--allow-exec']), true, 'the flag wins over the variable')
    t.throws(() => parse('maybe'), { code: 'relaygate.invalidEnv', exitCode: 2 })
  })

  t.test('environment variables configure the server; flags win over them', async t => {
    const dir = tempDir(t)
    const dataDir = join(dir, 'server')
    const ready = join(dir, 'ready.json')
    const adminToken = 'env-admin-token-' + 'b'.repeat(24)
    const server = start(t, ['server', '--https-port', 'off'], {
      RELAYGATE_DATA_DIR: dataDir,
      RELAYGATE_HOST: '127.0.0.1',
      RELAYGATE_HTTP_PORT: '0',
      RELAYGATE_HTTPS_PORT: 'abc', // ignored: the flag is given
      RELAYGATE_READY_FILE: ready,
      RELAYGATE_ADMIN_TOKEN: adminToken,
      RELAYGATE_LOG_LEVEL: 'warn'
    })
    const info = await readyFile(server, ready)
    t.match(info.httpUrl, /^http:\/\/127\.0\.0\.1:\d+$/)
    t.equal(info.httpsUrl, null, 'HTTPS is off')
    t.equal(info.adminTokenFile, join(dataDir, 'admin-token'))
    t.equal(readFileSync(info.adminTokenFile, 'utf8').trim(), adminToken, 'RELAYGATE_ADMIN_TOKEN is the admin token')
    t.not(info.httpUrl.endsWith(':8080'), true, 'port 0 picked a free port')
    const api = new Api(info.httpUrl, adminToken)
    t.match(await api.ok('GET', '/api/settings'), { checkinIntervalSeconds: 5 })
    t.equal(server.stdout, '', 'RELAYGATE_LOG_LEVEL=warn: no info lines')
    server.proc.kill('SIGTERM')
    t.same(await exitWithin(server), { code: 0, signal: null }, 'SIGTERM: exit 0')
  })

  t.test('server, relay and agents as processes', async t => {
    const dir = tempDir(t)
    const serverDir = join(dir, 'server')
    const server = start(t, ['server', '--data-dir', serverDir, '--host', '127.0.0.1', '--http-port', '0', '--https-port', '0', '--ready-file', join(dir, 'server.json')])
    const s = await readyFile(server, join(dir, 'server.json'))
    for (const key of ['httpUrl', 'httpsUrl', 'adminTokenFile']) t.ok(key in s, `server ready file has ${key}`)
    t.match(s.httpUrl, /^http:\/\/127\.0\.0\.1:\d+$/)
    t.match(s.httpsUrl, /^https:\/\/127\.0\.0\.1:\d+$/)
    t.ok(isAbsolute(s.adminTokenFile), 'adminTokenFile is absolute')
    t.equal(s.adminTokenFile, join(serverDir, 'admin-token'))
    t.equal(statSync(s.adminTokenFile).mode & 0o777, 0o600)
    const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
    t.equal((await fetch(`${s.httpUrl}/healthz`)).status, 200)

    const r1 = await api.ok('POST', '/api/relays', { name: 'site-a' })
    const relayArgs = (token: string, name: string): string[] => ['relay', '--server', s.httpUrl, '--token', token, '--host', '127.0.0.1', '--port', '0', '--tls-port', '0', '--data-dir', join(dir, name), '--ready-file', join(dir, `${name}.json`)]
    const relay = start(t, relayArgs(r1.token, 'relay-a'))
    const r = await readyFile(relay, join(dir, 'relay-a.json'))
    for (const key of ['wsUrl', 'wssUrl', 'fingerprint']) t.ok(key in r, `relay ready file has ${key}`)
    t.match(r.wsUrl, /^ws:\/\/127\.0\.0\.1:\d+$/)
    t.match(r.wssUrl, /^wss:\/\/127\.0\.0\.1:\d+$/)
    t.match(r.fingerprint, /^[0-9a-f]{64}$/)
    const listed = (await api.ok('GET', '/api/relays')).find((x: any) => x.id === r1.id)
    t.match(listed, { connected: true, fingerprint: r.fingerprint, wsUrl: r.wsUrl, wssUrl: r.wssUrl })

    // Endpoints are created while only relay A is linked, so their tokens name it alone.
    const e1 = await api.ok('POST', '/api/endpoints', { name: 'box-1' })
    const e2 = await api.ok('POST', '/api/endpoints', { name: 'box-2' })
    const agentArgs = (joinToken: string, name: string): string[] => ['agent', '--join-token', joinToken, '--data-dir', join(dir, name), '--ready-file', join(dir, `${name}.json`)]
    const a1 = start(t, agentArgs(e1.joinToken, 'agent-1'))
    const a2 = start(t, agentArgs(e2.joinToken, 'agent-2'))
    // A second relay, to be revoked.
    const r2 = await api.ok('POST', '/api/relays', { name: 'site-b' })
    const relayB = start(t, relayArgs(r2.token, 'relay-b'))

    const [i1, i2] = await Promise.all([readyFile(a1, join(dir, 'agent-1.json')), readyFile(a2, join(dir, 'agent-2.json'))])
    for (const [info, ep] of [[i1, e1], [i2, e2]]) {
      for (const key of ['edgeId', 'endpointId', 'relay']) t.ok(key in info, `agent ready file has ${key}`)
      t.match(info.edgeId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
      t.equal(info.endpointId, ep.id)
      t.ok([r.wsUrl, r.wssUrl].includes(info.relay), `agent connected to relay A (${info.relay})`)
    }
    const endpoints = await poll(async () => {
      const list = await api.ok('GET', '/api/endpoints')
      return list.every((e: any) => e.status === 'online') ? list : null
    })
    t.equal(endpoints.length, 2)
    for (const e of endpoints) {
      t.equal(e.relayId, r1.id)
      t.equal(e.edgeId, e.id === e1.id ? i1.edgeId : i2.edgeId)
    }
    await readyFile(relayB, join(dir, 'relay-b.json'))

    // SIGTERM: a graceful exit 0, and the endpoint goes offline.
    a1.proc.kill('SIGTERM')
    t.same(await exitWithin(a1), { code: 0, signal: null }, 'agent: SIGTERM exits 0')
    await poll(async () => (await api.ok('GET', `/api/endpoints/${e1.id}`)).status === 'offline')

    // Deleting its endpoint stops an agent for good: exit 3, one line with the code.
    t.equal((await api.request('DELETE', `/api/endpoints/${e2.id}`)).status, 204)
    const deleted = await exitWithin(a2, 15_000)
    t.same(deleted, { code: 3, signal: null }, 'agent of a deleted endpoint exits 3')
    t.equal(lines(a2.stderr).length, 1, `one stderr line (${JSON.stringify(a2.stderr)})`)
    t.ok(a2.stderr.includes('RG_ERR_ENDPOINT_DELETED'), 'names RG_ERR_ENDPOINT_DELETED')

    // Revoking its token stops a relay for good: exit 3.
    t.equal((await api.request('DELETE', `/api/relays/${r2.id}`)).status, 204)
    const revoked = await exitWithin(relayB, 15_000)
    t.same(revoked, { code: 3, signal: null }, 'revoked relay exits 3')
    t.equal(lines(relayB.stderr).length, 1, `one stderr line (${JSON.stringify(relayB.stderr)})`)
    t.ok(relayB.stderr.includes('RG_ERR_RELAY_REVOKED'), 'names RG_ERR_RELAY_REVOKED')

    relay.proc.kill('SIGTERM')
    t.same(await exitWithin(relay), { code: 0, signal: null }, 'relay: SIGTERM exits 0')
    await poll(async () => (await api.ok('GET', `/api/relays/${r1.id}`)).connected === false)
    server.proc.kill('SIGTERM')
    t.same(await exitWithin(server), { code: 0, signal: null }, 'server: SIGTERM exits 0')
    for (const [name, child] of [['server', server], ['relay', relay], ['agent', a1]] as const) {
      t.equal(child.stderr, '', `${name} wrote nothing to stderr`)
    }
  })

  t.test('demo: the printed curl line lists the online agents; SIGINT exits 0', async t => {
    const dir = tempDir(t)
    const ready = join(dir, 'demo.json')
    const demo = start(t, ['demo', '--agents', '3', '--http-port', '0', '--https-port', 'off', '--relay-port', '0', '--relay-tls-port', '0', '--data-dir', join(dir, 'demo'), '--ready-file', ready])
    const info = await readyFile(demo, ready, 45_000)
    t.match(info, { httpUrl: /^http:\/\/127\.0\.0\.1:\d+$/, adminTokenFile: String })
    t.equal(info.endpoints.length, 3)
    const curlLine = await poll(() => lines(demo.stdout).map(l => l.trim()).find(l => l.startsWith('curl ')) ?? '')
    t.ok(curlLine.includes(info.httpUrl), 'the curl line targets the demo server')
    let list: any
    if (spawnSync('which', ['curl']).status === 0) {
      const res = spawnSync('sh', ['-c', curlLine], { encoding: 'utf8', timeout: 15_000 })
      t.equal(res.status, 0, `curl exits 0 (${res.stderr})`)
      list = JSON.parse(res.stdout)
    } else {
      t.comment('curl is not installed: making the same request with fetch')
      const token = readFileSync(info.adminTokenFile, 'utf8').trim()
      list = await new Api(info.httpUrl, token).ok('GET', '/api/endpoints')
    }
    t.equal(list.length, 3, 'three endpoints')
    t.ok(list.every((e: any) => e.status === 'online'), 'all online')
    t.same(list.map((e: any) => e.id).sort(), [...info.endpoints].sort())
    t.notOk(lines(demo.stdout).some(l => l.trim().startsWith('server cert')), 'HTTPS off: no certificate line')
    demo.proc.kill('SIGINT')
    t.same(await exitWithin(demo), { code: 0, signal: null }, 'SIGINT: exit 0')
  })

  t.test('demo with HTTPS: it prints the server certificate\'s fingerprint, the one its HTTPS port presents', async t => {
    const dir = tempDir(t)
    const ready = join(dir, 'demo.json')
    const demo = start(t, ['demo', '--agents', '1', '--http-port', '0', '--https-port', '0', '--relay-port', '0', '--relay-tls-port', '0', '--data-dir', join(dir, 'demo'), '--ready-file', ready])
    await readyFile(demo, ready, 45_000)
    const serverLine = await poll(() => lines(demo.stdout).find(l => l.trim().startsWith('server ')) ?? '')
    const httpsUrl = /\(HTTPS (https:\/\/\S+)\)/.exec(serverLine)?.[1]
    t.ok(httpsUrl, `the server line names the HTTPS URL (${serverLine.trim()})`)
    const certLine = await poll(() => lines(demo.stdout).find(l => l.trim().startsWith('server cert')) ?? '')
    const printed = /server cert\s+([0-9a-f]{64})/.exec(certLine)?.[1]
    const presented = await new Promise<string>((resolve, reject) => {
      const u = new URL(httpsUrl!)
      const s = tls.connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false }, () => {
        resolve(s.getPeerCertificate().fingerprint256.replace(/:/g, '').toLowerCase())
        s.destroy()
      }).on('error', reject)
    })
    t.equal(printed, presented, 'the printed fingerprint is the certificate\'s')
    demo.proc.kill('SIGINT')
    t.same(await exitWithin(demo), { code: 0, signal: null }, 'SIGINT: exit 0')
  })

  t.test('demo: its agents run the README\'s job example; Ctrl-C with a tunnel open logs no "tunnel lost" and removes its temp dir', async t => {
    const ready = join(tempDir(t), 'demo.json')
    const demo = start(t, ['demo', '--agents', '1', '--http-port', '0', '--https-port', 'off', '--relay-port', '0', '--relay-tls-port', '0', '--ready-file', ready])
    const info = await readyFile(demo, ready, 45_000)
    t.ok(existsSync(info.dataDir), 'a temp data dir')
    const api = new Api(info.httpUrl, readFileSync(info.adminTokenFile, 'utf8').trim())
    const upload = await fetch(`${info.httpUrl}/api/artifacts/app.sh`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body: 'echo installed\n' })
    t.equal(upload.status, 201)
    const job = await api.ok('POST', '/api/jobs', { artifact: 'app.sh', endpoints: info.endpoints, path: 'releases/app.sh', run: ['sh', 'releases/app.sh'] })
    const done = await poll(async () => { const v = await api.ok('GET', `/api/jobs/${job.id as string}`); return v.state === 'succeeded' || v.state === 'failed' ? v : null })
    t.equal(done.state, 'succeeded', JSON.stringify(done.targets))
    t.equal(done.targets[0].output, 'installed\n', 'the command ran')
    const hello = await fetch(`${info.httpUrl}/api/endpoints/${info.endpoints[0] as string}/proxy/hello`, { headers: { authorization: `Bearer ${api.token}` } })
    t.equal(hello.status, 200, 'a tunnel is open')
    demo.proc.kill('SIGINT')
    t.same(await exitWithin(demo), { code: 0, signal: null }, 'SIGINT: exit 0')
    t.notMatch(demo.stdout + demo.stderr, /tunnel lost/, 'stopping is not reported as losing the tunnel')
    t.notOk(existsSync(info.dataDir), 'its temp data dir is gone')
  })
}
