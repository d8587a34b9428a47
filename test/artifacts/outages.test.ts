import t from 'tap'
import fs from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { startServer, startRelay, startAgent, freePort, eventually, tempDir, testLogger, type TapLike } from '../helpers/cluster.js'
import { sha256, uploadArtifact, waitJob } from '../helpers/artifacts.js'
import { CuttingProxy } from '../helpers/cutting-proxy.js'
import { buildRelay, type RelaygateRelay } from '../../relay/relay.js'

/**
 * Downloads at a site whose relay goes away for longer than the agent's
 * retry budget: the download waits for a relay (until the job's deadline)
 * and resumes from its .part; a job that cannot finish in time fails with
 * a coded deadline instead of showing "downloading" for good.
 */

const RELAY = { statsIntervalMs: 100, cacheMinFreeBytes: 0 }

async function siteWithFixedRelay (t: TapLike): Promise<{ api: Awaited<ReturnType<typeof startServer>>['api'], serverUrl: string, relayToken: string, relayPort: number, relayDir: string, relay: RelaygateRelay }> {
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'flaky-site' })
  const relayPort = await freePort()
  const relayDir = join(tempDir(t), 'relay')
  const relay = await startRelay(t, server.httpUrl, created.token, { ...RELAY, port: relayPort, tlsPort: -1, dataDir: relayDir })
  return { api, serverUrl: server.httpUrl, relayToken: created.token, relayPort, relayDir, relay }
}

t.test('a relay outage longer than the retry budget: the download waits, resumes from its .part and succeeds (it failed for good)', async t => {
  const site = await siteWithFixedRelay(t)
  const body = randomBytes(6 * 1024 * 1024 + 3)
  t.equal((await uploadArtifact(site.api, 'outage.bin', body)).status, 201)
  const proxy = new CuttingProxy(site.relayPort, 2 * 1024 * 1024)
  await proxy.listen()
  t.teardown(() => proxy.close())
  // The relay dies the moment the first download is cut, with 2 MB on the agent's disk.
  const down = new Promise<void>(resolve => { proxy.onCut = () => { void site.relay.destroy().then(resolve) } })
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'far-away' })
  const agentDir = join(tempDir(t), 'agent')
  const agent = startAgent(t, ep.joinToken, { relays: [`ws://127.0.0.1:${proxy.port}`], dataDir: agentDir, downloadRetries: 1 })
  await agent.whenOnline()
  const job = await site.api.ok('POST', '/api/jobs', { artifact: 'outage.bin', endpoints: [ep.id], deadlineSeconds: 120 })
  await down
  // Ten times the retry budget of one failed try (~0.4 s) without a relay.
  await new Promise(resolve => setTimeout(resolve, 4000))
  const during = await site.api.ok('GET', `/api/jobs/${job.id}`)
  t.equal(during.targets[0].state, 'downloading', 'still downloading, not failed, while the relay is away')
  const parts = fs.readdirSync(join(agentDir, 'downloads')).filter(f => f.endsWith('.part'))
  t.equal(parts.length, 1, 'the partial download is kept')

  const again = await buildRelay({ server: site.serverUrl, token: site.relayToken, dataDir: site.relayDir, host: '127.0.0.1', port: site.relayPort, tlsPort: -1, ...RELAY }, testLogger())
  t.teardown(() => again.destroy())
  const done = await waitJob(site.api, job.id, 60_000)
  t.match(done.targets[0], { state: 'succeeded', bytes: body.length, progress: 1 })
  t.ok(done.targets[0].attempt >= 2, `dispatched again when the agent came back (attempt ${done.targets[0].attempt})`)
  t.equal(sha256(fs.readFileSync(join(agent.config.filesDir!, 'outage.bin'))), sha256(body), 'the placed file verifies')
  const resumed = /^bytes=(\d+)-$/.exec(proxy.ranges[1] ?? '')
  t.ok(resumed !== null && Number(resumed[1]) > 0, `the download after the outage resumed from the .part (${proxy.ranges[1]})`)
  t.same(fs.readdirSync(join(agentDir, 'downloads')).filter(f => f.endsWith('.part')), [], 'no .part left behind')
})

t.test('a job whose deadline passes while its download waits for a relay fails with RG_ERR_JOB_DEADLINE, saying what it was doing', async t => {
  const site = await siteWithFixedRelay(t)
  const body = randomBytes(4 * 1024 * 1024)
  t.equal((await uploadArtifact(site.api, 'late.bin', body)).status, 201)
  // Every download is cut (a retry cannot finish it); the relay goes away once the server has recorded
  // that the target is downloading (otherwise the race between the agent's progress and the relay's end
  // decides what the server knew).
  const proxy = new CuttingProxy(site.relayPort, 1024 * 1024, 1000)
  await proxy.listen()
  t.teardown(() => proxy.close())
  let jobId = ''
  const down = new Promise<void>(resolve => {
    proxy.onCut = () => {
      proxy.onCut = null
      void eventually(async () => (await site.api.ok('GET', `/api/jobs/${jobId}`)).targets[0].state === 'downloading')
        .then(async () => await site.relay.destroy()).then(resolve)
    }
  })
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'cut-off' })
  const agent = startAgent(t, ep.joinToken, { relays: [`ws://127.0.0.1:${proxy.port}`], downloadRetries: 1 })
  await agent.whenOnline()
  const job = await site.api.ok('POST', '/api/jobs', { artifact: 'late.bin', endpoints: [ep.id], deadlineSeconds: 3 })
  jobId = job.id
  t.match(job, { id: /^j/ })
  await down
  const failed = await eventually(async () => {
    const view = await site.api.ok('GET', `/api/jobs/${job.id}`)
    return view.targets[0].state === 'failed' ? view : undefined
  }, 15_000)
  t.equal(failed.state, 'failed')
  t.equal(failed.targets[0].error.code, 'RG_ERR_JOB_DEADLINE')
  t.match(failed.targets[0].error.message, /deadline passed while this target was downloading/)
  t.ok(Date.parse(failed.deadline) > 0, 'the job shows its deadline')
  const fields = await site.api.request('POST', '/api/jobs', { artifact: 'late.bin', endpoints: [ep.id], deadlineSeconds: 0 })
  t.equal(fields.status, 400, 'a deadline of 0 s is refused')
  t.equal(fields.body.error.code, 'RG_ERR_BAD_REQUEST')
})

t.test('two jobs for the same artifact at once on one agent both succeed (they shared one .part file: one failed with ENOENT)', async t => {
  const site = await siteWithFixedRelay(t)
  const body = randomBytes(4 * 1024 * 1024)
  t.equal((await uploadArtifact(site.api, 'shared.bin', body)).status, 201)
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'busy' })
  const agent = startAgent(t, ep.joinToken, { relays: [`ws://127.0.0.1:${site.relayPort}`] })
  await agent.whenOnline()
  const jobs = await Promise.all(['one/shared.bin', 'two/shared.bin', 'three/shared.bin'].map(async path => await site.api.ok('POST', '/api/jobs', { artifact: 'shared.bin', endpoints: [ep.id], path })))
  for (const job of jobs) {
    const done = await waitJob(site.api, job.id, 30_000)
    t.match(done.targets[0], { state: 'succeeded' }, done.path)
    t.equal(sha256(fs.readFileSync(join(agent.config.filesDir!, done.path))), sha256(body))
  }
})
