import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { api, startProc, dataDir, type Proc } from './procs.js'
import { sleep, freePort } from './sample.js'

/** Agents per generator process: each agent holds one socket, and a process may open 20,000 files. */
export const AGENTS_PER_PROCESS = 5000

interface WorkerState { child: ChildProcess, started: number, online: number, fatal: number, answers: number, loopDelay?: { p99Ms: number, maxMs: number } }

export interface Fleet {
  readonly size: number
  readonly pids: number[]
  /** Agents online now, as the agents themselves report. */
  online: () => number
  fatal: () => number
  answers: () => number
  /** Start or stop recording check-in round trips in the generators. */
  measure: (on: boolean) => void
  /** Recorded round trips (ms) from every generator, then cleared. */
  collectRtts: () => Promise<number[]>
  /** Each generator's event-loop delay while measuring (from the last collectRtts). */
  loopDelays: () => Array<{ p99Ms: number, maxMs: number }>
  stop: () => Promise<void>
}

/**
 * Join tokens for `n` agents: one endpoint per agent, or cluster endpoints of
 * up to 64 agents each (`perEndpoint` > 1), created with bounded concurrency.
 */
export async function createJoinTokens (base: string, token: string, n: number, perEndpoint = 1, concurrency = 16): Promise<{ tokens: string[], endpoints: number, seconds: number }> {
  const t0 = performance.now()
  const endpoints = Math.ceil(n / perEndpoint)
  const joins: string[] = new Array(endpoints)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, endpoints) }, async () => {
    while (next < endpoints) {
      const i = next++
      const body: Record<string, unknown> = { name: `bench-${i}` }
      if (perEndpoint > 1) body.maxAgents = perEndpoint
      joins[i] = (await api(base, token, 'POST', '/api/endpoints', body)).joinToken as string
    }
  }))
  const tokens = Array.from({ length: n }, (_, i) => joins[Math.floor(i / perEndpoint)])
  return { tokens, endpoints, seconds: (performance.now() - t0) / 1000 }
}

/**
 * Spawns generator processes (dist/bench/lib/fleet-worker.js), each running up
 * to AGENTS_PER_PROCESS real agents, hands them their join tokens and relay URL
 * over IPC, and starts the agents staggered over `staggerMs`.
 * `groups` lets agents go to different relays: each group is split on its own.
 * `ownDirs` gives every agent a data dir (and so a files dir) of its own, as
 * jobs need: agents sharing one would download into the same part file.
 * `units` runs every agent as its systemd unit would, installed from that
 * build (self-updates: bench/lib/unit-agent.ts).
 */
export async function startFleet (groups: Array<{ tokens: string[], relayUrl: string }>, options: { staggerMs: number, perProcess?: number, ownDirs?: boolean, units?: { path: string, version: string } }): Promise<Fleet> {
  const perProcess = options.perProcess ?? AGENTS_PER_PROCESS
  const dataDir = mkdtempSync(join(tmpdir(), 'rg-bench-fleet-'))
  const workerJs = join(dirname(fileURLToPath(import.meta.url)), 'fleet-worker.js')
  const workers: WorkerState[] = []
  const plans: Array<{ tokens: string[], relayUrl: string }> = []
  for (const g of groups) {
    for (let i = 0; i < g.tokens.length; i += perProcess) plans.push({ tokens: g.tokens.slice(i, i + perProcess), relayUrl: g.relayUrl })
  }
  const pendingRtts: Array<(s: Float64Array) => void> = []
  const stop = async (): Promise<void> => {
    await Promise.all(workers.map(async w => {
      if (w.child.exitCode !== null || w.child.signalCode !== null) return
      const exited = new Promise(resolve => w.child.once('exit', resolve))
      if (w.child.connected) w.child.send({ t: 'stop' })
      const timer = setTimeout(() => w.child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }))
    rmSync(dataDir, { recursive: true, force: true })
  }
  try {
    for (const plan of plans) {
      const child = fork(workerJs, [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] })
      const w: WorkerState = { child, started: 0, online: 0, fatal: 0, answers: 0 }
      workers.push(w)
      child.on('message', (m: any) => {
        if (m.t === 'status') Object.assign(w, { started: m.started, online: m.online, fatal: m.fatal, answers: m.answers })
        else if (m.t === 'rtts') {
          w.loopDelay = m.loopDelay
          pendingRtts.shift()?.(m.samples as Float64Array)
        }
      })
      await new Promise<void>((resolve, reject) => {
        child.once('message', () => resolve())
        child.once('exit', code => reject(new Error(`fleet worker exited ${String(code)} before starting`)))
      })
    }
    // Start all generators at once so the stagger spreads over the whole fleet.
    workers.forEach((w, i) => w.child.send({ t: 'start', tokens: plans[i].tokens, relayUrl: plans[i].relayUrl, staggerMs: options.staggerMs, dataDir, ownDirs: options.ownDirs === true, units: options.units }))
  } catch (err) {
    await stop()
    throw err
  }
  const sum = (k: 'online' | 'fatal' | 'answers'): number => workers.reduce((s, w) => s + w[k], 0)
  return {
    size: plans.reduce((s, p) => s + p.tokens.length, 0),
    pids: workers.map(w => w.child.pid!),
    online: () => sum('online'),
    fatal: () => sum('fatal'),
    answers: () => sum('answers'),
    measure: on => { for (const w of workers) w.child.send({ t: 'measure', on }) },
    loopDelays: () => workers.map(w => w.loopDelay ?? { p99Ms: NaN, maxMs: NaN }),
    collectRtts: async () => {
      // Workers answer in order over their own channels; gather one reply each.
      const all: number[] = []
      for (const w of workers) {
        const got = new Promise<Float64Array>(resolve => pendingRtts.push(resolve))
        w.child.send({ t: 'collect' })
        for (const x of await got) all.push(x)
      }
      return all
    },
    stop
  }
}

/** Agents online per the server: the sum of GET /api/relays agents counts. */
export async function serverAgentCount (base: string, token: string): Promise<number> {
  const relays = await api(base, token, 'GET', '/api/relays') as Array<{ agents: number }>
  return relays.reduce((s, r) => s + (r.agents ?? 0), 0)
}

/** Polls until the server counts `n` agents online; returns the seconds it took. */
export async function waitOnline (base: string, token: string, n: number, timeoutMs: number, everyMs = 500): Promise<number> {
  const t0 = performance.now()
  let failures = 0
  for (;;) {
    let count = -1
    try {
      count = await serverAgentCount(base, token)
    } catch (err) {
      // A busy server may drop a poll during the connect storm: retry, but not forever.
      if (++failures > 20) throw new Error(`GET /api/relays failed ${failures} times while waiting for agents: ${(err as Error).message} (${String((err as { cause?: unknown }).cause)})`)
    }
    if (count >= n) return (performance.now() - t0) / 1000
    if (performance.now() - t0 > timeoutMs) throw new Error(`only ${count} of ${n} agents online after ${timeoutMs / 1000} s`)
    await sleep(everyMs)
  }
}

export interface FleetSite {
  server: Proc
  base: string
  token: string
  relays: Array<{ proc: Proc, id: string, relayToken: string, port: number, dir: string, wsUrl: string }>
  /** Stops relay i and starts it again on the same port and data dir. */
  restartRelay: (i: number) => Promise<{ stoppedAt: number, readyAt: number }>
  stop: () => Promise<void>
}

/**
 * A server and `relays` relays as child processes, each relay on a fixed port
 * (from a free-port probe, so a restart keeps its address). Sets the check-in
 * interval before any agent connects.
 */
export async function startFleetSite (options: { relays: number, intervalSeconds: number, serverArgs?: string[] }): Promise<FleetSite> {
  const sdir = dataDir('server')
  const dirs = [sdir]
  const server = await startProc('server', ['server', '--data-dir', sdir, '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', ...options.serverArgs ?? []])
  const relays: FleetSite['relays'] = []
  const stop = async (): Promise<void> => {
    for (const r of relays) await r.proc.stop()
    await server.stop()
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  }
  const relayArgs = (r: { relayToken: string, dir: string, port: number }): string[] =>
    ['relay', '--server', base, '--token', r.relayToken, '--data-dir', r.dir, '--host', '127.0.0.1', '--port', String(r.port), '--tls-port', 'off']
  const base = server.ready.httpUrl as string
  const token = readFileSync(server.ready.adminTokenFile as string, 'utf8').trim()
  try {
    await api(base, token, 'PATCH', '/api/settings', { checkinIntervalSeconds: options.intervalSeconds })
    for (let i = 0; i < options.relays; i++) {
      const created = await api(base, token, 'POST', '/api/relays', { name: `bench-relay-${i}` })
      const dir = dataDir(`relay${i}`)
      dirs.push(dir)
      const r = { relayToken: created.token as string, dir, port: await freePort() }
      const proc = await startProc(`relay${i}`, relayArgs(r))
      relays.push({ ...r, proc, id: created.id as string, wsUrl: proc.ready.wsUrl as string })
    }
  } catch (err) {
    await stop()
    throw err
  }
  return {
    server,
    base,
    token,
    relays,
    restartRelay: async (i: number) => {
      const r = relays[i]
      await r.proc.stop()
      const stoppedAt = performance.now()
      r.proc = await startProc(`relay${i}`, relayArgs(r))
      return { stoppedAt, readyAt: performance.now() }
    },
    stop
  }
}

/** Runs `body`, then `cleanup` whatever happens, also on SIGINT/SIGTERM. */
export async function withCleanup<T> (cleanup: () => Promise<void>, body: () => Promise<T>): Promise<T> {
  let done = false
  const once = async (): Promise<void> => { if (!done) { done = true; await cleanup() } }
  const onSignal = (): void => { void once().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    return await body()
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await once()
  }
}

/** The fleet's shape as every fleet scenario records it in its parameters. */
export function fleetParameters (o: { perEndpoint: number }, created: { endpoints: number }, fleet: Fleet): Record<string, unknown> {
  return {
    endpoints: created.endpoints,
    agentsPerEndpoint: o.perEndpoint,
    endpointMode: o.perEndpoint === 1 ? 'one endpoint per agent (POST /api/endpoints, 16 at a time)' : `cluster endpoints with maxAgents ${o.perEndpoint}`,
    generatorProcesses: fleet.pids.length,
    agentsPerGeneratorProcess: AGENTS_PER_PROCESS
  }
}
