import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeResult, round, type BenchResult } from '../lib/report.js'
import { startPostgresServer } from '../lib/postgres.js'
import { startProc, dataDir, api, type Proc } from '../lib/procs.js'
import { startFleet, createJoinTokens, waitOnline, serverAgentCount, withCleanup, type Fleet } from '../lib/fleet.js'
import { cpuSeconds, sleep, freePort } from '../lib/sample.js'

export interface P7Options { agents: number, interval: number, stagger: number, replicas: number, steady: number, jobTargets: number, timeout: number }

/** haproxy in front of the replicas' HTTP ports, health-checked on /healthz every 500 ms; a refused connection is retried on another replica. */
function startHaproxy (port: number, backends: number[]): { child: ChildProcess, dir: string, stderr: () => string } {
  const dir = mkdtempSync(join(tmpdir(), 'rg-bench-haproxy-'))
  const config = join(dir, 'haproxy.cfg')
  writeFileSync(config, [
    'global',
    '    maxconn 9000',
    'defaults',
    '    mode http',
    '    timeout connect 2s',
    '    timeout client 1h',
    '    timeout server 1h',
    '    timeout tunnel 1h',
    '    retries 2',
    '    option redispatch 1',
    'frontend relaygate',
    `    bind 127.0.0.1:${port}`,
    '    default_backend replicas',
    'backend replicas',
    '    balance roundrobin',
    '    option httpchk GET /healthz',
    ...backends.map((p, i) => `    server replica${i} 127.0.0.1:${p} check inter 500ms fall 2 rise 2`),
    ''
  ].join('\n'))
  execFileSync('haproxy', ['-c', '-q', '-f', config])
  const child = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-2000) })
  return { child, dir, stderr: () => stderr }
}

/**
 * P7: N replicas behind haproxy on one PostgreSQL, agents through 3 relays
 * (each relay knows every replica and starts on a different one). Steady
 * state: server CPU per replica. Then a job to some agents and SIGKILL of
 * one replica: seconds until every relay is linked again and every agent is
 * online, the longest gap between answered API polls through haproxy, and
 * job results lost (targets that never finished).
 */
export async function run (o: P7Options): Promise<BenchResult> {
  const db = await startPostgresServer({ durable: true })
  const secretDir = mkdtempSync(join(tmpdir(), 'rg-bench-secret-'))
  const secretFile = join(secretDir, 'cluster-secret')
  writeFileSync(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 })
  const replicas: Array<{ proc: Proc, dir: string, port: number, id: string }> = []
  const relays: Proc[] = []
  const dirs: string[] = [secretDir]
  let haproxy: { child: ChildProcess, dir: string, stderr: () => string } | null = null
  let fleet: Fleet | null = null
  const cleanup = async (): Promise<void> => {
    await fleet?.stop()
    for (const r of relays) await r.stop()
    for (const r of replicas) await r.proc.stop()
    haproxy?.child.kill('SIGKILL')
    if (haproxy !== null) dirs.push(haproxy.dir)
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
    db.destroy()
  }
  return await withCleanup(cleanup, async () => {
    for (let i = 0; i < o.replicas; i++) {
      const dir = dataDir(`replica${i}`)
      dirs.push(dir)
      const port = await freePort()
      const proc = await startProc(`server${i}`, ['server', '--data-dir', dir, '--host', '127.0.0.1', '--http-port', String(port), '--https-port', '0',
        '--database-url', db.url, '--cluster-secret-file', secretFile])
      replicas.push({ proc, dir, port, id: proc.ready.replicaId as string })
    }
    const lbPort = await freePort()
    haproxy = startHaproxy(lbPort, replicas.map(r => r.port))
    const base = `http://127.0.0.1:${lbPort}`
    const token = readFileSync(replicas[0].proc.ready.adminTokenFile as string, 'utf8').trim()
    for (let tries = 0; ; tries++) {
      if (haproxy.child.exitCode !== null) throw new Error(`haproxy exited: ${haproxy.stderr()}`)
      try { await api(base, token, 'GET', '/healthz'); break } catch (err) { if (tries > 100) throw err; await sleep(100) }
    }
    await api(base, token, 'PATCH', '/api/settings', { checkinIntervalSeconds: o.interval })

    // Three relays, each with every replica's URL, starting on a different one.
    const urls = replicas.map(r => r.proc.ready.httpUrl as string)
    const groups: Array<{ tokens: string[], relayUrl: string }> = []
    const created = await createJoinTokens(base, token, o.agents)
    const perRelay = Math.ceil(o.agents / 3)
    for (let i = 0; i < 3; i++) {
      const r = await api(base, token, 'POST', '/api/relays', { name: `bench-relay-${i}` })
      const dir = dataDir(`relay${i}`)
      dirs.push(dir)
      const order = [...urls.slice(i % urls.length), ...urls.slice(0, i % urls.length)]
      const relay = await startProc(`relay${i}`, ['relay', ...order.flatMap(u => ['--server', u]), '--token', r.token, '--data-dir', dir, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off'])
      relays.push(relay)
      groups.push({ tokens: created.tokens.slice(i * perRelay, (i + 1) * perRelay), relayUrl: relay.ready.wsUrl as string })
    }
    fleet = await startFleet(groups, { staggerMs: o.stagger * 1000, ownDirs: true })
    const onlineSeconds = await waitOnline(base, token, o.agents, o.stagger * 1000 + 300_000)
    await sleep(o.interval * 2000)

    // Steady state: CPU per replica.
    const cpu0 = replicas.map(r => cpuSeconds(r.proc.child.pid!))
    const t0 = performance.now()
    await sleep(o.steady * 1000)
    const steadySeconds = (performance.now() - t0) / 1000
    const steadyCores = replicas.map((r, i) => round((cpuSeconds(r.proc.child.pid!) - cpu0[i]) / steadySeconds, 4))

    // A job to some agents (a small artifact, no command), then SIGKILL of the replica holding relay 0.
    const upload = await fetch(`${base}/api/artifacts/p7.bin`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body: randomBytes(64 * 1024) })
    if (upload.status !== 201) throw new Error(`upload: ${upload.status} ${await upload.text()}`)
    const page = await api(base, token, 'GET', `/api/endpoints?limit=${o.jobTargets}`) as Array<{ id: string }>
    const job = await api(base, token, 'POST', '/api/jobs', { artifact: 'p7.bin', endpoints: page.map(e => e.id) })
    const relayList = await api(base, token, 'GET', '/api/relays') as Array<{ id: string, replicaId: string }>
    const victimId = relayList[0].replicaId
    const victim = replicas.find(r => r.id === victimId)!
    const relaysOnVictim = relayList.filter(r => r.replicaId === victimId).length

    const points: Array<{ t: number, online: number, relinked: boolean }> = []
    let sampling = true
    let lastAnswer = performance.now()
    let longestGap = 0
    let failedPolls = 0
    const killedAt = performance.now()
    const sampler = (async () => {
      while (sampling) {
        const next = performance.now() + 250
        try {
          const list = await api(base, token, 'GET', '/api/relays') as Array<{ connected: boolean, agents: number, replicaId: string }>
          const now = performance.now()
          longestGap = Math.max(longestGap, now - lastAnswer)
          lastAnswer = now
          points.push({ t: (now - killedAt) / 1000, online: list.reduce((s, r) => s + r.agents, 0), relinked: list.every(r => r.connected && r.replicaId !== victimId) })
        } catch {
          failedPolls++
        }
        await sleep(Math.max(0, next - performance.now()))
      }
    })()
    victim.proc.child.kill('SIGKILL')
    let relinkedAt: number | null = null
    let onlineAt: number | null = null
    const deadline = performance.now() + o.timeout * 1000
    while (performance.now() < deadline && onlineAt === null) {
      const last = points.at(-1)
      if (last !== undefined && relinkedAt === null && last.relinked) relinkedAt = last.t
      if (last !== undefined && last.relinked && last.online >= o.agents) onlineAt = last.t
      await sleep(100)
    }
    await sleep(2000)
    sampling = false
    await sampler
    longestGap = Math.max(longestGap, performance.now() - lastAnswer)

    // Results: every target of the job must finish (succeeded), each recorded once.
    let view: { state: string, targets: Array<{ state: string, attempt: number }> } = await api(base, token, 'GET', `/api/jobs/${job.id as string}`)
    const jobDeadline = performance.now() + 120_000
    while (view.targets.some(x => x.state !== 'succeeded' && x.state !== 'failed') && performance.now() < jobDeadline) {
      await sleep(500)
      view = await api(base, token, 'GET', `/api/jobs/${job.id as string}`)
    }
    const lost = view.targets.filter(x => x.state !== 'succeeded').length
    const figures = {
      agentsOnlineInitially: o.agents,
      secondsToBringAllOnlineInitially: round(onlineSeconds, 1),
      steadyServerCpuCoresPerReplica: steadyCores,
      steadySeconds: round(steadySeconds, 1),
      relaysOnKilledReplica: relaysOnVictim,
      secondsUntilAllRelaysRelinked: relinkedAt === null ? null : round(relinkedAt, 2),
      secondsUntilAllAgentsOnline: onlineAt === null ? null : round(onlineAt, 2),
      longestApiGapSecondsThroughHaproxy: round(longestGap / 1000, 2),
      failedApiPolls: failedPolls,
      jobTargets: view.targets.length,
      jobResultsLost: lost,
      jobTargetsDispatchedMoreThanOnce: view.targets.filter(x => x.attempt > 1).length,
      agentsOnlineAtEnd: await serverAgentCount(base, token),
      agentsFatal: fleet.fatal()
    }
    const result: BenchResult = {
      scenario: 'p7-replica-failover',
      parameters: {
        replicas: o.replicas,
        store: 'PostgreSQL 15 on loopback, default durability (fsync on), its own cluster',
        loadBalancer: 'haproxy (Debian), roundrobin, GET /healthz every 500 ms, fall 2, retries 2 with redispatch',
        relays: 3,
        relayServers: 'each relay: --server for every replica, starting on a different one',
        agents: o.agents,
        checkinIntervalSeconds: o.interval,
        staggerSecondsInitialConnect: o.stagger,
        jobTargets: o.jobTargets,
        kill: 'SIGKILL to the replica holding the first relay, right after a job to jobTargets agents was created',
        sampling: 'GET /api/relays through haproxy every 250 ms (admin token): agents summed, every relay connected to a live replica'
      },
      figures,
      targets: {
        onlineAgain: { target: '<= 10 s from the kill until every agent is online again', met: onlineAt !== null && onlineAt <= 10 },
        apiGap: { target: 'the API through haproxy never silent for more than 2 s', met: longestGap / 1000 <= 2 },
        noResultLost: { target: '0 job results lost', met: lost === 0 }
      },
      notes: [
        'No baseline run: the figures compared are the issue\'s targets.',
        'Every process (PostgreSQL, haproxy, replicas, relays, agent generators) shares the machine\'s 2 cores.'
      ]
    }
    writeResult(result)
    return result
  })
}
