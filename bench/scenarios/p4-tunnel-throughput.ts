import { writeResult, round, barChart, type BenchResult } from '../lib/report.js'
import { startSite, startProc, api, dataDir } from '../lib/procs.js'
import { startBenchTarget, timedGet } from '../lib/target.js'

/**
 * P4: a large GET through server -> relay -> agent -> target, against the
 * same GET made directly to the target in the same run.
 */
export async function run (options: { sizesMb: number[], repeats: number }): Promise<BenchResult> {
  const target = await startBenchTarget()
  const site = await startSite()
  const base = site.server.ready.httpUrl as string
  const ep = await api(base, site.token, 'POST', '/api/endpoints', { name: 'p4', tunnelTarget: target.url })
  const agent = await startProc('agent', ['agent', '--join-token', ep.joinToken, '--data-dir', dataDir('agent')])
  const auth = { authorization: `Bearer ${site.token}` }
  const figures: Record<string, unknown> = {}
  const baseline: Record<string, unknown> = {}
  const ratios: Record<string, number> = {}
  const labels: string[] = []
  const tunnelled: number[] = []
  const directs: number[] = []
  try {
    await timedGet(`${base}/api/endpoints/${ep.id}/proxy/small`, auth)
    for (const mb of options.sizesMb) {
      const bytes = mb * 1024 * 1024
      let best = 0
      let bestDirect = 0
      for (let i = 0; i < options.repeats; i++) {
        const viaTunnel = await timedGet(`${base}/api/endpoints/${ep.id}/proxy/bytes/${bytes}`, auth)
        if (viaTunnel.bytes !== bytes) throw new Error(`tunnel delivered ${viaTunnel.bytes} of ${bytes}`)
        const direct = await timedGet(`${target.url}/bytes/${bytes}`)
        best = Math.max(best, bytes / viaTunnel.seconds / 1e6)
        bestDirect = Math.max(bestDirect, bytes / direct.seconds / 1e6)
      }
      figures[`tunnel${mb}MB`] = { MBps: round(best, 1) }
      baseline[`direct${mb}MB`] = { MBps: round(bestDirect, 1) }
      ratios[`${mb}MB`] = round(best / bestDirect, 3)
      labels.push(`${mb} MB`)
      tunnelled.push(best)
      directs.push(bestDirect)
    }
  } finally {
    await agent.stop()
    await site.stop()
    await target.close()
  }
  const worst = Math.min(...Object.values(ratios))
  const result: BenchResult = {
    scenario: 'p4-tunnel-throughput',
    parameters: { sizesMb: options.sizesMb, repeats: options.repeats, path: 'client -> server (its HTTP proxy, server/http-splice.ts) -> relay -> agent -> target, all on loopback, separate processes' },
    figures,
    baseline,
    ratios,
    targets: { ratio: { target: '>= 0.40 of direct', met: worst >= 0.4 } }
  }
  writeResult(result, barChart('P4: GET throughput through the tunnel vs direct (same run)', 'MB/s', labels, [
    { name: 'through the tunnel', values: tunnelled, color: '#2563eb' },
    { name: 'direct to the target', values: directs, color: '#9ca3af' }
  ]))
  return result
}
