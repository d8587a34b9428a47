import t from 'tap'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startRelay, startAgent, eventually, tempDir, Api, type TapLike } from '../helpers/cluster.js'
import { databaseFor } from '../helpers/postgres.js'
import { start, readyFile, type Child } from '../helpers/child.js'

/**
 * Replicas as real processes (dist/, `npm run build` first): a crash is
 * SIGKILL, a rolling restart is SIGTERM and a new process.
 */
interface Replica { child: Child, ready: { httpUrl: string, httpsUrl: string, replicaId: string, peerUrl: string, adminTokenFile: string }, api: Api, dir: string }

async function startReplica (t: TapLike, dir: string, databaseUrl: string, secretFile: string, httpPort = 0, logLevel = 'warn'): Promise<Replica> {
  const ready = join(dir, `ready-${Date.now()}-${Math.random()}.json`)
  const child = start(t, ['server', '--data-dir', dir, '--host', '127.0.0.1', '--http-port', String(httpPort), '--https-port', '0',
    '--database-url', databaseUrl, '--cluster-secret-file', secretFile, '--ready-file', ready, '--log-level', logLevel])
  const info = await readyFile(child, ready, 30_000)
  return { child, ready: info, api: new Api(info.httpUrl, readFileSync(info.adminTokenFile, 'utf8').trim()), dir }
}

async function cluster (t: TapLike, n: number, logLevel = 'warn'): Promise<{ replicas: Replica[], databaseUrl: string, secretFile: string, base: string }> {
  const base = tempDir(t)
  const databaseUrl = await databaseFor(base)
  const secretFile = join(base, 'cluster-secret')
  writeFileSync(secretFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const replicas: Replica[] = []
  for (let i = 0; i < n; i++) replicas.push(await startReplica(t, join(base, `replica-${i}`), databaseUrl, secretFile, 0, logLevel))
  return { replicas, databaseUrl, secretFile, base }
}

async function startTarget (t: TapLike): Promise<string> {
  const server = http.createServer((req, res) => res.end(JSON.stringify({ path: req.url })))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

t.test('SIGKILL of a replica: its relays re-link elsewhere, every endpoint is online again, no job result lost or applied twice', async t => {
  const { replicas: [a, b, c] } = await cluster(t, 3)
  const urls = [a, b, c].map(r => r.ready.httpUrl)
  const r1 = await a.api.ok('POST', '/api/relays', { name: 'site-1' })
  const r2 = await a.api.ok('POST', '/api/relays', { name: 'site-2' })
  // Each relay knows every replica; relay 1 starts on B, relay 2 on C.
  const relay1 = await startRelay(t, [urls[1], urls[2], urls[0]], r1.token)
  const relay2 = await startRelay(t, [urls[2], urls[0], urls[1]], r2.token)
  await relay1.whenLinked()
  await relay2.whenLinked()
  const target = await startTarget(t)
  const e1 = await a.api.ok('POST', '/api/endpoints', { name: 'one', tunnelTarget: target })
  const e2 = await a.api.ok('POST', '/api/endpoints', { name: 'two', tunnelTarget: target })
  startAgent(t, e1.joinToken, { relays: [relay1.wsUrl!], allowExec: true })
  startAgent(t, e2.joinToken, { relays: [relay2.wsUrl!], allowExec: true })
  await eventually(async () => (await a.api.ok('GET', '/api/endpoints') as Array<{ status: string }>).every(e => e.status === 'online'))
  t.equal((await a.api.ok('GET', `/api/endpoints/${e1.id}/proxy/before`)).path, '/before', 'tunnel through B, asked at A')

  // A job that is still running on both agents when B dies.
  const upload = await fetch(`${a.ready.httpUrl}/api/artifacts/slow.sh`, { method: 'PUT', headers: { authorization: `Bearer ${a.api.token}` }, body: 'sleep 2; echo done' })
  t.equal(upload.status, 201)
  const job = await a.api.ok('POST', '/api/jobs', { artifact: 'slow.sh', endpoints: [e1.id, e2.id], run: ['sh', 'slow.sh'] })
  await eventually(async () => (await a.api.ok('GET', `/api/jobs/${job.id}`)).targets.every((x: { state: string }) => x.state === 'running'), 15_000)

  const killedAt = Date.now()
  b.child.proc.kill('SIGKILL')
  await b.child.closed
  await eventually(async () => {
    const relays = await c.api.ok('GET', '/api/relays') as Array<{ id: string, connected: boolean, replicaId: string }>
    return relays.every(r => r.connected && r.replicaId !== b.ready.replicaId)
  }, 20_000)
  await eventually(async () => (await c.api.ok('GET', '/api/endpoints') as Array<{ status: string }>).every(e => e.status === 'online'), 20_000)
  t.comment(`all relays re-linked and every endpoint online ${Date.now() - killedAt} ms after SIGKILL`)

  const view = await eventually(async () => {
    const v = await c.api.ok('GET', `/api/jobs/${job.id}`)
    return v.state === 'succeeded' || v.state === 'failed' ? v : undefined
  }, 30_000)
  t.equal(view!.state, 'succeeded', JSON.stringify(view!.targets))
  t.match(view!.targets.map((x: { output?: string }) => x.output), [/done/, /done/], 'each result recorded')
  // The tunnel to the agent whose relay moved re-opens on the next request.
  const again = await eventually(async () => {
    const res = await a.api.request('GET', `/api/endpoints/${e1.id}/proxy/after`)
    return res.status === 200 ? res.body : undefined
  }, 20_000)
  t.equal(again!.path, '/after', 'the tunnel re-opened through the relay\'s new replica')
})

t.test('a rolling restart of every replica under a running job drops no result', async t => {
  const { replicas, databaseUrl, secretFile } = await cluster(t, 3, 'info')
  const urls = replicas.map(r => r.ready.httpUrl)
  const r1 = await replicas[0].api.ok('POST', '/api/relays', { name: 'site' })
  // Restarted replicas keep their HTTP ports: the relay's list of URLs stays true.
  const relay = await startRelay(t, urls, r1.token)
  await relay.whenLinked()
  const endpoints: Array<{ id: string }> = []
  for (let i = 0; i < 3; i++) {
    const e = await replicas[0].api.ok('POST', '/api/endpoints', { name: `n${i}` })
    startAgent(t, e.joinToken, { relays: [relay.wsUrl!], allowExec: true })
    endpoints.push(e)
  }
  await eventually(async () => (await replicas[0].api.ok('GET', '/api/endpoints') as Array<{ status: string }>).every(e => e.status === 'online'))
  const upload = await fetch(`${urls[0]}/api/artifacts/steps.sh`, { method: 'PUT', headers: { authorization: `Bearer ${replicas[0].api.token}` }, body: 'sleep 4; echo done' })
  t.equal(upload.status, 201)
  const job = await replicas[0].api.ok('POST', '/api/jobs', { artifact: 'steps.sh', endpoints: endpoints.map(e => e.id), run: ['sh', 'steps.sh'] })

  // One replica at a time: SIGTERM (its relays are told to go away), then a new process on the same ports.
  const stopped: Replica[] = []
  for (let i = 0; i < replicas.length; i++) {
    const old = replicas[i]
    stopped.push(old)
    old.child.proc.kill('SIGTERM')
    const exit = await old.child.closed
    t.equal(exit.code, 0, `replica ${i} stopped cleanly`)
    const port = Number(new URL(old.ready.httpUrl).port)
    replicas[i] = await startReplica(t, old.dir, databaseUrl, secretFile, port, 'info')
    await eventually(() => relay.linked, 15_000)
  }
  // Seen once in CI (1 of 5 runs, 2026-12-05): the job not finished 40 s after the restarts; say where it stood then.
  let last: unknown
  const view = await eventually(async () => {
    const v = await replicas[1].api.ok('GET', `/api/jobs/${job.id}`)
    last = v.targets
    return v.state === 'succeeded' || v.state === 'failed' ? v : undefined
  }, 40_000).catch((err: Error) => {
    // Every replica's log lines about the job (they log at info here), oldest process first.
    const lines = [...stopped, ...replicas].flatMap(r => (r.child.stdout + r.child.stderr).split('\n').filter(l => l.includes(job.id) || /relay|job|presence/i.test(l)).slice(-60))
    throw new Error(`${err.message}; the job's targets then: ${JSON.stringify(last)}; replica logs:\n${lines.join('\n')}`)
  })
  t.equal(view!.state, 'succeeded', JSON.stringify(view!.targets))
  t.equal(view!.targets.length, 3)
  await eventually(async () => (await replicas[2].api.ok('GET', '/api/endpoints') as Array<{ status: string }>).every(e => e.status === 'online'), 20_000)
})
