import { fork, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, existsSync, rmSync, writeFileSync, statfsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { writeResult, round, barChart, type BenchResult } from '../lib/report.js'
import { startProc, api, type Proc } from '../lib/procs.js'
import { startBenchTarget } from '../lib/target.js'
import { BlackholeForwarder } from '../lib/blackhole.js'
import { freePort, rssBytes, sleep } from '../lib/sample.js'

/**
 * P8: a chaos soak. Real agents (in host processes of `agentsPerHost`) behind
 * three relays run jobs with commands every few seconds and serve proxied
 * requests while a driver injects faults at random: SIGKILL and restart of
 * relays, agent hosts and the server; a link that turns into a black hole
 * (no FIN); a relay data dir on a small tmpfs that fills up. Then faults
 * stop, and everything must settle: every job target final, no result lost
 * or applied twice, each command run once per attempt the server counts,
 * every agent online, RSS bounded. Anomalies must be 0.
 */
export interface SoakOptions { durationS: number, agents: number, agentsPerHost: number, jobEveryS: number, settleS: number }

type FaultKind = 'kill-relay' | 'kill-agent-host' | 'kill-server' | 'blackhole' | 'fill-disk'

interface Host { index: number, plan: string, child: ChildProcess | null, online: number, dirs: string[] }

const RSS_LIMIT_MB: Record<string, number> = { server: 600, relay: 400, 'agent-host': 600 }

export async function run (o: SoakOptions): Promise<BenchResult> {
  const root = mkdtempSync(join(tmpdir(), 'rg-bench-p8-'))
  const logs = join(root, 'logs')
  mkdirSync(logs)
  process.env.BENCH_CHILD_STDOUT_DIR = logs
  const serverDir = join(root, 'server')
  const serverPort = await freePort()
  let serverRuns = 0
  const startServer = async (): Promise<Proc> => await startProc(`server-${serverRuns++}`, ['server', '--data-dir', serverDir, '--host', '127.0.0.1', '--http-port', String(serverPort), '--https-port', 'off'], { env: { RELAYGATE_LOG_LEVEL: 'info' } })
  let server = await startServer()
  const base = server.ready.httpUrl as string
  const token = readFileSync(server.ready.adminTokenFile as string, 'utf8').trim()
  const target = await startBenchTarget()
  const cleanups: Array<() => Promise<void> | void> = [async () => await target.close()]
  const smallDisk = mountSmallDisk(join(root, 'relay2-disk'), cleanups)

  // Three relays on fixed ports, each behind a forwarder that can turn into a black hole.
  const relays: Array<{ proc: Proc, port: number, dir: string, relayToken: string, runs: number, fwd: BlackholeForwarder }> = []
  const startRelay = async (i: number): Promise<Proc> => {
    const r = relays[i]
    return await startProc(`relay${i}-${r.runs++}`, ['relay', '--server', base, '--token', r.relayToken, '--data-dir', r.dir, '--host', '127.0.0.1', '--port', String(r.port), '--tls-port', 'off', '--cache-max-bytes', '1GiB'], { env: { RELAYGATE_LOG_LEVEL: 'warn' } })
  }
  for (let i = 0; i < 3; i++) {
    const created = await api(base, token, 'POST', '/api/relays', { name: `soak-relay-${i}` })
    const port = await freePort()
    const fwd = new BlackholeForwarder(port)
    await fwd.listen()
    const dir = i === 2 && smallDisk !== null ? join(smallDisk, 'relay') : join(root, `relay${i}`)
    relays.push({ proc: null as unknown as Proc, port, dir, relayToken: created.token, runs: 0, fwd })
    relays[i].proc = await startRelay(i)
    cleanups.push(async () => { await relays[i].proc.stop(); await fwd.close() })
  }
  cleanups.push(async () => { await server.stop() })

  // Endpoints and agent hosts: each host's agents prefer one relay and fail over to the others.
  const endpointIds: string[] = []
  const hosts: Host[] = []
  const workerJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'agent-host.js')
  for (let h = 0; h * o.agentsPerHost < o.agents; h++) {
    const agents = []
    for (let i = h * o.agentsPerHost; i < Math.min(o.agents, (h + 1) * o.agentsPerHost); i++) {
      const ep = await api(base, token, 'POST', '/api/endpoints', { name: `soak-${i}`, tunnelTarget: target.url })
      endpointIds.push(ep.id)
      agents.push({ joinToken: ep.joinToken, dataDir: join(root, 'agents', ep.id) })
    }
    const order = [h % 3, (h + 1) % 3, (h + 2) % 3].map(i => `ws://127.0.0.1:${relays[i].fwd.port}`)
    const plan = join(root, `host-${h}.json`)
    writeFileSync(plan, JSON.stringify({ relays: order, tunnelTarget: target.url, agents }))
    hosts.push({ index: h, plan, child: null, online: 0, dirs: agents.map(a => a.dataDir) })
  }
  const startHost = (host: Host): void => {
    const child = fork(workerJs, [host.plan], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] })
    host.child = child
    host.online = 0
    child.on('message', (m: { t: string, online: number }) => { if (m.t === 'status') host.online = m.online })
  }
  hosts.forEach(startHost)
  cleanups.push(async () => {
    await Promise.all(hosts.map(async h => {
      const c = h.child
      if (c === null || c.exitCode !== null || c.signalCode !== null) return
      const exited = new Promise(resolve => c.once('exit', resolve))
      c.send({ t: 'stop' })
      const timer = setTimeout(() => c.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }))
  })

  const stats = {
    faults: {} as Record<FaultKind, number>,
    jobsCreated: 0,
    jobCreateRefused: 0,
    proxied: { ok: 0, failed: 0 },
    rssMaxMb: {} as Record<string, number>
  }
  const artifacts = [{ name: 'small.bin', size: 64 * 1024 }, { name: 'medium.bin', size: 6 * 1024 * 1024 }]
  try {
    for (const a of artifacts) await upload(base, token, a.name, randomBytes(a.size))
    const allOnline = async (): Promise<boolean> => (await serverOnline(base, token)) === o.agents
    await until(allOnline, 180_000, 'every agent online before the soak')

    const jobs: string[] = []
    const soakEnd = Date.now() + o.durationS * 1000
    // RSS of every process, every 5 s, through the soak and the settling.
    const rssTimer = setInterval(() => {
      const pids: Array<[string, number | undefined]> = [['server', server.child.pid], ...relays.map(r => ['relay', r.proc.child.pid] as [string, number | undefined]), ...hosts.map(h => ['agent-host', h.child?.pid] as [string, number | undefined])]
      for (const [kind, pid] of pids) {
        if (pid === undefined) continue
        let mb = 0
        try { mb = rssBytes(pid) / 1024 / 1024 } catch {} // killed a moment ago
        if (mb > 0) stats.rssMaxMb[kind] = Math.max(stats.rssMaxMb[kind] ?? 0, round(mb, 0))
      }
    }, 5000)
    cleanups.push(() => clearInterval(rssTimer))
    const loops = [
      loop(soakEnd, o.jobEveryS * 1000, async () => {
        const endpoints = pick(endpointIds, Math.min(10, endpointIds.length))
        const artifact = artifacts[Math.random() < 0.8 ? 0 : 1].name
        try {
          const job = await api(base, token, 'POST', '/api/jobs', { artifact, endpoints, run: ['sh', '-c', 'echo "$RELAYGATE_JOB_ID" >> ../ran.log'], deadlineSeconds: 3600 })
          jobs.push(job.id)
          stats.jobsCreated++
        } catch { stats.jobCreateRefused++ }
      }),
      loop(soakEnd, 500, async () => {
        const ep = endpointIds[Math.floor(Math.random() * endpointIds.length)]
        const ok = await fetch(`${base}/api/endpoints/${ep}/proxy/small`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
          .then(async r => { await r.arrayBuffer(); return r.ok }, () => false)
        stats.proxied[ok ? 'ok' : 'failed']++
      }),
      (async () => {
        await sleep(5000)
        // A shuffled bag: random order, and every kind comes up once per round.
        let bag: FaultKind[] = []
        while (Date.now() < soakEnd - 20_000) {
          if (bag.length === 0) bag = pick<FaultKind>(['kill-relay', 'kill-agent-host', 'kill-server', 'blackhole', ...(smallDisk !== null ? ['fill-disk' as const] : [])], 5)
          const kind = bag.pop()!
          stats.faults[kind] = (stats.faults[kind] ?? 0) + 1
          process.stderr.write(`p8: ${new Date().toISOString()} fault ${kind}\n`)
          await inject(kind)
          await sleep(5000 + Math.random() * 10_000)
        }
      })()
    ]

    async function inject (kind: FaultKind): Promise<void> {
      const down = 1000 + Math.random() * 3000
      if (kind === 'kill-relay') {
        const i = Math.floor(Math.random() * 3)
        relays[i].proc.child.kill('SIGKILL')
        await sleep(down)
        relays[i].proc = await startRelay(i)
      } else if (kind === 'kill-agent-host') {
        const host = hosts[Math.floor(Math.random() * hosts.length)]
        host.child?.kill('SIGKILL')
        await sleep(down)
        startHost(host)
      } else if (kind === 'kill-server') {
        server.child.kill('SIGKILL')
        await sleep(down + 1000)
        server = await startServer()
      } else if (kind === 'blackhole') {
        const ms = 20_000 + Math.random() * 20_000
        relays[Math.floor(Math.random() * 3)].fwd.blackhole(ms)
        await sleep(ms)
      } else {
        const ballast = join(smallDisk!, 'ballast')
        const st = statfsSync(smallDisk!)
        writeFileSync(ballast, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 4096)))
        await sleep(30_000)
        rmSync(ballast, { force: true })
      }
    }

    await Promise.all(loops)
    // Settle: faults have stopped; every agent back online and every target final.
    const settleStart = Date.now()
    const finalJobs = async (): Promise<any[]> => await Promise.all(jobs.map(async id => await api(base, token, 'GET', `/api/jobs/${id}`)))
    await until(async () => (await allOnline()) && (await finalJobs()).every(j => j.state === 'succeeded' || j.state === 'failed'), o.settleS * 1000, 'settle').catch(() => {})
    const settleSeconds = (Date.now() - settleStart) / 1000
    const views = await finalJobs()
    const anomalies = checkAll(views, hosts, logs, await serverOnline(base, token), o.agents, stats.rssMaxMb)
    const targets = views.flatMap(j => j.targets as any[])
    const failedByCode: Record<string, number> = {}
    for (const tg of targets) if (tg.state === 'failed') failedByCode[tg.error?.code ?? '?'] = (failedByCode[tg.error?.code ?? '?'] ?? 0) + 1
    const faultsInjected = Object.values(stats.faults).reduce((a, b) => a + b, 0)
    const result: BenchResult = {
      scenario: 'p8-chaos-soak',
      parameters: { ...o, relays: 3, agentHosts: hosts.length, smallDisk: smallDisk !== null ? '32 MiB tmpfs under relay 2' : 'not mounted (needs root): no disk-fill faults', rssLimitsMb: RSS_LIMIT_MB },
      figures: {
        faultsInjected,
        faultsByKind: stats.faults,
        jobsCreated: stats.jobsCreated,
        jobCreatesRefused: stats.jobCreateRefused,
        targets: targets.length,
        targetsSucceeded: targets.filter(tg => tg.state === 'succeeded').length,
        targetsFailedByCode: failedByCode,
        commandRuns: anomalies.runs,
        proxiedRequests: stats.proxied,
        settleSeconds: round(settleSeconds, 1),
        rssMaxMb: stats.rssMaxMb,
        anomalies: anomalies.count,
        anomalyDetails: anomalies.details.slice(0, 50)
      },
      baseline: {},
      ratios: {},
      targets: { anomalies: { target: '0', met: anomalies.count === 0 } }
    }
    writeResult(result, barChart('P8: faults injected during the soak', 'faults', Object.keys(stats.faults), [
      { name: 'faults', values: Object.values(stats.faults), color: '#dc2626' }
    ]))
    return result
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {})
    rmSync(root, { recursive: true, force: true })
  }
}

/**
 * Each job target final; each command run at most once per attempt the
 * server counts and at least once if it succeeded; each result applied once
 * (the server's logs); every agent online; RSS within the limits.
 */
function checkAll (views: any[], hosts: Host[], logs: string, online: number, agents: number, rss: Record<string, number>): { count: number, details: string[], runs: number } {
  const details: string[] = []
  const runs = new Map<string, number>()
  for (const host of hosts) {
    for (const dir of host.dirs) {
      const file = join(dir, 'ran.log')
      if (!existsSync(file)) continue
      const endpointId = dir.split('/').pop()!
      for (const jobId of readFileSync(file, 'utf8').split('\n').filter(l => l !== '')) runs.set(`${jobId} ${endpointId}`, (runs.get(`${jobId} ${endpointId}`) ?? 0) + 1)
    }
  }
  const applied = new Map<string, number>()
  for (const f of readdirSync(logs).filter(f => f.startsWith('server-'))) {
    for (const line of readFileSync(join(logs, f), 'utf8').split('\n')) {
      if (!line.includes('"job result applied"')) continue
      const l = JSON.parse(line) as { jobId: string, endpointId: string }
      applied.set(`${l.jobId} ${l.endpointId}`, (applied.get(`${l.jobId} ${l.endpointId}`) ?? 0) + 1)
    }
  }
  for (const job of views) {
    for (const tg of job.targets) {
      const key = `${job.id as string} ${tg.endpointId as string}`
      const ran = runs.get(key) ?? 0
      if (tg.state !== 'succeeded' && tg.state !== 'failed') details.push(`${key}: not final (${tg.state as string})`)
      if (tg.state === 'failed') details.push(`${key}: failed ${tg.error?.code as string}: ${tg.error?.message as string}`)
      if (ran > tg.attempt) details.push(`${key}: the command ran ${ran} times in ${tg.attempt as number} attempts`)
      if (tg.state === 'succeeded' && ran === 0) details.push(`${key}: succeeded without its command running`)
      if ((applied.get(key) ?? 0) > 1) details.push(`${key}: result applied ${applied.get(key)!} times`)
    }
  }
  if (online !== agents) details.push(`${agents - online} agents not online at the end`)
  for (const [kind, mb] of Object.entries(rss)) if (mb > RSS_LIMIT_MB[kind]) details.push(`${kind} RSS ${mb} MB above ${RSS_LIMIT_MB[kind]} MB`)
  return { count: details.length, details, runs: [...runs.values()].reduce((a, b) => a + b, 0) }
}

/** A 32 MiB tmpfs (root only), unmounted by a cleanup; null when it cannot be mounted. */
function mountSmallDisk (dir: string, cleanups: Array<() => Promise<void> | void>): string | null {
  mkdirSync(dir, { recursive: true })
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', dir], { stdio: 'ignore' })
  } catch {
    return null
  }
  cleanups.push(() => { execFileSync('umount', ['-l', dir], { stdio: 'ignore' }) })
  return dir
}

async function upload (base: string, token: string, name: string, body: Buffer): Promise<void> {
  const res = await fetch(`${base}/api/artifacts/${name}`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body })
  if (!res.ok) throw new Error(`upload ${name}: ${res.status}`)
}

async function serverOnline (base: string, token: string): Promise<number> {
  try {
    const relays = await api(base, token, 'GET', '/api/relays') as Array<{ agents?: number }>
    return relays.reduce((s, r) => s + (r.agents ?? 0), 0)
  } catch {
    return -1
  }
}

/** Runs `body` every `everyMs` until `end` (errors are the body's business). */
async function loop (end: number, everyMs: number, body: () => Promise<void>): Promise<void> {
  while (Date.now() < end) {
    await body().catch(() => {})
    await sleep(everyMs)
  }
}

async function until (check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(1000)
  }
}

function pick<T> (all: T[], n: number): T[] {
  const copy = [...all]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j], copy[i]]
  }
  return copy.slice(0, n)
}
