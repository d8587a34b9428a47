import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { Api, tempDir, eventually } from '../helpers/cluster.js'
import { start, run, readyFile } from '../helpers/child.js'

// Issue 16: better-sqlite3 is an optional dependency that only a server with
// the embedded store loads. These processes run as if npm had skipped it.
const preload = pathToFileURL(fileURLToPath(new URL('../helpers/no-sqlite-preload.mjs', import.meta.url))).href
const withoutSqlite = { NODE_OPTIONS: `--import=${preload}` }

t.test('without better-sqlite3 a server on the embedded store says what to do and exits 2', async t => {
  const dir = tempDir(t)
  const res = await run(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off'], withoutSqlite)
  t.equal(res.code, 2, `exit code (stderr: ${res.stderr})`)
  const lines = res.stderr.split('\n').filter(l => l.includes('RG_ERR_CONFIG'))
  t.equal(lines.length, 1, 'one coded line')
  t.match(lines[0], /better-sqlite3/, 'names the missing package')
  t.match(lines[0], /--database-url/, 'and the other way to run the server')
})

t.test('without better-sqlite3 a relay and an agent run, and the agent comes online', async t => {
  const dir = tempDir(t)
  const server = start(t, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')])
  const s = await readyFile(server, join(dir, 'server.json'))
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const r = await api.ok('POST', '/api/relays', { name: 'no-toolchain-site' })
  const relay = start(t, ['relay', '--server', s.httpUrl, '--token', r.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'relay'), '--ready-file', join(dir, 'relay.json')], withoutSqlite)
  await readyFile(relay, join(dir, 'relay.json'))
  const e = await api.ok('POST', '/api/endpoints', { name: 'box' })
  const agent = start(t, ['agent', '--join-token', e.joinToken, '--data-dir', join(dir, 'agent'), '--ready-file', join(dir, 'agent.json')], withoutSqlite)
  await readyFile(agent, join(dir, 'agent.json'))
  const online = await eventually(async () => {
    const ep = await api.ok('GET', `/api/endpoints/${e.id as string}`)
    return ep.status === 'online' ? ep : null
  }, 20_000, 100)
  t.equal(online.relayId, r.id, 'online through the relay that has no better-sqlite3')
  t.notOk(/better-sqlite3/.test(relay.stderr + agent.stderr), 'neither of them so much as mentions the package')
})
