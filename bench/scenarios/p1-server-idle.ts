import { writeResult, round, barChart, type BenchResult } from '../lib/report.js'
import { startFleet, createJoinTokens, waitOnline, serverAgentCount, withCleanup, fleetParameters, type Fleet } from '../lib/fleet.js'
import { cpuMeter, wireSample, wireDelta, sleep, type WireSample } from '../lib/sample.js'
import { startFleetSiteOn, type StoreKind } from '../lib/store.js'

export interface P1Options { agents: number, interval: number, duration: number, stagger: number, perEndpoint: number, store: StoreKind }

/**
 * P1: what an idle fleet costs the server. N real agents check in through two
 * relays; the server's CPU (from /proc) and the bytes on its relay links (the
 * kernel's TCP counters on its HTTP port) are measured over a steady window.
 * Baseline, measured in the same window: the bytes on the relays' agent
 * sockets, i.e. the check-in traffic itself, which a design where agents
 * check in with the server directly would put on the server's port.
 */
export async function run (o: P1Options): Promise<BenchResult> {
  const { site, store } = await startFleetSiteOn(o.store, { relays: 2, intervalSeconds: o.interval })
  let fleet: Fleet | null = null
  return await withCleanup(async () => { await fleet?.stop(); await site.stop(); store.destroy() }, async () => {
    const serverPort = Number(new URL(site.base).port)
    const created = await createJoinTokens(site.base, site.token, o.agents, o.perEndpoint)
    const half = Math.ceil(o.agents / 2)
    fleet = await startFleet([
      { tokens: created.tokens.slice(0, half), relayUrl: site.relays[0].wsUrl },
      { tokens: created.tokens.slice(half), relayUrl: site.relays[1].wsUrl }
    ], { staggerMs: o.stagger * 1000 })
    const onlineSeconds = await waitOnline(site.base, site.token, o.agents, o.stagger * 1000 + 180_000)
    // Let the connect-time snapshots and the first check-ins pass; no API calls in the window.
    await sleep(Math.max(5, o.interval * 2) * 1000)

    const serverCpu = cpuMeter(site.server.child.pid!)
    const relayCpus = site.relays.map(r => cpuMeter(r.proc.child.pid!))
    const answers0 = fleet.answers()
    const s0 = wireSample(serverPort)
    const r0: WireSample[] = site.relays.map(r => wireSample(r.port))
    await sleep(o.duration * 1000)
    const s1 = wireSample(serverPort)
    const r1: WireSample[] = site.relays.map(r => wireSample(r.port))
    const cpu = serverCpu.read()
    const relayCores = relayCpus.map(m => m.read().cores)
    const answers = fleet.answers() - answers0
    const onlineAtEnd = await serverAgentCount(site.base, site.token)
    const fatal = fleet.fatal()

    const server = wireDelta(s0, s1)
    const agentSide = r0.map((a, i) => wireDelta(a, r1[i]))
    const serverBitsPerSecond = server.bytes * 8 / server.seconds
    const checkinBytes = agentSide.reduce((s, d) => s + d.bytes, 0)
    const checkinSeconds = agentSide[0].seconds
    const bytesPerCheckin = answers > 0 ? checkinBytes / answers : NaN
    // Direct-to-server design: every check-in round trip lands on the server's port.
    const directBitsPerSecond = (o.agents / o.interval) * bytesPerCheckin * 8

    const figures = {
      serverCpuCores: round(cpu.cores, 4),
      serverLinkBitsPerSecond: round(serverBitsPerSecond, 1),
      serverLink: { payloadBytes: server.payloadBytes, segments: server.segments, seconds: round(server.seconds, 2), sockets: server.sockets, socketsClosedDuringWindow: server.socketsClosed },
      relayCpuCores: relayCores.map(c => round(c, 4)),
      checkinsAnsweredInWindow: answers,
      secondsUntilAllOnline: round(onlineSeconds, 1),
      endpointCreationSeconds: round(created.seconds, 1),
      agentsOnlineAtEnd: onlineAtEnd,
      agentsFatal: fatal
    }
    const baseline = {
      kind: 'direct-to-server design, computed from this run: agents / interval x wire bytes per check-in round trip, where bytes per check-in = bytes on the relays\' agent sockets in the same window (ss, payload + 52 B per segment, both directions) / check-ins answered in the window',
      bytesPerCheckinRoundTrip: round(bytesPerCheckin, 1),
      agentSideWireBytesPerSecond: round(checkinBytes / checkinSeconds, 1),
      serverBitsPerSecond: round(directBitsPerSecond, 1),
      serverCpuCores: 'not measured (no direct-check-in mode exists to run)'
    }
    const result: BenchResult = {
      scenario: 'p1-server-idle',
      variant: store.variant(),
      parameters: {
        store: store.description,
        agents: o.agents,
        relays: 2,
        checkinIntervalSeconds: o.interval,
        steadySeconds: o.duration,
        staggerSeconds: o.stagger,
        ...fleetParameters(o, created, fleet),
        processes: 'server, 2 relays and the generators are separate processes on this machine (loopback); generators run the real RelaygateAgent',
        cpuMethod: '/proc/<server pid>/stat utime+stime delta over the steady window / elapsed seconds',
        wireMethod: "ss -tin state established '( sport = :serverHttpPort )': bytes_acked + bytes_received + 52 x (segs_out + segs_in), both directions, delta over the window (no API calls during the window)"
      },
      figures,
      baseline,
      ratios: { directDesignBitsOverRelaygateServerBits: round(directBitsPerSecond / Math.max(1, serverBitsPerSecond), 1) },
      targets: {
        serverBandwidth: { target: '<= 10 kbit/s', met: serverBitsPerSecond <= 10_000 },
        serverCpu: { target: '<= 0.02 core', met: cpu.cores <= 0.02 }
      },
      notes: [
        'Reference: Portainer\'s published load test, 15,000 edge agents at a 5 s interval: about 7 Mbit/s into the server and 4 CPUs (published figure; no Portainer was run here).',
        `CPU is read from /proc in 10 ms ticks: over this ${o.duration} s window the resolution is ${round(0.01 / o.duration, 5)} core.`,
        'The baseline counts relaygate\'s own compact check-in frames; a direct HTTP polling design (as Portainer\'s) costs more per check-in than that.',
        onlineAtEnd === o.agents && fatal === 0 ? 'All agents stayed online through the window.' : `Agents online at the end: ${onlineAtEnd} of ${o.agents}; fatal: ${fatal}.`
      ]
    }
    writeResult(result, barChart(`P1: bits/s into and out of the server, ${o.agents} idle agents at ${o.interval} s`, 'bits per second', ['server port'], [
      { name: 'relaygate (through 2 relays)', values: [serverBitsPerSecond], color: '#2563eb' },
      { name: 'direct check-ins (baseline)', values: [directBitsPerSecond], color: '#9ca3af' }
    ]))
    return result
  })
}
