import { writeResult, round, type BenchResult } from '../lib/report.js'
import { startFleetSiteOn, type StoreKind } from '../lib/store.js'
import { startFleet, createJoinTokens, waitOnline, serverAgentCount, withCleanup, fleetParameters, type Fleet } from '../lib/fleet.js'
import { cpuSeconds, sleep, scrapeMetrics, metric } from '../lib/sample.js'

export interface P6Options { agents: number, interval: number, stagger: number, perEndpoint: number, timeout: number, store: StoreKind }

interface Point { t: number, online: number, authTotal: number, serverCpu: number }

async function authTotal (base: string, token: string): Promise<number> {
  return metric(await scrapeMetrics(`${base}/metrics`, token), 'relaygate_server_agent_auth_requests_total')
}

/** Online agents and auth requests/s over time (seconds from SIGTERM), as an SVG. */
function stormChart (points: Array<{ t: number, online: number, authPerSecond: number }>, n: number): string {
  const w = 720
  const h = 360
  const m = { l: 60, r: 60, t: 40, b: 50 }
  const tMin = Math.min(0, ...points.map(p => p.t))
  const tMax = Math.max(1, ...points.map(p => p.t))
  const aMax = Math.max(1, ...points.map(p => p.authPerSecond)) * 1.1
  const x = (t: number): number => m.l + (t - tMin) / (tMax - tMin) * (w - m.l - m.r)
  const y = (f: number): number => h - m.b - f * (h - m.t - m.b)
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12"><rect width="${w}" height="${h}" fill="white"/>`
  out += `<text x="${w / 2}" y="22" text-anchor="middle" font-size="15">P6: relay restart with ${n} agents</text>`
  for (let i = 0; i <= 4; i++) {
    out += `<line x1="${m.l}" x2="${w - m.r}" y1="${y(i / 4)}" y2="${y(i / 4)}" stroke="#ddd"/>`
    out += `<text x="${m.l - 6}" y="${y(i / 4) + 4}" text-anchor="end" fill="#2563eb">${Math.round(n * i / 4)}</text>`
    out += `<text x="${w - m.r + 6}" y="${y(i / 4) + 4}" fill="#dc2626">${Math.round(aMax * i / 4)}</text>`
    const t = tMin + (tMax - tMin) * i / 4
    out += `<text x="${x(t)}" y="${h - m.b + 16}" text-anchor="middle">${t.toFixed(1)}</text>`
  }
  out += `<text x="${w / 2}" y="${h - 12}" text-anchor="middle">seconds since SIGTERM to the relay</text>`
  out += `<polyline fill="none" stroke="#2563eb" stroke-width="2" points="${points.map(p => `${x(p.t).toFixed(1)},${y(p.online / n).toFixed(1)}`).join(' ')}"/>`
  out += `<polyline fill="none" stroke="#dc2626" stroke-width="1.5" points="${points.map(p => `${x(p.t).toFixed(1)},${y(p.authPerSecond / aMax).toFixed(1)}`).join(' ')}"/>`
  out += `<text x="${m.l}" y="${m.t - 6}" fill="#2563eb">agents online (server)</text><text x="${w - m.r}" y="${m.t - 6}" text-anchor="end" fill="#dc2626">auth requests/s at the server</text>`
  return out + '</svg>\n'
}

/**
 * P6: SIGTERM a relay holding N agents, start it again on the same port and
 * data dir, and time until the server sees all agents online again, while
 * sampling the server's auth request counter and CPU every 250 ms.
 */
export async function run (o: P6Options): Promise<BenchResult> {
  const { site, store } = await startFleetSiteOn(o.store, { relays: 1, intervalSeconds: o.interval })
  let fleet: Fleet | null = null
  return await withCleanup(async () => { await fleet?.stop(); await site.stop(); store.destroy() }, async () => {
    const serverPid = site.server.child.pid!
    const created = await createJoinTokens(site.base, site.token, o.agents, o.perEndpoint)
    fleet = await startFleet([{ tokens: created.tokens, relayUrl: site.relays[0].wsUrl }], { staggerMs: o.stagger * 1000 })
    await waitOnline(site.base, site.token, o.agents, o.stagger * 1000 + 180_000)
    await sleep(Math.max(5, o.interval * 2) * 1000)

    const points: Point[] = []
    let sampling = true
    let missedSamples = 0
    let t0 = performance.now()
    const sample = async (): Promise<void> => {
      const [online, auth] = await Promise.all([serverAgentCount(site.base, site.token), authTotal(site.base, site.token)])
      points.push({ t: performance.now(), online, authTotal: auth, serverCpu: cpuSeconds(serverPid) })
    }
    const sampler = (async () => {
      while (sampling) {
        const next = performance.now() + 250
        try {
          await sample()
        } catch {
          // The server did not answer this poll (e.g. a keep-alive reset while its event loop was busy): a gap in the samples.
          missedSamples++
        }
        await sleep(Math.max(0, next - performance.now()))
      }
    })()
    let restart: { stoppedAt: number, readyAt: number }
    let recovered: number | null = null
    try {
      await sleep(1000)
      t0 = performance.now()
      restart = await site.restartRelay(0)
      const deadline = performance.now() + o.timeout * 1000
      while (performance.now() < deadline) {
        const last = points[points.length - 1]
        if (last !== undefined && last.t > restart.readyAt && last.online >= o.agents) { recovered = last.t; break }
        await sleep(100)
      }
      await sleep(2000)
    } finally {
      sampling = false
      await sampler
    }

    // Rates between successive samples; peaks also over 1 s windows (4 samples).
    const rates = points.slice(1).map((p, i) => {
      const a = points[i]
      const dt = (p.t - a.t) / 1000
      return { t: (p.t - t0) / 1000, online: p.online, authPerSecond: (p.authTotal - a.authTotal) / dt, cpuCores: (p.serverCpu - a.serverCpu) / dt }
    })
    const windowPeak = (key: 'authTotal' | 'serverCpu'): number => {
      let peak = 0
      for (let i = 4; i < points.length; i++) {
        const dt = (points[i].t - points[i - 4].t) / 1000
        peak = Math.max(peak, (points[i][key] - points[i - 4][key]) / dt)
      }
      return peak
    }
    const storm = rates.filter(r => r.t >= 0 && (recovered === null || r.t <= (recovered - t0) / 1000))
    const authDuring = points[points.length - 1].authTotal - points[0].authTotal
    const recoverySeconds = recovered === null ? null : (recovered - t0) / 1000
    const serverCpuPeak1s = windowPeak('serverCpu')
    const serverCpuMean = storm.length === 0 ? 0 : storm.reduce((s, r) => s + r.cpuCores, 0) / storm.length

    const figures = {
      secondsUntilAllOnlineFromSigterm: recoverySeconds === null ? null : round(recoverySeconds, 2),
      secondsUntilAllOnlineFromRelayReady: recovered === null ? null : round((recovered - restart!.readyAt) / 1000, 2),
      relayDownSeconds: round((restart!.readyAt - t0) / 1000, 2),
      authRequestsPerSecondPeak250ms: round(Math.max(0, ...rates.map(r => r.authPerSecond)), 1),
      authRequestsPerSecondPeak1s: round(windowPeak('authTotal'), 1),
      authRequestsDuringStorm: authDuring,
      serverCpuCoresPeak1s: round(serverCpuPeak1s, 3),
      serverCpuCoresMeanDuringStorm: round(serverCpuMean, 3),
      serverSaturated: serverCpuPeak1s >= 0.95,
      agentsOnlineAtEnd: await serverAgentCount(site.base, site.token),
      agentsFatal: fleet.fatal(),
      samples: rates.length,
      missedSamples,
      // The longest time without an answered poll: how long the server's event loop was busy at a stretch.
      longestApiGapSeconds: round(Math.max(0, ...points.slice(1).map((p, i) => (p.t - points[i].t) / 1000)), 2)
    }
    const result: BenchResult = {
      scenario: 'p6-reconnect-storm',
      variant: store.variant(),
      parameters: {
        store: store.description,
        agents: o.agents,
        checkinIntervalSeconds: o.interval,
        staggerSecondsInitialConnect: o.stagger,
        ...fleetParameters(o, created, fleet),
        restart: 'SIGTERM to the relay, wait for exit, start it again with the same port (fixed from a free-port probe) and data dir',
        sampling: 'every 250 ms: GET /api/relays (sum of agents), GET /metrics relaygate_server_agent_auth_requests_total (admin token), /proc/<server pid>/stat',
        timeoutSeconds: o.timeout
      },
      figures,
      targets: {
        recovery: { target: '<= 30 s until all agents are online again', met: recoverySeconds !== null && recoverySeconds <= 30 },
        serverNotSaturated: { target: 'server CPU below 1 core (peak over 1 s windows < 0.95)', met: serverCpuPeak1s < 0.95 },
        apiAnswers: { target: 'the API never silent for more than 5 s (polls every 250 ms)', met: figures.longestApiGapSeconds <= 5 }
      },
      notes: [
        'No baseline run: the figure compared is the 30 s target. The agents\' backoff (base 250 ms, doubling, capped at 30 s) spreads the reconnects.',
        'The generators share the machine\'s cores with the relay and the server during the storm.',
        'The sampler\'s own /api/relays and /metrics requests are part of the server CPU measured.'
      ]
    }
    writeResult(result, stormChart(rates, o.agents))
    return result
  })
}
