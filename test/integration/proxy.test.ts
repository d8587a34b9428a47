import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { startServer, startRelay, startAgent, tempDir, freePort, eventually, testLogger, type TapLike } from '../helpers/cluster.js'
import { uploadArtifact, waitJob } from '../helpers/artifacts.js'
import { buildRelay } from '../../relay/relay.js'
import type { RelaygateError } from '../../protocol/errors.js'

// Issue 17, corporate networks: relays reach the server and agents reach
// their relay (links and downloads) through a real HTTP CONNECT proxy
// (Debian's tinyproxy, with Basic credentials), from --proxy or the standard
// variables; the pins still apply end to end.
const TINYPROXY = '/usr/bin/tinyproxy'

/** tinyproxy on a loopback port, Basic auth user:s3cret; its log lists every CONNECT. */
async function startProxy (t: TapLike): Promise<{ url: string, port: number, connects: () => string[] }> {
  const dir = tempDir(t)
  const port = await freePort()
  const log = join(dir, 'tinyproxy.log')
  writeFileSync(join(dir, 'tinyproxy.conf'), [`Port ${port}`, 'Listen 127.0.0.1', 'Timeout 60', `LogFile "${log}"`, 'LogLevel Connect', 'MaxClients 100', 'BasicAuth user s3cret', ''].join('\n'))
  const proc = spawn(TINYPROXY, ['-d', '-c', join(dir, 'tinyproxy.conf')], { stdio: 'ignore' })
  t.teardown(() => { proc.kill('SIGKILL') })
  await eventually(() => existsSync(log) || undefined, 10_000)
  const connects = (): string[] => readFileSync(log, 'utf8').split('\n').filter(l => / CONNECT 127\.0\.0\.1:\d+ /.test(l)).map(l => /CONNECT (127\.0\.0\.1:\d+)/.exec(l)![1])
  return { url: `http://user:s3cret@127.0.0.1:${port}`, port, connects }
}

/** Sets proxy variables for one test (restored in teardown). */
function withEnv (t: TapLike, vars: Record<string, string | undefined>): void {
  const saved = Object.fromEntries(Object.keys(vars).map(k => [k, process.env[k]]))
  for (const [k, v] of Object.entries(vars)) { if (v === undefined) delete process.env[k]; else process.env[k] = v }
  t.teardown(() => { for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v } })
}

t.test('a relay and an agent through an HTTP CONNECT proxy with credentials: links, a job\'s download, pins end to end', async t => {
  const proxy = await startProxy(t)
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'behind-proxy' })
  // The relay to the server's HTTPS port with its pin, through --proxy.
  const relay = await startRelay(t, server.httpsUrl!, created.token, { serverFingerprint: server.fingerprint!, proxy: proxy.url })
  t.ok(proxy.connects().includes(new URL(server.httpsUrl!).host), 'the relay\'s link went through the proxy')
  // The agent through the proxy from HTTPS_PROXY (no flag), to the relay's TLS port with the token's pin.
  withEnv(t, { HTTPS_PROXY: proxy.url, HTTP_PROXY: undefined, NO_PROXY: undefined, https_proxy: undefined, http_proxy: undefined, no_proxy: undefined })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'corp-box' })
  const agent = startAgent(t, ep.joinToken, { relays: [relay.wssUrl!], pins: [relay.fingerprint!] })
  await agent.whenOnline()
  t.ok(proxy.connects().includes(new URL(relay.wssUrl!).host), 'the agent\'s link went through the proxy')
  const body = randomBytes(200_000)
  t.equal((await uploadArtifact(api, 'corp.bin', body)).status, 201)
  const before = proxy.connects().length
  const job = await api.ok('POST', '/api/jobs', { artifact: 'corp.bin', endpoints: [ep.id] })
  t.equal((await waitJob(api, job.id)).state, 'succeeded')
  t.ok(proxy.connects().length > before, 'the download went through the proxy too')
  t.same(readFileSync(join(agent.config.filesDir!, 'corp.bin')), body)

  // The proxy carries a tunnel only: a relay that pins another certificate still refuses the server.
  const wrongPin = await new Promise<RelaygateError>((resolve, reject) => {
    buildRelay({ server: server.httpsUrl!, token: created.token, serverFingerprint: 'ab'.repeat(32), proxy: proxy.url, dataDir: join(tempDir(t), 'r2'), host: '127.0.0.1', port: 0, tlsPort: -1 }, testLogger(), { onFatal: resolve })
      .then(r => t.teardown(() => r.destroy()), reject)
  })
  t.equal(wrongPin.code, 'RG_ERR_PIN_MISMATCH', 'pins apply end to end through the proxy')
})

t.test('a wrong proxy password is reported without the password; NO_PROXY goes direct', async t => {
  const proxy = await startProxy(t)
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'site' })
  const relay = await startRelay(t, server.httpUrl, created.token)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'box' })
  const wrong = proxy.url.replace('s3cret', 'guessed-wrong')
  const refused = startAgent(t, ep.joinToken, { proxy: wrong })
  const seen = await new Promise<{ error: RelaygateError }>(resolve => refused.once('relay-error', resolve))
  t.equal(seen.error.code, 'RG_ERR_PROXY')
  t.match(seen.error.message, /answered 40[17] .*check the user and password/)
  t.notMatch(seen.error.message, /guessed-wrong/, 'the password is not in the message')
  await refused.destroy()
  const tried = proxy.connects().length
  // A dead proxy in the variables, but the relay's host is in NO_PROXY: direct.
  withEnv(t, { HTTP_PROXY: `http://127.0.0.1:${await freePort()}`, HTTPS_PROXY: undefined, NO_PROXY: '127.0.0.1', http_proxy: undefined, https_proxy: undefined, no_proxy: undefined })
  const direct = startAgent(t, ep.joinToken)
  await direct.whenOnline()
  t.ok([relay.wsUrl, relay.wssUrl].includes(direct.relayUrl), 'online, directly')
  t.equal(proxy.connects().length, tried, 'nothing more went to the (real) proxy')
  const bad = await new Promise<Error>(resolve => {
    try { startAgent(t, ep.joinToken, { proxy: 'socks5://127.0.0.1:1080' }) } catch (err) { resolve(err as Error) }
  })
  t.match(bad, { code: 'RG_ERR_CONFIG' }, 'only http:// proxies')
})
