/**
 * A load-generator process: many real RelaygateAgent instances (the product's
 * agent code, not a fake), driven by the parent (bench/lib/fleet.ts) over IPC.
 *
 * Parent → worker: {t:'start', tokens, relayUrl, staggerMs, dataDir, ownDirs}
 *                  (ownDirs: each agent gets <dataDir>/<pid>-<i> of its own, for jobs)
 *                  units?: {path, version}: each agent runs as its systemd unit would (self-update:
 *                  bench/lib/unit-agent.ts), installed from the build at `path`
 *                  {t:'measure', on}   (collect check-in round trips or not)
 *                  {t:'collect'}       → {t:'rtts', samples: Float64Array, loopDelay: {p99Ms, maxMs}}
 *                                        (loopDelay: this process's event-loop delay while measuring)
 *                  {t:'stop'}          → closes every agent and exits
 * Worker → parent: {t:'status', started, online, fatal, answers} every 250 ms
 */
import { randomUUID } from 'node:crypto'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { join } from 'node:path'
import { pino } from 'pino'
import { RelaygateAgent } from '../../agent/agent.js'
import { UnitAgent } from './unit-agent.js'

interface StartMessage { t: 'start', tokens: string[], relayUrl: string, staggerMs: number, dataDir: string, ownDirs?: boolean, units?: { path: string, version: string } }
type Message = StartMessage | { t: 'measure', on: boolean } | { t: 'collect' } | { t: 'stop' }

const logger = pino({ level: 'silent' })
const agents: RelaygateAgent[] = []
const units: UnitAgent[] = []
let online = 0
let fatal = 0
let measuring = false
let rtts: number[] = []
// How late this process's own event loop runs: a round trip measured here
// can be no better than the generator's scheduling delay.
const loopDelay = monitorEventLoopDelay({ resolution: 10 })
let startTimer: NodeJS.Timeout | null = null
let statusTimer: NodeJS.Timeout | null = null

function send (msg: unknown): void {
  if (process.connected) process.send!(msg)
}

function watch (agent: RelaygateAgent): void {
  agent.on('online', () => { online++ })
  agent.on('offline', () => { online-- })
  agent.on('fatal', () => { fatal++ })
  agent.on('rtt', (ms: number) => { if (measuring) rtts.push(ms) })
}

function start (m: StartMessage): void {
  const n = m.tokens.length
  let i = 0
  const step = n === 0 ? 0 : m.staggerMs / n
  const t0 = performance.now()
  const tick = (): void => {
    // Start every agent whose turn has come (timers are coarse at this rate).
    const due = step === 0 ? n : Math.min(n, Math.floor((performance.now() - t0) / step) + 1)
    for (; i < due; i++) {
      const dataDir = m.ownDirs === true || m.units !== undefined ? join(m.dataDir, `${process.pid}-${i}`) : m.dataDir
      const config = { joinToken: m.tokens[i], relays: [m.relayUrl], edgeId: randomUUID(), drainTimeoutMs: 0 }
      if (m.units !== undefined) {
        const unit = new UnitAgent(dataDir, m.units, () => config, logger, agent => { watch(agent); agents.push(agent) })
        unit.start()
        units.push(unit)
        continue
      }
      const agent = new RelaygateAgent({ ...config, dataDir }, logger)
      watch(agent)
      agent.start()
      agents.push(agent)
    }
    if (i < n) startTimer = setTimeout(tick, Math.max(1, Math.min(50, step)))
  }
  tick()
  statusTimer = setInterval(() => {
    let answers = 0
    for (const a of agents) answers += a.answers
    send({ t: 'status', started: agents.length, online, fatal, answers })
  }, 250)
}

async function stop (): Promise<void> {
  if (startTimer !== null) clearTimeout(startTimer)
  if (statusTimer !== null) clearInterval(statusTimer)
  await Promise.race([
    Promise.allSettled([...units.map(async u => { await u.stop() }), ...agents.map(async a => { await a.destroy() })]),
    new Promise(resolve => setTimeout(resolve, 5000))
  ])
  process.exit(0)
}

process.on('message', (m: Message) => {
  switch (m.t) {
    case 'start': start(m); break
    case 'measure':
      measuring = m.on
      if (m.on) {
        loopDelay.reset()
        loopDelay.enable()
      } else {
        loopDelay.disable()
      }
      break
    case 'collect':
      send({ t: 'rtts', samples: Float64Array.from(rtts), loopDelay: { p99Ms: loopDelay.percentile(99) / 1e6, maxMs: loopDelay.max / 1e6 } })
      rtts = []
      break
    case 'stop': void stop(); break
  }
})
// The parent went away: never outlive it.
process.on('disconnect', () => { void stop() })
send({ t: 'hello' })
