import { writeResult, percentile, round, cdfChart, type BenchResult } from '../lib/report.js'
import { startFleet, createJoinTokens, waitOnline, serverAgentCount, withCleanup, fleetParameters, type Fleet } from '../lib/fleet.js'
import { cpuMeter, rssBytes, wireSample, wireDelta, sleep, quantiles, scrapeMetrics, metric } from '../lib/sample.js'
import { startFleetSiteOn, type StoreKind } from '../lib/store.js'

export interface P2Options { agents: number, interval: number, duration: number, stagger: number, perEndpoint: number, store: StoreKind }

/** Published reference (not measured here): Portainer edge agents polling the server directly. */
const PORTAINER_BYTES_PER_AGENT_SECOND = 58

/**
 * P2: one relay holding N real agents at a check-in interval. Everything is
 * measured from outside the relay: CPU and RSS from /proc, wire bytes from the
 * kernel's TCP counters (ss), round trips at the agents.
 */
export async function run (o: P2Options): Promise<BenchResult> {
  const { site, store } = await startFleetSiteOn(o.store, { relays: 1, intervalSeconds: o.interval })
  let fleet: Fleet | null = null
  return await withCleanup(async () => { await fleet?.stop(); await site.stop(); store.destroy() }, async () => {
    const relay = site.relays[0]
    const relayPid = relay.proc.child.pid!
    const created = await createJoinTokens(site.base, site.token, o.agents, o.perEndpoint)
    await sleep(2000)
    const rssIdle = rssBytes(relayPid)

    fleet = await startFleet([{ tokens: created.tokens, relayUrl: relay.wsUrl }], { staggerMs: o.stagger * 1000 })
    const onlineSeconds = await waitOnline(site.base, site.token, o.agents, o.stagger * 1000 + 180_000)
    // Let the connect-time snapshots and the first check-ins pass.
    await sleep(Math.max(5, o.interval * 2) * 1000)

    // The relay's own view (prom-client default metrics): the first scrape
    // starts the event-loop lag histogram, the second reads it for the window.
    const metricsUrl = `http://127.0.0.1:${relay.port}/metrics`
    const relayMetrics0 = await scrapeMetrics(metricsUrl)
    fleet.measure(true)
    const relayCpu = cpuMeter(relayPid)
    const serverCpu = cpuMeter(site.server.child.pid!)
    const generatorCpu = fleet.pids.map(pid => cpuMeter(pid))
    const answers0 = fleet.answers()
    const wire0 = wireSample(relay.port)
    const rss: number[] = []
    const end = performance.now() + o.duration * 1000
    while (performance.now() < end) {
      await sleep(Math.min(5000, end - performance.now()))
      rss.push(rssBytes(relayPid))
    }
    const wire1 = wireSample(relay.port)
    const relayMetrics1 = await scrapeMetrics(metricsUrl)
    const cpu = relayCpu.read()
    const scpu = serverCpu.read()
    const gcpu = generatorCpu.reduce((sum, m) => sum + m.read().cores, 0)
    const answers = fleet.answers() - answers0
    fleet.measure(false)
    const rtts = (await fleet.collectRtts()).sort((a, b) => a - b)
    const generatorLoop = fleet.loopDelays()
    const gcSeconds = (text: string): number => metric(text, 'nodejs_gc_duration_seconds_sum', 0)
    const onlineAtEnd = await serverAgentCount(site.base, site.token)
    const fatal = fleet.fatal()

    const wire = wireDelta(wire0, wire1)
    const rssSteady = rss.reduce((s, x) => s + x, 0) / rss.length
    const rssPerAgent = (rssSteady - rssIdle) / o.agents
    const bytesPerAgentSecond = wire.bytes / o.agents / wire.seconds
    const p50 = percentile(rtts, 50)
    const p99 = percentile(rtts, 99)

    const figures = {
      relayCpuCores: round(cpu.cores, 4),
      relayRssBytesIdle: rssIdle,
      relayRssBytesSteady: Math.round(rssSteady),
      relayRssBytesPerAgent: Math.round(rssPerAgent),
      checkinRtt: { samples: rtts.length, p50Ms: round(p50, 2), p99Ms: round(p99, 2), maxMs: round(rtts[rtts.length - 1] ?? NaN, 2) },
      wire: {
        bytesPerAgentPerSecond: round(bytesPerAgentSecond, 2),
        payloadBytes: wire.payloadBytes,
        segments: wire.segments,
        headerBytesPerSegment: 52,
        seconds: round(wire.seconds, 2),
        sockets: wire.sockets,
        socketsClosedDuringWindow: wire.socketsClosed
      },
      // Where the round-trip tail comes from: the relay's loop and GC, or the generators' own scheduling.
      relayEventLoopLag: {
        p99Ms: round(metric(relayMetrics1, 'nodejs_eventloop_lag_p99_seconds') * 1000, 2),
        maxMs: round(metric(relayMetrics1, 'nodejs_eventloop_lag_max_seconds') * 1000, 2)
      },
      relayGcSecondsInWindow: round(gcSeconds(relayMetrics1) - gcSeconds(relayMetrics0), 3),
      generatorEventLoopDelay: {
        processes: generatorLoop.length,
        worstP99Ms: round(Math.max(...generatorLoop.map(g => g.p99Ms)), 2),
        medianP99Ms: round(quantileOf(generatorLoop.map(g => g.p99Ms), 50), 2),
        worstMaxMs: round(Math.max(...generatorLoop.map(g => g.maxMs)), 2)
      },
      checkinsAnsweredInWindow: answers,
      checkinsPerSecond: round(answers / cpu.seconds, 1),
      serverCpuCoresDuringWindow: round(scpu.cores, 4),
      generatorCpuCoresDuringWindow: round(gcpu, 3),
      secondsUntilAllOnline: round(onlineSeconds, 1),
      endpointCreationSeconds: round(created.seconds, 1),
      agentsOnlineAtEnd: onlineAtEnd,
      agentsFatal: fatal
    }
    const result: BenchResult = {
      scenario: 'p2-relay-scale',
      // The 5 s run is the scenario's default; any other interval (the 1 s stress run) is kept beside it.
      variant: store.variant(o.interval === 5 ? undefined : `interval-${o.interval}s`),
      parameters: {
        store: store.description,
        agents: o.agents,
        checkinIntervalSeconds: o.interval,
        steadySeconds: o.duration,
        staggerSeconds: o.stagger,
        ...fleetParameters(o, created, fleet),
        processes: 'server, relay and each generator are separate processes on this machine (loopback); generators run the real RelaygateAgent',
        cpuMethod: '/proc/<relay pid>/stat utime+stime delta over the steady window / elapsed seconds',
        rssMethod: '(mean VmRSS sampled every 5 s in the steady window - VmRSS before any agent connected) / agents',
        wireMethod: "ss -tin state established '( sport = :relayPort )': sum over sockets of bytes_acked + bytes_received + 52 x (segs_out + segs_in), delta over the steady window / agents / seconds",
        rttMethod: "'rtt' events of every agent (check-in sent -> answer received) during the steady window",
        loopMethod: "relay: prom-client nodejs_eventloop_lag_p99/max_seconds over the window (histogram reset at the window's first scrape), GC from nodejs_gc_duration_seconds_sum; generators: perf_hooks monitorEventLoopDelay (10 ms resolution) in each generator process during the window"
      },
      figures,
      baseline: {
        kind: 'published reference, not measured in this run',
        portainerEdgeAgentBytesPerAgentPerSecond: PORTAINER_BYTES_PER_AGENT_SECOND
      },
      ratios: { bytesPerAgentSecondOverPortainerReference: round(bytesPerAgentSecond / PORTAINER_BYTES_PER_AGENT_SECOND, 3) },
      // The targets are set for the 5 s interval; a stress run reports figures only.
      targets: o.interval !== 5
        ? undefined
        : {
            relayCpu: { target: '<= 0.25 core', met: cpu.cores <= 0.25 },
            rssPerAgent: { target: '<= 20 KB per agent', met: rssPerAgent <= 20 * 1024 },
            rttP99: { target: '<= 20 ms', met: p99 <= 20 },
            wire: { target: '<= 40 B/s per agent', met: bytesPerAgentSecond <= 40 }
          },
      notes: [
        `Reference: Portainer edge agents polling the server directly ≈ ${PORTAINER_BYTES_PER_AGENT_SECOND} B/s per agent (published figure; no Portainer was run here).`,
        'The load generators share the machine\'s cores with the relay and the server, so round trips include generator scheduling delay.',
        onlineAtEnd === o.agents && fatal === 0 ? 'All agents stayed online through the window.' : `Agents online at the end: ${onlineAtEnd} of ${o.agents}; fatal: ${fatal}.`
      ]
    }
    writeResult(result, cdfChart(`P2: check-in round trip, ${o.agents} agents on one relay every ${o.interval} s`, 'milliseconds', [
      { name: 'check-in round trip at the agent', samples: quantiles(rtts), color: '#2563eb' }
    ]))
    return result
  })
}

function quantileOf (values: number[], p: number): number {
  return percentile([...values].sort((a, b) => a - b), p)
}
