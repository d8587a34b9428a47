/**
 * A process hosting a few real agents (the product's RelaygateAgent) with
 * data dirs of their own, as one machine of a chaos soak: SIGKILL of this
 * process is a crash of those agents; started again with the same plan,
 * they come back with their edge ids, files and stored results.
 *
 * argv[2]: a JSON plan {relays: string[], tunnelTarget: string, agents: [{joinToken, dataDir}]}
 * Worker → parent (IPC): {t:'status', online, fatal} every 500 ms.
 */
import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { RelaygateAgent } from '../../agent/agent.js'

interface Plan { relays: string[], tunnelTarget: string, agents: Array<{ joinToken: string, dataDir: string }> }

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8')) as Plan
const logger = pino({ level: 'silent' })
let online = 0
let fatal = 0
const agents = plan.agents.map(a => {
  const agent = new RelaygateAgent({
    joinToken: a.joinToken, dataDir: a.dataDir, relays: plan.relays, allowExec: true, tunnelTarget: plan.tunnelTarget, drainTimeoutMs: 0
  }, logger)
  agent.on('online', () => { online++ })
  agent.on('offline', () => { online-- })
  agent.on('fatal', () => { fatal++ })
  return agent.start()
})
const status = setInterval(() => { if (process.connected) process.send!({ t: 'status', online, fatal }) }, 500)

process.on('message', (m: { t: string }) => {
  if (m.t !== 'stop') return
  clearInterval(status)
  void Promise.race([
    Promise.allSettled(agents.map(async a => { await a.destroy() })),
    new Promise(resolve => setTimeout(resolve, 5000))
  ]).then(() => process.exit(0))
})
