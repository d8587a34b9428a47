#!/usr/bin/env node
// node scripts/agent-start.mjs dist-bin/relaygate-linux-x64   (after npm run build and npm run dist)
//
// Issue 16's figure: an agent's time from start to online (its ready file)
// and its RSS 3 s later, from the one-file executable and from npm
// (node dist/cli/main.js), 5 interleaved rounds against one server and
// relay on loopback; prints each round and the medians.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
const exe = process.argv[2]
if (exe === undefined) throw new Error('usage: node scripts/agent-start.mjs <path to the one-file executable>')
const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'rg-start-'))
const wait = async (f, ms = 30000) => { const t0 = Date.now(); while (!existsSync(f)) { if (Date.now() - t0 > ms) throw new Error('no ' + f); await new Promise(r => setTimeout(r, 5)) } return JSON.parse(readFileSync(f, 'utf8')) }
const server = spawn(process.execPath, [cli, 'server', '--data-dir', join(dir, 's'), '--http-port', '0', '--https-port', 'off', '--host', '127.0.0.1', '--ready-file', join(dir, 's.json'), '--log-level', 'warn'], { stdio: 'ignore' })
const s = await wait(join(dir, 's.json'))
const tok = readFileSync(s.adminTokenFile, 'utf8').trim()
const api = async (m, p, b) => (await fetch(s.httpUrl + p, { method: m, headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' }, body: b && JSON.stringify(b) })).json()
const r = await api('POST', '/api/relays', { name: 'm' })
const relay = spawn(process.execPath, [cli, 'relay', '--server', s.httpUrl, '--token', r.token, '--port', '0', '--tls-port', 'off', '--host', '127.0.0.1', '--data-dir', join(dir, 'r'), '--ready-file', join(dir, 'r.json'), '--log-level', 'warn'], { stdio: 'ignore' })
await wait(join(dir, 'r.json'))
const results = { exe: [], npm: [] }
for (let round = 0; round < 5; round++) {
  for (const kind of ['exe', 'npm']) {
    const e = await api('POST', '/api/endpoints', { name: `${kind}-${round}` })
    const ready = join(dir, `${kind}-${round}.json`)
    const args = ['agent', '--join-token', e.joinToken, '--data-dir', join(dir, `${kind}-${round}`), '--ready-file', ready, '--log-level', 'warn']
    const t0 = performance.now()
    const p = kind === 'exe' ? spawn(exe, args, { stdio: 'ignore', env: { PATH: '/nonexistent', RELAYGATE_NATIVE_DIR: join(dir, 'native') } }) : spawn(process.execPath, [cli, ...args], { stdio: 'ignore' })
    await wait(ready)
    const ms = performance.now() - t0
    await new Promise(r => setTimeout(r, 3000))
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))[1]) / 1024
    results[kind].push({ ms: Math.round(ms), rssMB: Math.round(rss) })
    p.kill('SIGKILL')
  }
}
relay.kill(); server.kill()
const med = a => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)]
for (const k of ['exe', 'npm']) console.log(k, 'online ms', results[k].map(x => x.ms).join(' '), 'median', med(results[k].map(x => x.ms)), '| RSS MB', results[k].map(x => x.rssMB).join(' '), 'median', med(results[k].map(x => x.rssMB)))
rmSync(dir, { recursive: true, force: true })
