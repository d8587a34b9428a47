import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { startSite, startAgent } from '../helpers/cluster.js'
import { sha256, uploadArtifact, waitJob, relayFigures } from '../helpers/artifacts.js'

const AGENTS = Number(process.env.FAN_AGENTS ?? 20)
const SIZE = Number(process.env.FAN_MB ?? 20) * 1024 * 1024

t.test(`${AGENTS} agents on one relay fetch one ${SIZE >> 20} MB artifact at once: one upstream transfer`, async t => {
  const { api, server, relay, relayId } = await startSite(t, { relay: { statsIntervalMs: 100, cacheMinFreeBytes: 0 } })
  const body = randomBytes(SIZE)
  const digest = sha256(body)
  const up = await uploadArtifact(api, 'fleet.bin', body)
  t.equal(up.status, 201)

  const endpoints = await Promise.all(Array.from({ length: AGENTS }, async (_, i) => await api.ok('POST', '/api/endpoints', { name: `fan-${i}` })))
  const agents = endpoints.map(ep => startAgent(t, ep.joinToken))
  await Promise.all(agents.map(a => a.whenOnline()))

  const started = Date.now()
  const job = await api.ok('POST', '/api/jobs', { artifact: 'fleet.bin', endpoints: endpoints.map(e => e.id), path: 'drop/fleet.bin' })
  const done = await waitJob(api, job.id, 60_000)
  const elapsed = Date.now() - started
  t.comment(`${AGENTS} x ${SIZE >> 20} MB delivered in ${elapsed} ms`)

  t.equal(done.state, 'succeeded')
  t.equal(done.targets.length, AGENTS)
  for (const target of done.targets) t.match(target, { state: 'succeeded', progress: 1, bytes: SIZE, attempt: 1 }, `target ${target.endpointId as string}`)
  for (const agent of agents) {
    t.equal(sha256(readFileSync(join(agent.config.filesDir!, 'drop/fleet.bin'))), digest, 'placed file verifies')
  }

  // One upstream transfer: the server sent the bytes once, the relay fetched them once.
  t.equal(server.artifacts.bytesServed, SIZE, 'server served the artifact once')
  const stats = relay.cache.getStats()
  t.equal(stats.bytesFetched, SIZE, 'relay fetched the artifact once')
  t.equal(stats.bytesServed, AGENTS * SIZE, 'relay served it to every agent')
  t.equal(stats.hits + stats.misses, AGENTS, 'one request per agent')
  t.ok(stats.misses >= 1, `misses counted (${stats.misses} joined the fill, ${stats.hits} hit the finished file)`)
  t.match(stats, { entries: 1, bytesUsed: SIZE, fillsInProgress: 0 })
  const figures = await relayFigures(api, relayId, r => r.cache?.bytesServed === AGENTS * SIZE)
  t.match(figures.cache, { bytesFetched: SIZE, misses: stats.misses, hits: stats.hits, entries: 1 })
})
