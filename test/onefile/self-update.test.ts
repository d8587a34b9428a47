import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, realpathSync, writeFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Api, tempDir, eventually } from '../helpers/cluster.js'
import { readyFile, startCommand } from '../helpers/child.js'
import { uploadArtifact, relayFigures, flipByte } from '../helpers/artifacts.js'
import { UnitRunner } from '../helpers/unit.js'

// Issue 16, self-update with rollback, with the real one-file executable:
// two builds that differ only in their version string, and a third "build"
// that exits at start. Agents are installed with `relaygate install` and run
// the way their systemd unit runs them (test/helpers/unit.ts: ExecStartPre
// guard, ExecStart through the link, restarted on failure).
const root = fileURLToPath(new URL('../../', import.meta.url))
const V1 = '9.9.1-first'
const V2 = '9.9.2-second'
const V3 = '9.9.3-broken'
const builds = tempDir(t)
const exeOf = (version: string): string => {
  const out = join(builds, version)
  execFileSync(process.execPath, [join(root, 'scripts', 'dist.mjs'), '--out', out, '--version', version, '--targets', `${process.platform}-${process.arch}`], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], timeout: 180_000 })
  return join(out, `relaygate-${process.platform}-${process.arch}`)
}
const v1 = exeOf(V1)
const v2 = exeOf(V2)
// The third: says its version, then exits at every start (a build that crashes at start).
const v3 = join(builds, 'broken')
writeFileSync(v3, `#!/bin/sh\nif [ "$1" = --version ]; then echo ${V3}; exit 0; fi\necho "broken build" >&2\nexit 1\n`)
chmodSync(v3, 0o755)
const sha = (file: string): string => execFileSync('sha256sum', [file], { encoding: 'utf8' }).split(' ')[0]
const work = tempDir(t)
const bare = { PATH: '/nonexistent', HOME: work, RELAYGATE_LOG_LEVEL: 'info' }

t.test('an installed agent updates through its relay, an offline one on return past a tampered cache, and a version that exits at start is rolled back', async t => {
  const dir = tempDir(t)
  const server = startCommand(t, v1, ['server', '--data-dir', join(dir, 'server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', '--ready-file', join(dir, 'server.json')], bare, work)
  const s = await readyFile(server, join(dir, 'server.json'), 60_000)
  const api = new Api(s.httpUrl, readFileSync(s.adminTokenFile, 'utf8').trim())
  const r = await api.ok('POST', '/api/relays', { name: 'update-site' })
  const relay = startCommand(t, v1, ['relay', '--server', s.httpUrl, '--token', r.token, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', '--data-dir', join(dir, 'relay'), '--ready-file', join(dir, 'relay.json')], bare, work)
  await readyFile(relay, join(dir, 'relay.json'), 60_000)

  /** Installs an agent for a new endpoint from the first build (as the pasted line does) and runs its unit. */
  const installAgent = async (name: string): Promise<{ id: string, root: string, unit: UnitRunner }> => {
    const e = await api.ok('POST', '/api/endpoints', { name })
    const installRoot = join(dir, name)
    const done = spawnSync(v1, ['install', 'agent', '--join-token', e.joinToken, '--root', installRoot], { cwd: work, env: bare, encoding: 'utf8' })
    t.equal(done.status, 0, done.stderr)
    const unit = new UnitRunner(t, installRoot, 'etc/systemd/system/relaygate-agent.service', work, { env: { RELAYGATE_LOG_LEVEL: 'info' } }).start()
    return { id: e.id, root: installRoot, unit }
  }
  const endpoint = async (id: string): Promise<any> => await api.ok('GET', `/api/endpoints/${id}`)
  const onlineAt = async (id: string, version: string): Promise<any> => await eventually(async () => {
    const ep = await endpoint(id)
    return ep.status === 'online' && ep.agentVersion === version ? ep : null
  }, 60_000, 100)
  const rollout = async (id: string, states: string[]): Promise<any> => await eventually(async () => {
    const view = await api.ok('GET', `/api/updates/${id}`)
    return states.includes(view.state) ? view : null
  }, 90_000, 200)

  const a = await installAgent('box-a')
  const b = await installAgent('box-b')
  await onlineAt(a.id, V1)
  await onlineAt(b.id, V1)
  // box-b goes offline before the rollout.
  await b.unit.stop()
  await eventually(async () => (await endpoint(b.id)).status === 'offline' ? true : null, 20_000)

  t.equal((await uploadArtifact(api, 'relaygate-next', readFileSync(v2))).status, 201)
  const first = (await api.ok('POST', '/api/updates', { artifact: 'relaygate-next', version: V2, target: 'agents', endpoints: [a.id, b.id], healthSeconds: 60 })).id
  const halfway = await eventually(async () => {
    const view = await api.ok('GET', `/api/updates/${first}`)
    return view.counts.succeeded === 1 ? view : null
  }, 90_000, 200)
  t.equal(halfway.state, 'running', 'it waits for the offline agent')
  t.equal(halfway.targets.find((x: any) => x.id === a.id).version, V2, 'box-a reported the new version itself')
  t.equal((await onlineAt(a.id, V2)).relayId, r.id, 'box-a is online on the new version')
  t.equal(a.unit.exits[0]?.code, 75, 'the old version stopped with the restart status')
  t.equal(a.unit.starts, 2)
  const aLink = join(a.root, 'var/lib/relaygate-agent/bin/relaygate')
  t.equal(sha(realpathSync(aLink)), sha(v2), 'the link points at the second build, byte for byte')

  // The relay's cached copy is altered while box-b is away: box-b refuses it, and gets a good one.
  const cached = join(dir, 'relay', 'cache', sha(v2))
  t.ok(existsSync(cached), 'the relay cached the executable')
  flipByte(cached, 7_000_000)
  const bBack = new UnitRunner(t, b.root, 'etc/systemd/system/relaygate-agent.service', work, { env: { RELAYGATE_LOG_LEVEL: 'info' } }).start()
  const done = await rollout(first, ['succeeded', 'failed'])
  t.equal(done.state, 'succeeded', JSON.stringify(done.targets))
  await onlineAt(b.id, V2)
  t.match(bBack.output, /does not match its sha256: refused/, 'box-b refused the tampered copy')
  t.equal(sha(realpathSync(join(b.root, 'var/lib/relaygate-agent/bin/relaygate'))), sha(v2), 'and installed the genuine one')
  const figures = await relayFigures(api, r.id, x => x.cache?.corruptDropped >= 1)
  t.ok(figures.cache.corruptDropped >= 1, 'the relay dropped its damaged copy and fetched it again')
  t.ok(figures.cache.bytesFetched <= 2 * readFileSync(v2).length + 1, `server to relay: ${figures.cache.bytesFetched} bytes for two agents (one fill, one refill after the damage)`)

  // A version that exits at every start: three failed starts, the guard rolls back, the second build reports it.
  t.equal((await uploadArtifact(api, 'relaygate-broken', readFileSync(v3))).status, 201)
  const second = (await api.ok('POST', '/api/updates', { artifact: 'relaygate-broken', version: V3, target: 'agents', endpoints: [a.id], healthSeconds: 60 })).id
  const failed = await rollout(second, ['succeeded', 'failed'])
  t.equal(failed.state, 'failed')
  t.equal(failed.targets[0].error.code, 'RG_ERR_UPDATE_ROLLED_BACK', failed.targets[0].error.message)
  t.match(failed.targets[0].error.message, /stopped at start 3 times/)
  t.equal(failed.targets[0].version, V2, 'reported by the second build, running again')
  t.equal((await onlineAt(a.id, V2)).status, 'online', 'box-a stays online on the second build')
  t.ok(a.unit.guardLines.some(l => /rolled back from 9\.9\.3-broken to 9\.9\.2-second/.test(l)), 'the guard rolled it back before a start')
  t.same(a.unit.exits.map(e => e.code).slice(1, 5), [75, 1, 1, 1], 'switched, then three starts of the broken build')
  t.equal(sha(realpathSync(aLink)), sha(v2))
  t.notOk(/"level":(50|60)/.test(server.stderr + relay.stderr), 'no errors logged by the server or the relay')
})
