import { mkdtempSync, rmSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeRandomFile } from '../lib/files.js'
import { writeResult, round, barChart, type BenchResult } from '../lib/report.js'
import { api } from '../lib/procs.js'
import { startFleetSite, startFleet, createJoinTokens, waitOnline, withCleanup, type Fleet, type FleetSite } from '../lib/fleet.js'
import { cpuMeter, sleep, scrapeMetrics, metric } from '../lib/sample.js'

export interface P11Options {
  agents: number
  /** Size of the new build (MiB). */
  sizeMb: number
  canary: number
  timeout: number
}

const V1 = '0.9.1'
const V2 = '0.9.2'
const log = (msg: string): void => { process.stderr.write(`p11: ${msg}\n`) }

/**
 * A stand-in build of `bytes` bytes: a script that answers `--version` (all
 * the versions dir asks of a new build) and exits, followed by random bytes
 * the shell never reads, so its size is an executable's.
 */
function writeBuild (file: string, version: string, bytes: number): string {
  return writeRandomFile(file, bytes, { head: Buffer.from(`#!/bin/sh\necho ${version}\nexit 0\n`), mode: 0o755 })
}

/** Polls until `done` returns a value; the seconds it took with it. */
async function until<T> (what: string, timeoutS: number, done: () => Promise<T | null>): Promise<{ value: T, seconds: number }> {
  const t0 = performance.now()
  for (;;) {
    const value = await done()
    if (value !== null) return { value, seconds: (performance.now() - t0) / 1000 }
    if (performance.now() - t0 > timeoutS * 1000) throw new Error(`${what}: not done after ${timeoutS} s`)
    await sleep(500)
  }
}

/**
 * P11 (issue 16): a self-update of N agents behind one relay. Every agent is
 * the product's agent running as its systemd unit would (guard, link,
 * restart: bench/lib/unit-agent.ts) in generator processes; server and relay
 * are processes. Baseline, same run: the same agents fetching an artifact of
 * the same size as a plain job (the distribution alone). Figures: server
 * egress per build (relaygate_server_artifact_served_bytes_total over the
 * rollout), time to the canaries and to all updated, the overhead over the
 * baseline's time.
 */
export async function run (o: P11Options): Promise<BenchResult> {
  const size = o.sizeMb * 1024 * 1024
  const work = mkdtempSync(join(tmpdir(), 'rg-bench-p11-'))
  let site: FleetSite | null = null
  let fleet: Fleet | null = null
  return await withCleanup(async () => {
    await fleet?.stop()
    await site?.stop()
    rmSync(work, { recursive: true, force: true })
  }, async () => {
    const v1 = join(work, 'relaygate-v1')
    writeBuild(v1, V1, 64 * 1024)
    writeBuild(join(work, 'relaygate-v2'), V2, size)
    writeBuild(join(work, 'payload'), 'payload', size)
    site = await startFleetSite({ relays: 1, intervalSeconds: 5 })
    const { base, token } = site
    const relay = site.relays[0]
    const created = await createJoinTokens(base, token, o.agents)
    fleet = await startFleet([{ tokens: created.tokens, relayUrl: relay.wsUrl }], { staggerMs: Math.min(20_000, o.agents * 5), units: { path: v1, version: V1 } })
    const onlineS = await waitOnline(base, token, o.agents, 120_000)
    log(`${o.agents} agents online as units in ${onlineS.toFixed(1)} s`)
    const endpoints = (await api(base, token, 'GET', '/api/endpoints?limit=100000') as Array<{ id: string, agentVersion?: string }>)
    const ids = endpoints.map(e => e.id)
    await until('agents reporting their version', 60, async () => {
      const list = await api(base, token, 'GET', '/api/endpoints?limit=100000') as Array<{ agentVersion?: string }>
      return list.filter(e => e.agentVersion === V1).length >= o.agents ? true : null
    })
    for (const name of ['payload', 'relaygate-v2']) await uploadFile(base, token, name, join(work, name))

    // Baseline: the same agents fetch an artifact of the same size through the same relay as a job.
    const m0 = await scrapeMetrics(`${base}/metrics`, token)
    const job = await api(base, token, 'POST', '/api/jobs', { artifact: 'payload', endpoints: ids, path: 'p11/payload.bin' })
    const baseline = await until('the baseline job', o.timeout, async () => {
      const view = await api(base, token, 'GET', `/api/jobs/${job.id as string}`)
      return view.state === 'succeeded' || view.state === 'failed' ? view : null
    })
    const m1 = await scrapeMetrics(`${base}/metrics`, token)
    const jobEgress = metric(m1, 'relaygate_server_artifact_served_bytes_total') - metric(m0, 'relaygate_server_artifact_served_bytes_total')
    log(`baseline job: ${baseline.value.state} in ${baseline.seconds.toFixed(1)} s, server sent ${(jobEgress / size).toFixed(3)} x`)

    // The rollout: canaries first, then everyone at once.
    const serverCpu = cpuMeter(site.server.child.pid!)
    const relayCpu = cpuMeter(relay.proc.child.pid!)
    const t0 = performance.now()
    const update = await api(base, token, 'POST', '/api/updates', { artifact: 'relaygate-v2', version: V2, target: 'agents', canary: o.canary, maxParallel: o.agents, healthSeconds: 300 })
    let canaryS = NaN
    const rolled = await until('the rollout', o.timeout, async () => {
      const view = await api(base, token, 'GET', `/api/updates/${update.id as string}`)
      const canaries = (view.targets as Array<{ canary: boolean, state: string }>).filter(x => x.canary)
      if (Number.isNaN(canaryS) && canaries.every(x => x.state === 'succeeded')) canaryS = (performance.now() - t0) / 1000
      return view.state !== 'running' ? view : null
    })
    const rolloutS = (performance.now() - t0) / 1000
    const server = serverCpu.read()
    const relayUse = relayCpu.read()
    const m2 = await scrapeMetrics(`${base}/metrics`, token)
    const egress = metric(m2, 'relaygate_server_artifact_served_bytes_total') - metric(m1, 'relaygate_server_artifact_served_bytes_total')
    const counts = rolled.value.counts as Record<string, number>
    const versions = await api(base, token, 'GET', '/api/endpoints?limit=100000') as Array<{ agentVersion?: string }>
    const onV2 = versions.filter(e => e.agentVersion === V2).length
    log(`rollout ${rolled.value.state as string}: ${counts.succeeded}/${o.agents} in ${rolloutS.toFixed(1)} s (canaries ${canaryS.toFixed(1)} s), server sent ${(egress / size).toFixed(3)} x the build`)

    const result: BenchResult = {
      scenario: 'p11-self-update',
      parameters: {
        agents: o.agents,
        buildBytes: size,
        canaries: o.canary,
        maxParallel: o.agents,
        relays: 1,
        agentsAs: 'the product\'s agent run as its systemd unit would (update-guard, the versions link, restarted when it asks), in generator processes of up to 5,000 agents',
        build: 'a script that answers --version followed by random bytes (what the versions dir checks of a build; the real executable is tested in test/onefile)'
      },
      figures: {
        agentsOnlineSeconds: round(onlineS, 1),
        rolloutState: rolled.value.state,
        updated: counts.succeeded,
        failed: counts.failed,
        agentsReportingNewVersion: onV2,
        canarySeconds: round(canaryS, 1),
        rolloutSeconds: round(rolloutS, 1),
        serverEgressPerBuild: round(egress / size, 4),
        serverCpuSeconds: round(server.cpuSeconds, 2),
        relayCpuSeconds: round(relayUse.cpuSeconds, 2)
      },
      baseline: {
        what: 'a job delivering an artifact of the same size to the same agents through the same relay (distribution alone)',
        state: baseline.value.state,
        seconds: round(baseline.seconds, 1),
        serverEgressPerArtifact: round(jobEgress / size, 4)
      },
      ratios: { rolloutOverJob: round(rolloutS / baseline.seconds, 2) },
      targets: {
        allUpdated: { target: `all ${o.agents} agents updated and reporting ${V2}`, met: counts.succeeded === o.agents && onV2 === o.agents },
        serverEgress: { target: '≈ 1 x the build (N agents at a site cost the server one transfer)', met: egress / size <= 1.05 }
      },
      notes: [
        'Timeline: canaries first (their download fills the relay cache), then every other agent at once; each downloads from the relay, verifies, runs the new build\'s --version, switches the link, restarts, reconnects and reports.',
        'rolloutOverJob includes the canary phase and the restarts (each agent reconnects and authenticates again).'
      ]
    }
    writeResult(result, barChart('P11: self-update of the fleet vs a plain job of the same size', 'seconds', ['time'], [
      { name: 'job (baseline)', values: [baseline.seconds], color: '#94a3b8' },
      { name: 'rollout', values: [rolloutS], color: '#0ea5e9' }
    ]))
    return result
  })
}

async function uploadFile (base: string, token: string, name: string, file: string): Promise<void> {
  const res = await fetch(`${base}/api/artifacts/${name}`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body: readFileSync(file) })
  if (res.status !== 201) throw new Error(`upload ${name}: ${res.status} ${await res.text()}`)
}
