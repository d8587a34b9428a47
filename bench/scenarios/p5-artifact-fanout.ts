import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process'
import { chmodSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { connect } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { RelaygateAgent } from '../../agent/agent.js'
import { decodeJoinToken } from '../../protocol/token.js'
import { writeResult, percentile, round, barChart, type BenchResult } from '../lib/report.js'
import { writeRandomFile } from '../lib/files.js'
import { api } from '../lib/procs.js'
import { startFleetSite, startFleet, createJoinTokens, waitOnline, withCleanup, type Fleet, type FleetSite } from '../lib/fleet.js'
import { cpuMeter, freePort, sleep, scrapeMetrics, metric, metricLabel } from '../lib/sample.js'

export interface P5Options {
  agents: number
  sizeMb: number
  /** Concurrent keep-alive GETs in the relay-vs-nginx comparison. */
  clients: number
  /** GETs in total, per target and round, in that comparison. */
  requests: number
  /** Give up on the fan-out after this many seconds. */
  timeout: number
}

const NGINX = '/usr/sbin/nginx'
/** Alternating rounds of the cache-hit comparison (relay, nginx, relay, nginx); the best of each is kept. */
const ROUNDS = 2
const JOB_PATH = 'p5/artifact.bin'

const log = (msg: string): void => { process.stderr.write(`p5: ${msg}\n`) }

/** PUT /api/artifacts/:name with the file as the raw body. */
async function upload (base: string, token: string, name: string, file: string, size: number): Promise<{ sha256: string, size: number }> {
  const url = new URL(`/api/artifacts/${name}`, base)
  return await new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': String(size) } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        if (res.statusCode !== 201) reject(new Error(`PUT ${url.pathname}: ${String(res.statusCode)} ${text}`))
        else resolve(JSON.parse(text) as { sha256: string, size: number })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    createReadStream(file).on('error', reject).pipe(req)
  })
}

/** Installs nginx from Debian when /usr/sbin/nginx is missing (saying so); returns its version line. */
function ensureNginx (): { version: string, installedNow: boolean } {
  let installedNow = false
  if (!existsSync(NGINX)) {
    const install = (): boolean => {
      log(`${NGINX} is missing: apt-get install -y nginx (services are not started: policy-rc.d)`)
      return spawnSync('apt-get', ['install', '-y', 'nginx'], { stdio: ['ignore', 2, 2], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0
    }
    if (!install()) {
      log('apt-get install failed: apt-get update, then once more')
      spawnSync('apt-get', ['update'], { stdio: ['ignore', 2, 2] })
      if (!install() || !existsSync(NGINX)) throw new Error('could not install nginx (apt-get install -y nginx)')
    }
    installedNow = true
  }
  const v = spawnSync(NGINX, ['-v'], { encoding: 'utf8' })
  return { version: `${v.stderr}${v.stdout}`.trim(), installedNow }
}

interface Nginx { port: number, masterPid: number, workerPid: number, stop: () => Promise<void> }

async function waitExit (child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true
  return await new Promise(resolve => {
    const timer = setTimeout(() => { child.off('exit', done); resolve(false) }, ms)
    const done = (): void => { clearTimeout(timer); resolve(true) }
    child.once('exit', done)
  })
}

/**
 * nginx in the foreground (daemon off) with one worker, serving `prefix`/html
 * on 127.0.0.1:`port`, with a config written here. A usual static-file setup:
 * sendfile and tcp_nopush on, no access log.
 */
async function startNginx (prefix: string): Promise<Nginx> {
  const port = await freePort()
  for (const d of ['logs', 'tmp']) mkdirSync(join(prefix, d), { recursive: true })
  const conf = join(prefix, 'nginx.conf')
  writeFileSync(conf, `daemon off;
master_process on;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${prefix}/html;
    location / { }
  }
}
`)
  const child = spawn(NGINX, ['-p', prefix, '-c', conf, '-e', join(prefix, 'logs', 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000) })
  let workerPid = 0
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGQUIT')
      if (!await waitExit(child, 5000)) {
        child.kill('SIGKILL')
        await waitExit(child, 5000)
      }
    }
    // The worker, if the master was killed before it could stop it.
    if (workerPid > 0) { try { process.kill(workerPid, 'SIGKILL') } catch {} }
  }
  try {
    const deadline = Date.now() + 10_000
    for (;;) {
      if (child.exitCode !== null) throw new Error(`nginx exited ${child.exitCode}: ${stderr} ${readLog(prefix)}`)
      if (await canConnect(port)) break
      if (Date.now() > deadline) throw new Error(`nginx not listening on ${port} in time: ${stderr} ${readLog(prefix)}`)
      await sleep(50)
    }
    const children = readFileSync(`/proc/${child.pid!}/task/${child.pid!}/children`, 'utf8').trim().split(/\s+/).filter(s => s !== '').map(Number)
    if (children.length !== 1) throw new Error(`expected one nginx worker, found ${children.length}`)
    workerPid = children[0]
  } catch (err) {
    await stop()
    throw err
  }
  return { port, masterPid: child.pid!, workerPid, stop }
}

function readLog (prefix: string): string {
  try { return readFileSync(join(prefix, 'logs', 'error.log'), 'utf8').slice(-2000) } catch { return '' }
}

async function canConnect (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = connect({ host: '127.0.0.1', port })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

interface LoadResult { MBps: number, seconds: number, bytes: number, requests: number, latencyMsP50: number, latencyMsP99: number, serverCpuCores: number, clientCpuCores: number }

/**
 * `requests` GETs of `url`, `clients` at a time over keep-alive sockets (one
 * http.Agent, maxSockets = clients), bodies counted and dropped. Every
 * response must be 200 with exactly `size` bytes.
 */
async function load (url: string, headers: Record<string, string>, size: number, clients: number, requests: number, serverPid: number): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
  const latencies: number[] = []
  let issued = 0
  let bytes = 0
  const get = async (): Promise<void> => {
    const t = performance.now()
    await new Promise<void>((resolve, reject) => {
      const req = http.get(url, { agent, headers }, res => {
        let got = 0
        res.on('data', (c: Buffer) => { got += c.length })
        res.on('end', () => {
          bytes += got
          if (res.statusCode !== 200) reject(new Error(`GET ${url}: ${String(res.statusCode)}`))
          else if (got !== size) reject(new Error(`GET ${url}: ${got} of ${size} bytes`))
          else resolve()
        })
        res.on('error', reject)
      })
      req.setTimeout(60_000, () => req.destroy(new Error(`GET ${url}: no bytes for 60 s`)))
      req.on('error', reject)
    })
    latencies.push(performance.now() - t)
  }
  try {
    const serverCpu = cpuMeter(serverPid)
    const clientCpu = cpuMeter(process.pid)
    const t0 = performance.now()
    await Promise.all(Array.from({ length: Math.min(clients, requests) }, async () => {
      while (issued < requests) {
        issued++
        await get()
      }
    }))
    const seconds = (performance.now() - t0) / 1000
    const sorted = latencies.sort((a, b) => a - b)
    return {
      MBps: round(bytes / seconds / 1e6, 1),
      seconds: round(seconds, 3),
      bytes,
      requests,
      latencyMsP50: round(percentile(sorted, 50), 1),
      latencyMsP99: round(percentile(sorted, 99), 1),
      serverCpuCores: round(serverCpu.read().cores, 3),
      clientCpuCores: round(clientCpu.read().cores, 3)
    }
  } finally {
    agent.destroy()
  }
}

/**
 * P5: one artifact to N real agents through one relay, measured from outside:
 * time from dispatch to the last success and what the server sent (one copy
 * is the target); then the relay serving cache hits against nginx serving the
 * same file to the same client load, in the same run.
 */
export async function run (o: P5Options): Promise<BenchResult> {
  const size = o.sizeMb * 1024 * 1024
  // Every agent keeps its copy until the end: N copies, plus the server's, the relay's cache, nginx's and a margin.
  const need = (o.agents + 4) * size + 1024 ** 3
  const fs0 = statfsSync(tmpdir())
  const free = fs0.bavail * fs0.bsize
  if (free < need) throw new Error(`${tmpdir()} has ${(free / 1024 ** 3).toFixed(1)} GiB free; ${o.agents} agents x ${o.sizeMb} MB need ${(need / 1024 ** 3).toFixed(1)} GiB`)

  const load0 = loadavg()[0]
  const work = mkdtempSync(join(tmpdir(), 'rg-bench-p5-'))
  let site: FleetSite | null = null
  let fleet: Fleet | null = null
  let nginx: Nginx | null = null
  let tokenAgent: RelaygateAgent | null = null
  const cleanup = async (): Promise<void> => {
    const step = async (what: string, f: () => Promise<void>): Promise<void> => {
      try { await f() } catch (err) { log(`cleanup: ${what}: ${(err as Error).message}`) }
    }
    await step('token agent', async () => { await tokenAgent?.destroy() })
    await step('nginx', async () => { await nginx?.stop() })
    await step('fleet', async () => { await fleet?.stop() })
    await step('site', async () => { await site?.stop() })
    rmSync(work, { recursive: true, force: true })
  }

  return await withCleanup(cleanup, async () => {
    site = await startFleetSite({ relays: 1, intervalSeconds: 5 })
    const { base, token } = site
    const relay = site.relays[0]
    const relayHttp = `http://127.0.0.1:${relay.port}`

    // The artifact, written once: nginx serves this very file later.
    const html = join(work, 'nginx', 'html')
    mkdirSync(html, { recursive: true })
    const file = join(html, 'artifact.bin')
    const sha256 = writeRandomFile(file, size)
    const uploaded = await upload(base, token, 'p5-artifact', file, size)
    if (uploaded.sha256 !== sha256 || uploaded.size !== size) throw new Error(`upload stored ${uploaded.sha256}/${uploaded.size}, expected ${sha256}/${size}`)

    // ---- 1. Fan-out to N agents ----
    const created = await createJoinTokens(base, token, o.agents)
    const endpointIds = created.tokens.map(t => decodeJoinToken(t).endpointId)
    const perProcess = Math.ceil(o.agents / 2)
    log(`starting ${o.agents} agents in ${Math.ceil(o.agents / perProcess)} generator processes`)
    fleet = await startFleet([{ tokens: created.tokens, relayUrl: relay.wsUrl }], { staggerMs: Math.min(10_000, o.agents * 5), perProcess, ownDirs: true })
    const onlineSeconds = await waitOnline(base, token, o.agents, 180_000)
    await sleep(2000)

    const server0 = await scrapeMetrics(`${base}/metrics`, token)
    const relay0 = await scrapeMetrics(`${relayHttp}/metrics`)
    const relayCpu = cpuMeter(relay.proc.child.pid!)
    const serverCpu = cpuMeter(site.server.child.pid!)
    const genCpus = fleet.pids.map(pid => cpuMeter(pid))
    log(`all ${o.agents} agents online after ${onlineSeconds.toFixed(1)} s; dispatching one job of ${o.sizeMb} MB`)
    const wall0 = Date.now()
    const t0 = performance.now()
    const job = await api(base, token, 'POST', '/api/jobs', { artifact: 'p5-artifact', endpoints: endpointIds, path: JOB_PATH }) as { id: string }
    type Target = { state: string, updatedAt: string, error?: { code: string, message: string } }
    let targets: Target[] = []
    let lastLog = 0
    let pollFailures = 0
    let finished = false
    const progress: Array<{ s: number, succeeded: number, failed: number }> = []
    for (;;) {
      await sleep(500)
      const elapsed = (performance.now() - t0) / 1000
      if (elapsed > o.timeout) break
      try {
        // Bounded: a saturated server must not hold the loop past the timeout.
        const res = await fetch(`${base}/api/jobs/${job.id}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
        if (!res.ok) throw new Error(`GET /api/jobs/${job.id}: ${res.status}`)
        targets = ((await res.json()) as { targets: Target[] }).targets
      } catch (err) {
        pollFailures++
        log(`${elapsed.toFixed(0)} s: poll failed (${(err as Error).message})`)
        continue
      }
      const done = targets.filter(t => t.state === 'succeeded').length
      const failed = targets.filter(t => t.state === 'failed').length
      if (done + failed === targets.length) { finished = true; break }
      if (elapsed - lastLog >= 5) {
        lastLog = elapsed
        progress.push({ s: round(elapsed, 1), succeeded: done, failed })
        log(`${elapsed.toFixed(0)} s: ${done} succeeded, ${failed} failed of ${targets.length}`)
      }
    }
    if (!finished) log(`fan-out not finished after ${o.timeout} s: recording what was reached`)
    const observedSeconds = (performance.now() - t0) / 1000
    const relayCpuFanout = relayCpu.read()
    const serverCpuFanout = serverCpu.read()
    const genCores = genCpus.reduce((s, m) => s + m.read().cores, 0)
    const server1 = await scrapeMetrics(`${base}/metrics`, token)
    const relay1 = await scrapeMetrics(`${relayHttp}/metrics`)
    const view = { targets }

    const succeeded = view.targets.filter(t => t.state === 'succeeded')
    const failures = view.targets.filter(t => t.state === 'failed')
    const doneAt = succeeded.map(t => (Date.parse(t.updatedAt) - wall0) / 1000).sort((a, b) => a - b)
    const lastSuccess = doneAt.length > 0 ? doneAt[doneAt.length - 1] : NaN
    const delta = (a: string, b: string, name: string): number => metric(b, name) - metric(a, name)
    const serverEgress = delta(server0, server1, 'relaygate_server_artifact_served_bytes_total')
    const linkOut = delta(server0, server1, 'relaygate_server_relay_link_sent_bytes_total')
    const cache = {
      hits: delta(relay0, relay1, 'relaygate_relay_cache_hits_total'),
      misses: delta(relay0, relay1, 'relaygate_relay_cache_misses_total'),
      bytesServed: delta(relay0, relay1, 'relaygate_relay_cache_served_bytes_total'),
      bytesFetched: delta(relay0, relay1, 'relaygate_relay_cache_fetched_bytes_total')
    }
    const egressRatio = serverEgress / size
    const failureCodes: Record<string, number> = {}
    for (const f of failures) failureCodes[f.error?.code ?? 'unknown'] = (failureCodes[f.error?.code ?? 'unknown'] ?? 0) + 1
    log(`fan-out: ${succeeded.length}/${o.agents} succeeded${finished ? `, last at ${lastSuccess.toFixed(1)} s` : ` in ${o.timeout} s (not finished)`}; server sent ${(serverEgress / size).toFixed(3)} x the artifact`)

    // The agents' copies (N x size) go now, before the throughput comparison.
    const tStop = performance.now()
    const f = fleet
    fleet = null
    await f.stop()
    log(`generators stopped and ${o.agents} agent dirs removed in ${((performance.now() - tStop) / 1000).toFixed(1)} s`)

    // ---- 2. Cache hits: relay vs nginx, same file, same client load ----
    let nginxInfo = { version: 'not started', installedNow: false }
    const relayRounds: LoadResult[] = []
    const nginxRounds: LoadResult[] = []
    let hitsDuring = NaN
    let comparisonError: string | null = null
    try {
      nginxInfo = ensureNginx()
      chmodSync(work, 0o755) // the worker runs as nobody
      chmodSync(join(work, 'nginx'), 0o755)
      chmodSync(html, 0o755)
      nginx = await startNginx(join(work, 'nginx'))
      const ep = await api(base, token, 'POST', '/api/endpoints', { name: 'p5-downloader' }) as { joinToken: string }
      tokenAgent = new RelaygateAgent({ joinToken: ep.joinToken, relays: [relay.wsUrl], dataDir: join(work, 'token-agent'), drainTimeoutMs: 0 }, pino({ level: 'silent' }))
      tokenAgent.start()
      await tokenAgent.whenOnline(30_000)
      const downloadToken = (tokenAgent as unknown as { downloadToken: string | null }).downloadToken
      if (downloadToken === null) throw new Error('the relay gave the agent no download token')

      const relayUrl = `${relayHttp}/artifacts/${sha256}`
      const relayHeaders = { authorization: `Bearer ${downloadToken}` }
      const nginxUrl = `http://127.0.0.1:${nginx.port}/artifact.bin`
      // Warm both (page cache, first connection) outside the measurement.
      await load(relayUrl, relayHeaders, size, 1, 2, relay.proc.child.pid!)
      await load(nginxUrl, {}, size, 1, 2, nginx.workerPid)
      const hits0 = metric(await scrapeMetrics(`${relayHttp}/metrics`), 'relaygate_relay_cache_hits_total')
      for (let r = 0; r < ROUNDS; r++) {
        relayRounds.push(await load(relayUrl, relayHeaders, size, o.clients, o.requests, relay.proc.child.pid!))
        log(`round ${r + 1}: relay ${relayRounds[r].MBps} MB/s`)
        nginxRounds.push(await load(nginxUrl, {}, size, o.clients, o.requests, nginx.workerPid))
        log(`round ${r + 1}: nginx ${nginxRounds[r].MBps} MB/s`)
      }
      hitsDuring = metric(await scrapeMetrics(`${relayHttp}/metrics`), 'relaygate_relay_cache_hits_total') - hits0
    } catch (err) {
      // Keep the fan-out figures: the comparison's failure goes into the result.
      comparisonError = (err as Error).message
      log(`cache-hit comparison failed: ${comparisonError}`)
    }
    const best = (rs: LoadResult[]): LoadResult | null => rs.length === 0 ? null : rs.reduce((a, b) => b.MBps > a.MBps ? b : a)
    const relayBest = best(relayRounds)
    const nginxBest = best(nginxRounds)
    const throughputRatio = relayBest !== null && nginxBest !== null && relayRounds.length === ROUNDS && nginxRounds.length === ROUNDS ? relayBest.MBps / nginxBest.MBps : NaN
    const allOk = succeeded.length === o.agents

    const result: BenchResult = {
      scenario: 'p5-artifact-fanout',
      parameters: {
        agents: o.agents,
        sizeMb: o.sizeMb,
        artifactBytes: size,
        clients: o.clients,
        requests: o.requests,
        rounds: ROUNDS,
        timeoutSeconds: o.timeout,
        loadAverage1mAtStartAndEnd: [round(load0, 2), round(loadavg()[0], 2)],
        generatorProcesses: Math.ceil(o.agents / perProcess),
        layout: 'server, one relay, generator processes of real RelaygateAgent instances (each its own data/files dir on the /tmp disk), all on loopback, separate processes',
        comparison: `${o.clients} concurrent keep-alive GETs, ${o.requests} in total per round, bodies counted and dropped, from the bench process; relay GET /artifacts/<sha256> (cache hit) vs nginx serving the same file`,
        relayProcess: 'one Node process (a single event-loop thread for HTTP)',
        nginx: `${nginxInfo.version}; worker_processes 1, master_process on, sendfile on, tcp_nopush on, access_log off${nginxInfo.installedNow ? ' (installed by this run: apt-get install -y nginx)' : ''}`
      },
      figures: {
        fanout: {
          finished,
          succeeded: succeeded.length,
          failed: failures.length,
          unfinished: o.agents - succeeded.length - failures.length,
          targetStatesAtEnd: Object.fromEntries(['queued', 'downloading', 'verifying', 'running', 'succeeded', 'failed'].map(st => [st, metricLabel(server1, 'relaygate_server_job_targets', `state="${st}"`)])),
          serverRelaysConnectedAtEnd: metric(server1, 'relaygate_server_relays_connected'),
          serverAgentsOnlineAtEnd: metric(server1, 'relaygate_server_agents_online'),
          pollFailures,
          progress,
          failureCodes,
          failureMessages: [...new Set(failures.map(f => f.error?.message ?? ''))].slice(0, 5),
          secondsToLastSuccess: finished ? round(lastSuccess, 2) : null,
          secondsObservedByPolling: round(observedSeconds, 2),
          completionSeconds: { p50: round(percentile(doneAt, 50), 2), p90: round(percentile(doneAt, 90), 2), p99: round(percentile(doneAt, 99), 2), max: round(lastSuccess, 2) },
          deliveredMBps: succeeded.length === 0 ? 0 : round(succeeded.length * size / lastSuccess / 1e6, 1),
          serverArtifactEgressBytes: serverEgress,
          serverEgressPerArtifact: round(egressRatio, 4),
          serverRelayLinkSentBytes: linkOut,
          relayCache: cache,
          relayServedPerAgentCopy: round(cache.bytesServed / (o.agents * size), 4),
          relayCpuCores: round(relayCpuFanout.cores, 3),
          serverCpuCores: round(serverCpuFanout.cores, 3),
          generatorCpuCores: round(genCores, 3),
          agentsOnlineSeconds: round(onlineSeconds, 1)
        },
        relayCacheHit: { ...relayBest, rounds: relayRounds.map(r => r.MBps), cacheHitsCounted: hitsDuring, error: comparisonError }
      },
      baseline: { nginx: { ...nginxBest, rounds: nginxRounds.map(r => r.MBps) } },
      ratios: Number.isFinite(throughputRatio) ? { relayToNginxThroughput: round(throughputRatio, 3) } : {},
      targets: {
        allSucceeded: { target: `all ${o.agents} targets succeed`, met: allOk },
        serverEgress: { target: '1.00 x the artifact size (the server sends it once)', met: allOk && round(egressRatio, 2) <= 1 },
        cacheHitThroughput: { target: '>= 0.8 of nginx', met: throughputRatio >= 0.8 }
      },
      notes: [
        'Fan-out time is from POST /api/jobs to the server-side updatedAt of the last succeeded target (the poll every 500 ms only notices it).',
        'Server egress is relaygate_server_artifact_served_bytes_total (artifact bytes sent to relays) over the fan-out; relay cache figures are deltas of the relay\'s /metrics counters.',
        'Each agent downloads, hashes and renames its copy on the same 2-core machine as server, relay and generators: the fan-out time includes that disk and CPU load.',
        'Fairness: nginx runs one worker process and the relay is one Node process; both serve from the page cache on the same disk; the client (one Node process) is shared and its CPU is recorded: near 1 core, the client caps both sides.',
        'The relay reads each hit into recycled 256 KiB buffers and copies it to the socket through uWS (sha256 only for a file that changed on disk since it verified, or when an agent asks); nginx sends with sendfile and reads no byte itself.',
        'Relay cache misses count every request that arrived while the one fill was running (they follow it); bytesFetched is what came from the server.',
        `Best of ${ROUNDS} alternating rounds kept for each side; all rounds listed.`
      ]
    }
    writeResult(result, barChart(`P5: cache-hit GETs of ${o.sizeMb} MB, ${o.clients} concurrent (same run)`, 'MB/s',
      [...relayRounds.map((_, i) => `round ${i + 1}`), 'best'], [
        { name: 'relay (cache hit)', values: [...relayRounds.map(r => r.MBps), relayBest?.MBps ?? 0], color: '#2563eb' },
        { name: 'nginx, 1 worker', values: [...nginxRounds.map(r => r.MBps), nginxBest?.MBps ?? 0], color: '#9ca3af' }
      ]))
    return result
  })
}
