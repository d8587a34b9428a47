import t from 'tap'
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startSite, startServer, startAgent, tempDir, eventually, freePort, type Api, type TapLike } from '../helpers/cluster.js'
import { uploadArtifact, relayFigures } from '../helpers/artifacts.js'
import { scriptBuild, UnitAgent, UnitRelay, waitRollout } from '../helpers/updates.js'
import { run } from '../helpers/child.js'

// Issue 16, staged self-update: rollouts over in-process agents and relays
// run the way their systemd units run them (guard, then the build the link
// points at, started again when they ask). The builds are scripts that say
// their version, which is what the versions dir checks before a switch; the
// one-file executable's own update is tested in test/onefile.

const V1 = '0.3.1'
const V2 = '0.3.2'

/** A site with `n` endpoints whose agents run V1 as units. */
async function fleet (t: TapLike & { equal: (a: unknown, b: unknown) => void }, n: number, options: { healthSeconds?: number, config?: (id: number) => (version: string) => Record<string, unknown> } = {}) {
  const site = await startSite(t)
  const dir = tempDir(t)
  const v1 = scriptBuild(dir, V1)
  const v2 = scriptBuild(dir, V2)
  t.equal((await uploadArtifact(site.api, 'relaygate-next', v2.bytes)).status, 201)
  const units: UnitAgent[] = []
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const e = await site.api.ok('POST', '/api/endpoints', { name: `box-${i}` })
    ids.push(e.id)
    const unit = new UnitAgent(t, join(dir, `agent-${i}`), { path: v1.path, version: V1 }, version => ({ joinToken: e.joinToken, ...options.config?.(i)(version) }))
    await unit.start().whenOnline()
    units.push(unit)
  }
  // Each agent's version reaches the server with its first snapshot.
  await eventually(async () => {
    const list = await site.api.ok('GET', '/api/endpoints') as any[]
    return list.every(e => e.agentVersion === V1) ? true : null
  }, 10_000)
  return { ...site, dir, v1, v2, units, ids }
}

const post = async (api: Api, body: Record<string, unknown>): Promise<string> => (await api.ok('POST', '/api/updates', body)).id

t.test('a rollout updates agents through their relay: one transfer to the site, each switches, restarts and reports the new version', async t => {
  const f = await fleet(t, 3)
  const id = await post(f.api, { artifact: 'relaygate-next', version: V2, target: 'agents', healthSeconds: 30 })
  const done = await waitRollout(f.api, id, ['succeeded', 'failed'])
  t.equal(done.state, 'succeeded', JSON.stringify(done.targets))
  t.same(done.counts, { total: 3, pending: 0, inFlight: 0, succeeded: 3, failed: 0, cancelled: 0 })
  for (const target of done.targets) {
    t.equal(target.fromVersion, V1)
    t.equal(target.version, V2, 'reported by the new version itself')
  }
  for (const unit of f.units) {
    t.equal(unit.version, V2, 'running the new build')
    t.equal(unit.starts, 2, 'started once more')
    const state = JSON.parse(readFileSync(join(unit.dataDir, 'versions', 'state.json'), 'utf8'))
    t.equal(state.trial, null, 'the trial was confirmed')
    t.equal(state.previous.version, V1, 'the build before is kept for a rollback')
    t.equal(realpathSync(join(unit.dataDir, 'bin', 'relaygate')), state.current.path)
    t.equal(readFileSync(state.current.path, 'utf8'), f.v2.bytes.toString(), 'the bytes uploaded')
  }
  const relay = await relayFigures(f.api, f.relayId, r => r.cache?.bytesFetched > 0)
  t.equal(relay.cache.bytesFetched, f.v2.bytes.length, 'three agents cost the server one transfer')
  const endpoints = await eventually(async () => {
    const list = await f.api.ok('GET', '/api/endpoints') as any[]
    return list.every(e => e.agentVersion === V2) ? list : null
  }, 10_000)
  t.equal(endpoints?.length, 3, 'the endpoint list shows the new version')
  t.same(endpoints?.flatMap(e => e.refusedEdgeIds), [], 'no agent was refused on its way back')
})

t.test('canaries go first; a canary that fails stops the rollout and the rest stay on their version', async t => {
  // A build that says another version than the one ordered is refused before any switch.
  const f = await fleet(t, 3)
  const liar = scriptBuild(f.dir, '0.3.3', '0.9.9')
  t.equal((await uploadArtifact(f.api, 'relaygate-liar', liar.bytes)).status, 201)
  const id = await post(f.api, { artifact: 'relaygate-liar', version: '0.3.3', target: 'agents', canary: [f.ids[1]] })
  const done = await waitRollout(f.api, id, ['succeeded', 'failed'])
  t.equal(done.state, 'failed')
  t.match(done.reason, /canary/)
  const canary = done.targets.find((x: any) => x.id === f.ids[1])
  t.equal(canary.canary, true)
  t.equal(canary.state, 'failed')
  t.equal(canary.error.code, 'RG_ERR_UPDATE_BAD_BINARY')
  t.match(canary.error.message, /0\.9\.9/)
  for (const other of done.targets.filter((x: any) => x.id !== f.ids[1])) {
    t.equal(other.state, 'cancelled', 'the others were never sent it')
    t.equal(other.error.code, 'RG_ERR_UPDATE_ABORTED')
  }
  for (const unit of f.units) t.equal(unit.version, V1)
  t.equal(f.units[1].starts, 1, 'the canary did not restart')

  // The same fleet, a good build, canary by count: the first target goes alone, then the rest.
  const next = await post(f.api, { artifact: 'relaygate-next', version: V2, target: 'agents', canary: 1, maxParallel: 1 })
  const sentAt: Record<string, number> = {}
  await eventually(async () => {
    const view = await f.api.ok('GET', `/api/updates/${next}`)
    for (const x of view.targets) if (x.state !== 'pending' && sentAt[x.id] === undefined) sentAt[x.id] = Date.now()
    return view.state === 'succeeded' ? view : null
  }, 30_000, 20)
  const view = await f.api.ok('GET', `/api/updates/${next}`)
  const first = view.targets.find((x: any) => x.canary)
  const firstDone = Date.parse(first.updatedAt)
  for (const x of view.targets.filter((y: any) => !y.canary)) t.ok(sentAt[x.id] >= firstDone, 'sent only after the canary updated')
})

t.test('pause holds the rollout, resume goes on, abort cancels what was not sent', async t => {
  const f = await fleet(t, 3)
  const id = await post(f.api, { artifact: 'relaygate-next', version: V2, target: 'agents', maxParallel: 1 })
  const paused = await f.api.ok('POST', `/api/updates/${id}/pause`)
  t.equal(paused.state, 'paused')
  // At most the one sent before the pause moves on.
  const settled = await eventually(async () => {
    const v = await f.api.ok('GET', `/api/updates/${id}`)
    return v.counts.inFlight === 0 ? v : null
  }, 30_000)
  await new Promise(resolve => setTimeout(resolve, 1500)) // more than a tick of the rollout: nothing else is sent
  const still = await f.api.ok('GET', `/api/updates/${id}`)
  t.equal(still.state, 'paused')
  t.ok(still.counts.pending >= 2, `${still.counts.pending} targets still wait`)
  t.same(still.counts, settled.counts, 'nothing moved while paused')
  const again = await f.api.request('POST', `/api/updates/${id}/pause`)
  t.equal(again.status, 409)
  t.equal(again.body.error.code, 'RG_ERR_UPDATE_STATE')
  t.equal((await f.api.ok('POST', `/api/updates/${id}/resume`)).state, 'running')
  t.equal((await waitRollout(f.api, id, ['succeeded', 'failed'])).state, 'succeeded')
  t.equal((await f.api.request('POST', `/api/updates/${id}/resume`)).status, 409, 'a finished rollout does not resume')

  // Back to V1 on two of them, one at a time, aborted at once: what was not sent is cancelled.
  const back = scriptBuild(f.dir, '0.3.5')
  t.equal((await uploadArtifact(f.api, 'relaygate-back', back.bytes)).status, 201)
  const second = await post(f.api, { artifact: 'relaygate-back', version: '0.3.5', target: 'agents', endpoints: [f.ids[0], f.ids[2]], canary: 0, maxParallel: 1 })
  await f.api.ok('POST', `/api/updates/${second}/pause`)
  const aborted = await f.api.ok('POST', `/api/updates/${second}/abort`)
  t.equal(aborted.state, 'aborted')
  const cancelled = aborted.targets.filter((x: any) => x.state === 'cancelled')
  t.ok(cancelled.length >= 1, 'the one not sent is cancelled')
  for (const x of cancelled) t.equal(x.error.code, 'RG_ERR_UPDATE_ABORTED')
  t.equal(f.units[1].version, V2, 'an endpoint not in the rollout is untouched')
})

t.test('an agent offline during the rollout updates when it returns', async t => {
  const f = await fleet(t, 2)
  await f.units[1].stop()
  await eventually(async () => (await f.api.ok('GET', `/api/endpoints/${f.ids[1]}`)).status === 'offline' ? true : null, 10_000)
  const id = await post(f.api, { artifact: 'relaygate-next', version: V2, target: 'agents' })
  await eventually(async () => {
    const v = await f.api.ok('GET', `/api/updates/${id}`)
    return v.counts.succeeded === 1 ? v : null
  }, 30_000)
  const waiting = await f.api.ok('GET', `/api/updates/${id}`)
  t.equal(waiting.state, 'running', 'the rollout waits for it')
  t.equal(waiting.targets.find((x: any) => x.id === f.ids[1]).state, 'pending')
  // It comes back (as its unit would after a reboot).
  const back = new UnitAgent(t, f.units[1].dataDir, { path: f.v1.path, version: V1 }, () => ({ joinToken: (f.units[1] as any).config(V1).joinToken }))
  await back.start().whenOnline()
  const done = await waitRollout(f.api, id, ['succeeded', 'failed'])
  t.equal(done.state, 'succeeded')
  t.equal(back.version, V2)
})

t.test('a new version that cannot come online rolls itself back by its deadline; the old one reports the failure', async t => {
  // V2 at this site is misconfigured: it dials a relay that is not there, so it never comes online.
  const dead = `ws://127.0.0.1:${await freePort()}`
  const f = await fleet(t, 1, { config: () => version => version === V2 ? { relays: [dead], acceptTimeoutMs: 500 } : {} })
  const id = await post(f.api, { artifact: 'relaygate-next', version: V2, target: 'agents', healthSeconds: 5 })
  const done = await waitRollout(f.api, id, ['succeeded', 'failed'], 40_000)
  t.equal(done.state, 'failed')
  const target = done.targets[0]
  t.equal(target.error.code, 'RG_ERR_UPDATE_ROLLED_BACK')
  t.equal(target.version, V1, 'reported by the old version, running again')
  t.equal(f.units[0].version, V1)
  t.equal(f.units[0].starts, 3, 'the old one, the new one, the old one again')
  const state = JSON.parse(readFileSync(join(f.units[0].dataDir, 'versions', 'state.json'), 'utf8'))
  t.equal(state.current.version, V1)
  t.equal(state.last.code, 'RG_ERR_UPDATE_ROLLED_BACK')
  t.notOk(existsSync(join(f.units[0].dataDir, 'versions', `${V2}-${f.v2.sha256.slice(0, 12)}`)), 'the failed build is removed')
})

t.test('agents that cannot update themselves say why', async t => {
  const f = await fleet(t, 1)
  // One agent too old to obey update orders, one run by hand (not as a service: no versions dir).
  const old = await f.api.ok('POST', '/api/endpoints', { name: 'old-box' })
  const byHand = await f.api.ok('POST', '/api/endpoints', { name: 'by-hand' })
  await startAgent(t, old.joinToken, { version: '0.2.0' }).whenOnline()
  await startAgent(t, byHand.joinToken, { version: V1 }).whenOnline()
  const id = await post(f.api, { artifact: 'relaygate-next', version: V2, target: 'agents', endpoints: [old.id, byHand.id] })
  const done = await waitRollout(f.api, id, ['succeeded', 'failed'])
  const byId = Object.fromEntries(done.targets.map((x: any) => [x.id, x]))
  t.equal(byId[old.id].error.code, 'RG_ERR_UPDATE_UNSUPPORTED')
  t.match(byId[old.id].error.message, /0\.2\.0/)
  t.equal(byId[byHand.id].error.code, 'RG_ERR_UPDATE_UNSUPPORTED')
  t.match(byId[byHand.id].error.message, /one-file|installed/, 'it says how it runs')
})

/** A server and one relay running V1 as its unit would, V2 uploaded; `config` may differ by version. */
async function relaySite (t: TapLike & { equal: (a: unknown, b: unknown) => void }, config: (version: string, serverUrl: string) => Record<string, unknown> = () => ({})) {
  const { server, api } = await startServer(t)
  const dir = tempDir(t)
  const v1 = scriptBuild(dir, V1)
  const v2 = scriptBuild(dir, V2)
  t.equal((await uploadArtifact(api, 'relaygate-next', v2.bytes)).status, 201)
  const r = await api.ok('POST', '/api/relays', { name: 'site-r' })
  const port = await freePort()
  const unit = new UnitRelay(t, join(dir, 'relay'), { path: v1.path, version: V1 }, version => ({ server: server.httpUrl, token: r.token, port, ...config(version, server.httpUrl) }))
  await (await unit.start()).whenLinked()
  return { api, r, unit }
}

t.test('a relay updates itself over its link and reports its new version', async t => {
  const { api, r, unit } = await relaySite(t)
  const id = await post(api, { artifact: 'relaygate-next', version: V2, target: 'relays', relays: [r.id] })
  const done = await waitRollout(api, id, ['succeeded', 'failed'])
  t.equal(done.state, 'succeeded', JSON.stringify(done.targets))
  t.equal(done.targets[0].version, V2)
  t.equal(unit.version, V2)
  const relays = await relayFigures(api, r.id, x => x.connected === true && x.version === V2)
  t.equal(relays.version, V2, 'GET /api/relays shows the new version')
})

t.test('a relay whose new version cannot link rolls itself back; the old one links and reports it', async t => {
  // V2 at this site is misconfigured: it looks for the server where there is none.
  const nowhere = `http://127.0.0.1:${await freePort()}`
  const { api, r, unit } = await relaySite(t, version => version === V2 ? { server: nowhere } : {})
  const id = await post(api, { artifact: 'relaygate-next', version: V2, target: 'relays', healthSeconds: 5 })
  const done = await waitRollout(api, id, ['succeeded', 'failed'], 40_000)
  t.equal(done.state, 'failed')
  t.equal(done.targets[0].error.code, 'RG_ERR_UPDATE_ROLLED_BACK')
  t.equal(done.targets[0].version, V1, 'reported by the old version, linked again')
  t.equal(unit.version, V1)
  t.equal(unit.starts, 3, 'the old one, the new one, the old one again')
  t.equal((await relayFigures(api, r.id, x => x.connected === true)).version, V1)
})

t.test('bad update bodies get a coded answer', async t => {
  const { api } = await startServer(t)
  const cases: Array<[unknown, number, string]> = [
    [{ version: '1.0.0', target: 'agents' }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1 0', target: 'agents' }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'servers' }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'agents', relays: ['r1'] }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'agents', healthSeconds: 1 }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'agents', surprise: true }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'relays', tags: ['site-a'] }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'agents', tags: ['not a tag'] }, 400, 'RG_ERR_BAD_REQUEST'],
    [{ artifact: 'x', version: '1.0.0', target: 'agents', tags: ['nowhere'] }, 404, 'RG_ERR_NOT_FOUND'],
    [{ artifact: 'nope', version: '1.0.0', target: 'agents' }, 404, 'RG_ERR_ARTIFACT_UNKNOWN']
  ]
  for (const [body, status, code] of cases) {
    const res = await api.request('POST', '/api/updates', body)
    t.equal(res.status, status, JSON.stringify(body))
    t.equal(res.body.error.code, code)
  }
  writeFileSync(join(tempDir(t), 'unused'), '')
  t.equal((await uploadArtifact(api, 'relaygate-x', Buffer.from('#!/bin/sh\necho 1.0.0\n'))).status, 201)
  const none = await api.request('POST', '/api/updates', { artifact: 'relaygate-x', version: '1.0.0', target: 'agents' })
  t.equal(none.status, 400, 'no endpoints to update')
  const unknown = await api.request('POST', '/api/updates', { artifact: 'relaygate-x', version: '1.0.0', target: 'agents', endpoints: ['e_nope'] })
  t.equal(unknown.status, 404)
  t.equal((await api.request('GET', '/api/updates/u_nope')).status, 404)
  t.equal((await api.request('POST', '/api/updates/u_nope/pause')).status, 404)
})

t.test('the CLI starts a rollout for a tag and follows it to its end; list, show and a refused pause', async t => {
  const f = await fleet(t, 2)
  const env = { RELAYGATE_ADMIN_TOKEN: f.api.token }
  await f.api.ok('PATCH', `/api/endpoints/${f.ids[0]}`, { tags: ['canary-site'] })
  const created = await run(t, ['update', 'create', '--server', f.api.baseUrl, '--artifact', 'relaygate-next', '--to', V2, '--tag', 'canary-site', '--health-seconds', '30', '--watch'], env, undefined, 60_000)
  t.equal(created.code, 0, created.stderr)
  t.match(created.stdout, /succeeded; 1 updated, 0 on their way, 0 waiting, 0 failed, 0 cancelled of 1/)
  t.match(created.stdout, new RegExp(`box-0\\s+succeeded\\s+100%\\s+${V1.replace(/\./g, '\\.')}\\s+${V2.replace(/\./g, '\\.')}`), 'a row per target: from and to')
  t.equal(f.units[1].version, V1, 'the endpoint without the tag is not updated')
  const listed = await run(t, ['endpoint', 'list', '--server', f.api.baseUrl, '--tag', 'canary-site', '--status', 'online'], env)
  t.match(listed.stdout, new RegExp(`box-0\\s+online.*${V2.replace(/\./g, '\\.')}\\s+canary-site`), 'endpoint list: version and tags, filtered')
  t.notMatch(listed.stdout, /box-1/)
  const id = /update (u\w+):/.exec(created.stdout)![1]
  const list = await run(t, ['update', 'list', '--server', f.api.baseUrl, '--json'], env)
  t.equal(JSON.parse(list.stdout)[0].id, id)
  const show = await run(t, ['update', 'show', id, '--server', f.api.baseUrl], env)
  t.match(show.stdout, /succeeded/)
  const pause = await run(t, ['update', 'pause', id, '--server', f.api.baseUrl], env)
  t.equal(pause.code, 1)
  t.match(pause.stderr, /RG_ERR_UPDATE_STATE/)
  const bad = await run(t, ['update', 'create', '--server', f.api.baseUrl, '--artifact', 'x', '--to', '1', '--target', 'servers'], env)
  t.equal(bad.code, 2, 'a bad --target is a usage error')
})
