import t from 'tap'
import fs from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { buildServer, type RelaygateServer } from '../../server/server.js'
import { buildRelay, type RelaygateRelay } from '../../relay/relay.js'
import { Api, startSite, startAgent, tempDir, freePort, eventually, capturingLogger, testLogger, testStore } from '../helpers/cluster.js'
import { uploadArtifact, waitJob, relayFigures } from '../helpers/artifacts.js'

const APPLIED = '"msg":"job result applied"'

t.test('results produced during a server outage arrive exactly once after it returns', async t => {
  const base = tempDir(t)
  const serverDir = join(base, 'server')
  const relayDir = join(base, 'relay')
  const [httpPort, relayPort] = await Promise.all([freePort(), freePort()])
  const servers: RelaygateServer[] = []
  const relays: RelaygateRelay[] = []
  t.teardown(async () => {
    await Promise.all(relays.map(r => r.destroy()))
    await Promise.all(servers.map(s => s.destroy()))
  })
  const startServerHere = async (logger: Logger): Promise<RelaygateServer> => {
    const s = await buildServer({ dataDir: serverDir, host: '127.0.0.1', httpPort, httpsPort: -1, ...await testStore(serverDir) }, logger)
    servers.push(s)
    return s
  }
  let relayToken = ''
  const startRelayHere = async (): Promise<RelaygateRelay> => {
    const r = await buildRelay({ server: `http://127.0.0.1:${httpPort}`, token: relayToken, dataDir: relayDir, host: '127.0.0.1', port: relayPort, tlsPort: -1, statsIntervalMs: 100, cacheMinFreeBytes: 0 }, testLogger())
    relays.push(r)
    return r
  }

  const first = capturingLogger('info')
  let server = await startServerHere(first.logger)
  const api = new Api(server.httpUrl, fs.readFileSync(server.adminTokenFile, 'utf8').trim())
  relayToken = (await api.ok('POST', '/api/relays', { name: 'durable' })).token
  let relay = await startRelayHere()
  await relay.whenLinked()
  const relayId = relay.relayId!

  await uploadArtifact(api, 'wait.sh', Buffer.from('#!/bin/sh\n'))
  const ep = await api.ok('POST', '/api/endpoints', { name: 'patient' })
  const agent = startAgent(t, ep.joinToken, { allowExec: true, relays: [`ws://127.0.0.1:${relayPort}`] })
  await agent.whenOnline()
  const go = join(agent.config.filesDir!, 'go')
  const job = await api.ok('POST', '/api/jobs', {
    artifact: 'wait.sh',
    endpoints: [ep.id],
    run: ['sh', '-c', 'while [ ! -f go ]; do sleep 0.05; done; echo finished; exit 0']
  })
  await eventually(async () => (await api.ok('GET', `/api/jobs/${job.id as string}`)).targets[0].state === 'running')

  // The server goes away; the command finishes meanwhile.
  await server.destroy()
  fs.writeFileSync(go, '')
  await eventually(() => relay.queuedResults === 1, 10_000)
  const resultsDir = join(relayDir, 'results')
  const queuedFiles = fs.readdirSync(resultsDir)
  t.equal(queuedFiles.length, 1, 'the result is on the relay\'s disk')
  const saved = fs.readFileSync(join(resultsDir, queuedFiles[0]!))

  // A relay restart while the server is still away loses nothing.
  await relay.destroy()
  relay = await startRelayHere()
  t.equal(relay.queuedResults, 1, 'the restarted relay has the result from disk')

  // The server returns on the same port and data dir: the relay replays, the server applies once.
  const second = capturingLogger('info')
  server = await startServerHere(second.logger)
  await relay.whenLinked()
  const done = await waitJob(api, job.id, 30_000)
  t.equal(done.state, 'succeeded')
  t.match(done.targets[0], { endpointId: ep.id, state: 'succeeded', exitCode: 0, progress: 1 })
  t.match(done.targets[0].output, 'finished')
  await eventually(() => relay.queuedResults === 0, 10_000)
  t.same(fs.readdirSync(resultsDir), [], 'acknowledged, so gone from the relay\'s disk')
  const figures = await relayFigures(api, relayId, r => r.connected === true && r.queuedResults === 0)
  t.equal(figures.queuedResults, 0)
  t.equal(first.lines.filter(l => l.includes(APPLIED)).length, 0, 'nothing applied before the outage')
  t.equal(second.lines.filter(l => l.includes(APPLIED)).length, 1, 'applied exactly once')
  const updatedAt = done.targets[0].updatedAt

  // A duplicate replay (the same result again, e.g. an ack lost in a crash) is acknowledged and ignored.
  await relay.destroy()
  fs.writeFileSync(join(resultsDir, queuedFiles[0]!), saved)
  relay = await startRelayHere()
  t.equal(relay.queuedResults, 1)
  await relay.whenLinked()
  await eventually(() => relay.queuedResults === 0, 10_000)
  t.equal(second.lines.filter(l => l.includes(APPLIED)).length, 1, 'still applied once')
  const after = await api.ok('GET', `/api/jobs/${job.id as string}`)
  t.equal(after.state, 'succeeded')
  t.equal(after.targets[0].updatedAt, updatedAt, 'the target did not change')
  t.equal(after.targets[0].exitCode, 0)
})

t.test('an agent offline at dispatch gets its job when it comes back', async t => {
  const { api } = await startSite(t, { relay: { statsIntervalMs: 100, cacheMinFreeBytes: 0 } })
  const body = randomBytes(64 * 1024)
  await uploadArtifact(api, 'later.bin', body)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'late' })
  const job = await api.ok('POST', '/api/jobs', { artifact: 'later.bin', endpoints: [ep.id] })
  const queued = await api.ok('GET', `/api/jobs/${job.id as string}`)
  t.equal(queued.state, 'queued')
  t.match(queued.targets[0], { endpointId: ep.id, state: 'queued', attempt: 0 })

  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const done = await waitJob(api, job.id)
  t.match(done.targets[0], { state: 'succeeded', attempt: 1, bytes: body.length })
  t.same(fs.readFileSync(join(agent.config.filesDir!, 'later.bin')), body)
})
