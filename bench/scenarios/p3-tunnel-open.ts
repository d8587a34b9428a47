import { writeResult, percentile, round, cdfChart, type BenchResult } from '../lib/report.js'
import { startSite, startProc, api, dataDir } from '../lib/procs.js'
import { startBenchTarget, timedGet } from '../lib/target.js'

async function measure (samples: number, pushFlags: boolean, intervalSeconds: number): Promise<{ cold: number[], warm: number[], direct: number[] }> {
  const target = await startBenchTarget()
  const site = await startSite({ relayArgs: pushFlags ? [] : ['--no-push-flags'] })
  const base = site.server.ready.httpUrl as string
  await api(base, site.token, 'PATCH', '/api/settings', { checkinIntervalSeconds: intervalSeconds })
  const ep = await api(base, site.token, 'POST', '/api/endpoints', { name: 'p3', tunnelTarget: target.url })
  const agent = await startProc('agent', ['agent', '--join-token', ep.joinToken, '--data-dir', dataDir('agent')])
  const auth = { authorization: `Bearer ${site.token}` }
  const cold: number[] = []
  const warm: number[] = []
  const direct: number[] = []
  try {
    for (let i = 0; i < samples; i++) {
      await api(base, site.token, 'DELETE', `/api/endpoints/${ep.id}/tunnel`)
      const first = await timedGet(`${base}/api/endpoints/${ep.id}/proxy/small`, auth)
      if (first.status !== 200) throw new Error(`proxied request answered ${first.status}`)
      cold.push(first.seconds * 1000)
      warm.push((await timedGet(`${base}/api/endpoints/${ep.id}/proxy/small`, auth)).seconds * 1000)
      direct.push((await timedGet(`${target.url}/small`)).seconds * 1000)
    }
  } finally {
    await agent.stop()
    await site.stop()
    await target.close()
  }
  return { cold, warm, direct }
}

const stats = (xs: number[]): Record<string, number> => {
  const s = [...xs].sort((a, b) => a - b)
  return { samples: s.length, p50Ms: round(percentile(s, 50), 2), p99Ms: round(percentile(s, 99), 2), maxMs: round(s[s.length - 1], 2) }
}

/**
 * P3: from the admin's first proxied request on a closed tunnel to its
 * response. Baseline in the same run: the same product with pushes off, so
 * the agent only learns at its next check-in (how polling edge agents work).
 */
export async function run (options: { samples: number, baselineSamples: number, interval: number }): Promise<BenchResult> {
  const pushed = await measure(options.samples, true, options.interval)
  const polled = await measure(options.baselineSamples, false, options.interval)
  const figures = { firstRequestOnClosedTunnel: stats(pushed.cold), requestOnOpenTunnel: stats(pushed.warm), directToTarget: stats(pushed.direct) }
  const baseline = { firstRequestOnClosedTunnelPollingOnly: stats(polled.cold) }
  const p99 = figures.firstRequestOnClosedTunnel.p99Ms
  const result: BenchResult = {
    scenario: 'p3-tunnel-open',
    parameters: { samples: options.samples, baselineSamples: options.baselineSamples, checkinIntervalSeconds: options.interval, processes: 'server, relay, agent: separate processes; HTTP target and client: the bench process' },
    figures,
    baseline,
    ratios: { pollingP50OverPushedP50: round(baseline.firstRequestOnClosedTunnelPollingOnly.p50Ms / figures.firstRequestOnClosedTunnel.p50Ms, 1) },
    targets: { p99: { target: '<= 100 ms', met: p99 <= 100 } }
  }
  writeResult(result, cdfChart('P3: first proxied request on a closed tunnel', 'milliseconds', [
    { name: 'relaygate (flag pushed)', samples: pushed.cold, color: '#2563eb' },
    { name: 'polling only (baseline)', samples: polled.cold, color: '#9ca3af' }
  ]))
  return result
}
