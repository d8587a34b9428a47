import t from 'tap'
import fs from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { startServer, startRelay, startAgent, eventually, tempDir, type TapLike } from '../helpers/cluster.js'
import { sha256, uploadArtifact, waitJob, relayFigures } from '../helpers/artifacts.js'

/**
 * A relay whose data dir is a real 16 MiB tmpfs that fills up: artifacts are
 * streamed through without being kept, results it cannot store are refused
 * with an answer the agent acts on, and every job target ends (or says why
 * it waits). Needs root for mount(8), which CI has.
 */

const MiB = 1024 * 1024

function smallDisk (t: TapLike, size: string): string {
  const dir = join(tempDir(t), 'small-disk')
  fs.mkdirSync(dir)
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  t.teardown(() => { execFileSync('umount', ['-l', dir]) })
  return dir
}

/**
 * Fills the file system of `dir` with a ballast file, leaving about `leave`
 * bytes; returns a function that removes it. Written a MiB at a time: when
 * something else writes meanwhile (a relay's fill), the disk may be full
 * before the ballast is, and that is what was asked for (ENOSPC ends it).
 */
function fillUp (dir: string, leave: number): () => void {
  const ballast = join(dir, 'ballast')
  const st = fs.statfsSync(dir)
  let left = Math.max(0, st.bavail * st.bsize - leave)
  const fd = fs.openSync(ballast, 'w')
  try {
    const chunk = Buffer.alloc(MiB)
    while (left > 0) {
      left -= fs.writeSync(fd, chunk, 0, Math.min(left, MiB))
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    fs.closeSync(fd)
  }
  return () => fs.rmSync(ballast, { force: true })
}

async function site (t: TapLike, disk: string): Promise<{ api: any, relayId: string }> {
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'small-disk' })
  await startRelay(t, server.httpUrl, created.token, { statsIntervalMs: 100, cacheMinFreeBytes: 0, dataDir: join(disk, 'relay') })
  return { api, relayId: created.id }
}

t.test('an artifact larger than the free disk is streamed through, not kept (every fill aborted at the disk size)', async t => {
  const disk = smallDisk(t, '16m')
  const { api, relayId } = await site(t, disk)
  const body = randomBytes(24 * MiB + 7)
  t.equal((await uploadArtifact(api, 'big.bin', body)).status, 201)
  const sites = []
  for (let i = 0; i < 2; i++) {
    const ep = await api.ok('POST', '/api/endpoints', { name: `a${i}` })
    const agent = startAgent(t, ep.joinToken)
    await agent.whenOnline()
    sites.push({ ep, agent })
  }
  const job = await api.ok('POST', '/api/jobs', { artifact: 'big.bin', endpoints: sites.map(s => s.ep.id) })
  const done = await waitJob(api, job.id, 60_000)
  t.equal(done.state, 'succeeded')
  for (const { ep, agent } of sites) {
    t.equal(sha256(fs.readFileSync(join(agent.config.filesDir!, 'big.bin'))), sha256(body), `${ep.name as string} placed it intact`)
  }
  const figures = await relayFigures(api, relayId, r => r.cache?.misses >= 2)
  t.equal(figures.cache.entries, 0, 'not kept')
  t.equal(figures.cache.bytesFetched, 2 * body.length, 'every agent\'s bytes came through from the server')
})

t.test('a result the relay cannot store is refused; the agent sends it again while connected; the target shows why it waits, then ends', async t => {
  const disk = smallDisk(t, '8m')
  const { api } = await site(t, disk)
  const body = randomBytes(64 * 1024)
  t.equal((await uploadArtifact(api, 'small.bin', body)).status, 201)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'waits' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const unfill = fillUp(disk, 0)
  t.teardown(unfill)
  const job = await api.ok('POST', '/api/jobs', { artifact: 'small.bin', endpoints: [ep.id] })
  const waiting = await eventually(async () => {
    const view = await api.ok('GET', `/api/jobs/${job.id}`)
    return view.targets[0].error?.code === 'RG_ERR_DISK_FULL' ? view : undefined
  }, 20_000)
  t.not(waiting.targets[0].state, 'failed', 'not final: the result is still on its way')
  t.match(waiting.targets[0].error.message, /the relay could not store this result/)
  t.equal(sha256(fs.readFileSync(join(agent.config.filesDir!, 'small.bin'))), sha256(body), 'the artifact was placed (served through)')
  unfill()
  const done = await waitJob(api, job.id, 30_000)
  t.match(done.targets[0], { state: 'succeeded' })
  t.equal(done.targets[0].error, undefined, 'the reason it waited is gone')
})

t.test('a disk that fills during a fill: the fill stops, and the agent\'s next try is streamed through (the agent never got past the disk size)', async t => {
  const disk = smallDisk(t, '256m')
  const { api, relayId } = await site(t, disk)
  const body = randomBytes(160 * MiB)
  t.equal((await uploadArtifact(api, 'grows.bin', body)).status, 201)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'during' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const tmp = join(disk, 'relay', 'cache', 'tmp')
  const job = await api.ok('POST', '/api/jobs', { artifact: 'grows.bin', endpoints: [ep.id] })
  // Once the fill has written something, something else takes the rest of the disk.
  await eventually(() => {
    const files = fs.existsSync(tmp) ? fs.readdirSync(tmp) : []
    return files.some(f => fs.statSync(join(tmp, f)).size > 8 * MiB) || undefined
  }, 20_000, 2)
  const unfill = fillUp(disk, 0)
  t.teardown(unfill)
  const done = await waitJob(api, job.id, 90_000)
  t.match(done.targets[0], { state: 'succeeded', bytes: body.length })
  t.equal(sha256(fs.readFileSync(join(agent.config.filesDir!, 'grows.bin'))), sha256(body), 'placed intact')
  const figures = await relayFigures(api, relayId, r => r.cache !== undefined)
  t.equal(figures.cache.entries, 0, 'not kept')
})
