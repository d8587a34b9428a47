import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/index.js'
import { atLeastVersion, UPDATES_SINCE } from '../common/version.js'
import type { Store } from './store.js'
import type { RelayHub, AgentRef, AgentMessage, RelayLevelMessage } from './hub.js'
import { newId } from './ids.js'
import {
  FINAL_TARGET_STATES, type RolloutRecord, type RolloutState, type UpdateTargetRecord, type UpdateTargetState
} from './update-store.js'

/** How often rollouts move on, time out and notice agents that came back (ms). */
const TICK_MS = 1000
/** Waits this long after a presence change before moving rollouts on (changes come in bursts). */
const SOON_MS = 100
/** Progress writes are gathered this long and written in one transaction. */
const FLUSH_MS = 250
/** A rollout's deadline when its creator names none: a week (sites come back after a weekend). */
const DEFAULT_DEADLINE_MS = 7 * 86_400_000
/** Targets on their way (sent … restarting). */
const IN_FLIGHT: readonly UpdateTargetState[] = ['sent', 'downloading', 'verifying', 'installing', 'restarting']
/** Back to pending when the agent drops before it switched (it downloads again, resuming, when it returns). */
const BEFORE_SWITCH: readonly UpdateTargetState[] = ['sent', 'downloading', 'verifying', 'installing']
const FINAL = new Set<UpdateTargetState>(FINAL_TARGET_STATES)
/** A target that was sent an order and says nothing for this long is sent it again (the order or the agent went missing). */
const SILENT_RESEND_MS = 60_000

export interface RolloutInput {
  artifact: string
  version: string
  target: 'agents' | 'relays'
  /** Endpoint ids (agents) or relay ids (relays); default: all of them. */
  ids?: string[]
  /** Canaries go first; the rest only once all of them updated. A number takes the first N targets. */
  canary?: number | string[]
  healthSeconds?: number
  maxParallel?: number
  deadlineSeconds?: number
}

export interface RolloutView {
  id: string
  target: 'agents' | 'relays'
  artifact: string
  version: string
  sha256: string
  size: number
  state: RolloutState
  reason: string | null
  healthSeconds: number
  maxParallel: number
  createdAt: string
  deadline: string
  counts: Record<'total' | 'pending' | 'inFlight' | 'succeeded' | 'failed' | 'cancelled', number>
  targets: Array<Record<string, unknown>>
}

type ProgressReport = Omit<AgentMessage<'update-progress'>, 'sid' | 'mac' | 't'>

/**
 * Staged self-update rollouts (issue 16): an executable uploaded as an
 * artifact goes to agents (an order authenticated end to end, through their
 * relays) or to relays (over their link), canaries first, at most
 * `maxParallel` at once, an offline one when it returns. The state is in the
 * store; every replica moves on the rollouts for the agents and relays it
 * holds (a tick, and presence changes), so pause, resume and abort take
 * effect wherever they were asked.
 */
export class UpdateManager {
  private readonly store: Store
  private readonly hub: RelayHub
  private readonly logger: Logger
  private readonly tickTimer: NodeJS.Timeout
  private soonTimer: NodeJS.Timeout | null = null
  private advancing: Promise<void> | null = null
  private readonly listeners: Array<(updateId: string) => void> = []
  /** Agent versions from their latest snapshots (the store's copy is written in batches, later). */
  private readonly agentVersions = new Map<string, string>()
  private readonly pending = new Map<string, { updateId: string, targetId: string, patch: Partial<UpdateTargetRecord> }>()
  private flushTimer: NodeJS.Timeout | null = null
  private closed = false
  /** The agent session each order went to (bounded by the targets on their way): another session gets it again. */
  private readonly sentTo = new Map<string, AgentRef>()

  constructor (options: { store: Store, hub: RelayHub, logger: Logger }) {
    this.store = options.store
    this.hub = options.hub
    this.logger = options.logger
    this.hub.onRelayMessage('update-progress', (agent, msg) => this.onAgentProgress(agent, msg))
    this.hub.onRelayLevel('relay-update-progress', (relayId, msg) => this.onRelayProgress(relayId, msg))
    this.hub.onPresence((agent, online) => {
      if (!online) void this.agentLeft(agent.endpointId).catch(err => this.warn(err, 'update targets not reset'))
      this.soon()
    })
    this.hub.onRelayLinked(() => this.soon())
    this.tickTimer = setInterval(() => this.soon(0), TICK_MS)
    this.tickTimer.unref()
  }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.tickTimer)
    if (this.soonTimer !== null) clearTimeout(this.soonTimer)
    await this.advancing
    await this.flush()
  }

  /** Called with a rollout's id whenever it or one of its targets changed. */
  onChange (listener: (updateId: string) => void): void {
    this.listeners.push(listener)
  }

  /** An agent's version, from the snapshot it sent (kept in memory: the store has it only once the batch is written). */
  noteAgentVersion (endpointId: string, version: unknown): void {
    if (typeof version === 'string') this.agentVersions.set(endpointId, version)
  }

  async create (input: RolloutInput): Promise<RolloutRecord> {
    const artifact = await this.store.getArtifact(input.artifact)
    if (artifact === undefined) throw new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${input.artifact}`)
    const ids = input.ids ?? (input.target === 'agents'
      ? (await this.store.listEndpoints()).map(e => e.id)
      : (await this.store.listRelays()).filter(r => r.revokedAt === null).map(r => r.id))
    const unique = [...new Set(ids)]
    for (const id of unique) {
      const known = input.target === 'agents' ? await this.store.getEndpoint(id) : await this.store.getRelay(id)
      if (known === undefined) throw new RelaygateError('RG_ERR_NOT_FOUND', `no ${input.target === 'agents' ? 'endpoint' : 'relay'} ${id}`)
    }
    if (unique.length === 0) throw new RelaygateError('RG_ERR_BAD_REQUEST', `no ${input.target === 'agents' ? 'endpoints' : 'relays'} to update`)
    const canaries = new Set(typeof input.canary === 'number' ? unique.slice(0, input.canary) : (input.canary ?? []))
    for (const id of canaries) if (!unique.includes(id)) throw new RelaygateError('RG_ERR_BAD_REQUEST', `canary ${id} is not one of the targets`)
    const now = Date.now()
    const rollout: RolloutRecord = {
      id: newId('u'),
      kind: input.target,
      artifact: artifact.name,
      sha256: artifact.sha256,
      size: artifact.size,
      version: input.version,
      state: 'running',
      reason: null,
      healthSeconds: input.healthSeconds ?? 120,
      maxParallel: input.maxParallel ?? 1000,
      createdAt: now,
      deadline: now + (input.deadlineSeconds === undefined ? DEFAULT_DEADLINE_MS : input.deadlineSeconds * 1000)
    }
    await this.store.updates.createRollout(rollout, unique.map(id => ({ id, canary: canaries.has(id) })))
    this.logger.info({ updateId: rollout.id, target: rollout.kind, version: rollout.version, targets: unique.length, canaries: canaries.size }, 'rollout created')
    this.changed(rollout.id)
    this.soon(0)
    return rollout
  }

  /** Stops sending the update to more targets (those on their way go on). */
  async pause (id: string): Promise<void> {
    await this.transition(id, 'paused', 'paused by an admin', ['running'])
  }

  async resume (id: string): Promise<void> {
    await this.transition(id, 'running', null, ['paused'])
    this.soon(0)
  }

  /** Ends the rollout: targets not sent yet are cancelled; those on their way report how they ended. */
  async abort (id: string): Promise<void> {
    await this.transition(id, 'aborted', 'aborted by an admin', ['running', 'paused'])
    await this.flush()
    await this.store.updates.endUpdateTargets(id, 'cancelled', 'RG_ERR_UPDATE_ABORTED', 'the rollout was aborted before this target updated', Date.now(), ['pending'])
    this.changed(id)
  }

  private async transition (id: string, to: RolloutState, reason: string | null, from: RolloutState[]): Promise<void> {
    const rollout = await this.store.updates.getRollout(id)
    if (rollout === undefined) throw new RelaygateError('RG_ERR_NOT_FOUND', `no update ${id}`)
    if (!await this.store.updates.setRolloutState(id, to, reason, from)) {
      throw new RelaygateError('RG_ERR_UPDATE_STATE', `the rollout is ${rollout.state}; only a ${from.join(' or ')} one can be ${to === 'running' ? 'resumed' : to}`)
    }
    this.logger.info({ updateId: id, state: to }, 'rollout state changed')
    this.changed(id)
  }

  /** One rollout with its targets; `names` holds the endpoints' and relays' names once read (a list reads them once for all). */
  async view (id: string, names: Partial<Record<RolloutRecord['kind'], Map<string, string>>> = {}): Promise<RolloutView | undefined> {
    const r = await this.store.updates.getRollout(id)
    if (r === undefined) return undefined
    await this.flush()
    const targets = await this.store.updates.listUpdateTargets(id)
    names[r.kind] ??= new Map<string, string>(r.kind === 'agents'
      ? (await this.store.listEndpoints()).map(e => [e.id, e.name])
      : (await this.store.listRelays()).map(x => [x.id, x.name]))
    const nameOf = names[r.kind]!
    const count = (states: readonly UpdateTargetState[]): number => targets.filter(t => states.includes(t.state)).length
    return {
      id: r.id,
      target: r.kind,
      artifact: r.artifact,
      version: r.version,
      sha256: r.sha256,
      size: r.size,
      state: r.state,
      reason: r.reason,
      healthSeconds: r.healthSeconds,
      maxParallel: r.maxParallel,
      createdAt: new Date(r.createdAt).toISOString(),
      deadline: new Date(r.deadline).toISOString(),
      counts: { total: targets.length, pending: count(['pending']), inFlight: count(IN_FLIGHT), succeeded: count(['succeeded']), failed: count(['failed']), cancelled: count(['cancelled']) },
      targets: targets.map(t => {
        const out: Record<string, unknown> = {
          id: t.targetId, name: nameOf.get(t.targetId) ?? null, canary: t.canary, state: t.state, progress: t.progress, bytes: t.bytes,
          fromVersion: t.fromVersion, version: t.running, updatedAt: new Date(t.updatedAt).toISOString()
        }
        if (t.errorCode !== null) out.error = { code: t.errorCode, message: t.errorMessage ?? '' }
        else if (t.errorMessage !== null) out.note = t.errorMessage
        return out
      })
    }
  }

  async list (limit = 50): Promise<RolloutView[]> {
    const views: RolloutView[] = []
    const names = {}
    for (const r of await this.store.updates.listRollouts(limit)) {
      const v = await this.view(r.id, names)
      if (v !== undefined) views.push(v)
    }
    return views
  }

  // ---- moving rollouts on ----

  /** Moves the active rollouts on after `ms` (coalesced). */
  private soon (ms = SOON_MS): void {
    if (this.closed || this.soonTimer !== null) return
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null
      if (this.advancing !== null) return this.soon()
      this.advancing = this.advanceAll().catch(err => this.warn(err, 'rollouts not moved on')).finally(() => { this.advancing = null })
    }, ms)
  }

  private async advanceAll (): Promise<void> {
    await this.flush()
    for (const r of await this.store.updates.activeRollouts()) {
      if (this.closed) return
      await this.advance(r)
    }
  }

  /** One rollout: deadline, timeouts, canary gate, then dispatch to the targets held here, and its end. */
  private async advance (r: RolloutRecord): Promise<void> {
    const now = Date.now()
    if (now > r.deadline) {
      await this.store.updates.endUpdateTargets(r.id, 'failed', 'RG_ERR_UPDATE_TIMEOUT', `the rollout's deadline (${new Date(r.deadline).toISOString()}) passed before this target updated`, now)
      await this.finish(r, 'failed', 'the deadline passed')
      return
    }
    let targets = await this.store.updates.listUpdateTargets(r.id)
    await this.timeOut(r, targets, now)
    targets = await this.store.updates.listUpdateTargets(r.id)
    if (targets.every(t => FINAL.has(t.state))) {
      const failed = targets.filter(t => t.state !== 'succeeded').length
      await this.finish(r, failed === 0 ? 'succeeded' : 'failed', failed === 0 ? null : `${failed} of ${targets.length} targets did not update`)
      return
    }
    if (r.state !== 'running') return
    const canaries = targets.filter(t => t.canary)
    let eligible: UpdateTargetRecord[]
    if (canaries.some(t => !FINAL.has(t.state))) eligible = canaries
    else if (canaries.some(t => t.state !== 'succeeded')) {
      const bad = canaries.find(t => t.state !== 'succeeded')!
      const why = `canary ${bad.targetId} did not update (${bad.errorCode ?? bad.state}): the rest were not sent it`
      await this.store.updates.endUpdateTargets(r.id, 'cancelled', 'RG_ERR_UPDATE_ABORTED', why, now, ['pending'])
      await this.finish(r, 'failed', why)
      return
    } else eligible = targets
    let inFlight = targets.filter(t => IN_FLIGHT.includes(t.state)).length
    for (const t of eligible) {
      if (inFlight >= r.maxParallel) break
      if (t.state !== 'pending' && !(t.state === 'sent' && this.lost(r, t, now))) continue
      if (await this.dispatch(r, t, now)) inFlight++
    }
  }

  /** An order sent that was not heard of: silent for a minute, or its agent is here on another session now (it left and came back). */
  private lost (r: RolloutRecord, t: UpdateTargetRecord, now: number): boolean {
    if (now - t.updatedAt > SILENT_RESEND_MS) return true
    if (r.kind !== 'agents') return false
    const sent = this.sentTo.get(`${r.id}\n${t.targetId}`)
    const agent = this.hub.agentsOf(t.targetId)[0]
    return agent !== undefined && sent !== agent
  }

  private async finish (r: RolloutRecord, state: 'succeeded' | 'failed', reason: string | null): Promise<void> {
    if (r.state === 'aborted') return
    if (await this.store.updates.setRolloutState(r.id, state, reason, ['running', 'paused'])) {
      this.logger.info({ updateId: r.id, state, reason }, 'rollout finished')
      this.changed(r.id)
    }
  }

  /** A target silent for too long after its restart, or one restarting past its health deadline, fails. */
  private async timeOut (r: RolloutRecord, targets: UpdateTargetRecord[], now: number): Promise<void> {
    for (const t of targets) {
      if (t.state !== 'restarting' || now - t.updatedAt < r.healthSeconds * 1000 + 120_000) continue
      await this.store.updates.updateUpdateTarget(r.id, t.targetId, {
        state: 'failed', errorCode: 'RG_ERR_UPDATE_TIMEOUT', errorMessage: `did not report back within ${r.healthSeconds + 120} s of restarting into ${r.version}`, updatedAt: now
      }, ['restarting'])
      this.changed(r.id)
    }
  }

  /** Sends the update to one target if it is held here; true when sent. */
  private async dispatch (r: RolloutRecord, t: UpdateTargetRecord, now: number): Promise<boolean> {
    const order = { updateId: r.id, version: r.version, sha256: r.sha256, size: r.size, healthSeconds: r.healthSeconds, deadline: r.deadline }
    if (r.kind === 'relays') {
      const version = this.hub.relayVersion(t.targetId)
      if (version === null) return false
      if (!await this.ready(r, t, version, now)) return false
      if (!await this.markSent(r, t, version, now)) return false
      this.hub.sendToRelays({ t: 'relay-update', ...order }, t.targetId)
    } else {
      const agent = this.hub.agentsOf(t.targetId)[0]
      if (agent === undefined) return false
      const relayVersion = this.hub.relayVersion(agent.relayId) ?? ''
      if (!atLeastVersion(relayVersion, UPDATES_SINCE)) {
        await this.note(r, t, `waiting: its relay runs ${relayVersion === '' ? 'an unknown version' : relayVersion}, which cannot carry updates (${UPDATES_SINCE} or later can): update the relay first`, now)
        return false
      }
      const version = this.agentVersions.get(t.targetId) ?? (await this.store.listAgentVersions([t.targetId])).get(t.targetId)
      if (version === undefined) return false // its first snapshot is on its way
      if (!await this.ready(r, t, version, now)) return false
      if (!await this.markSent(r, t, version, now)) return false
      agent.order({ t: 'update', ...order })
      this.sentTo.set(`${r.id}\n${t.targetId}`, agent)
      if (this.sentTo.size > 100_000) this.sentTo.delete(this.sentTo.keys().next().value!)
    }
    this.logger.info({ updateId: r.id, target: t.targetId, version: r.version }, 'update sent')
    return true
  }

  /** False when the target needs no order: already on the version (succeeded), or too old to obey one (failed). */
  private async ready (r: RolloutRecord, t: UpdateTargetRecord, version: string, now: number): Promise<boolean> {
    if (version === r.version) {
      await this.store.updates.updateUpdateTarget(r.id, t.targetId, { state: 'succeeded', progress: 1, fromVersion: version, running: version, updatedAt: now }, ['pending', 'sent'])
      this.changed(r.id)
      return false
    }
    if (atLeastVersion(version, UPDATES_SINCE)) return true
    await this.store.updates.updateUpdateTarget(r.id, t.targetId, {
      state: 'failed', fromVersion: version, running: version, errorCode: 'RG_ERR_UPDATE_UNSUPPORTED', updatedAt: now,
      errorMessage: `it runs ${version}, which cannot update itself (${UPDATES_SINCE} or later can): install the new version with the install command`
    }, ['pending', 'sent'])
    this.changed(r.id)
    return false
  }

  private async markSent (r: RolloutRecord, t: UpdateTargetRecord, version: string, now: number): Promise<boolean> {
    const won = await this.store.updates.updateUpdateTarget(r.id, t.targetId, { state: 'sent', fromVersion: version, running: version, sentAt: now, updatedAt: now, errorMessage: null }, [t.state])
    if (won) this.changed(r.id)
    return won
  }

  /** Why a target waits (shown beside it), written once. */
  private async note (r: RolloutRecord, t: UpdateTargetRecord, message: string, now: number): Promise<void> {
    if (t.errorMessage === message) return
    await this.store.updates.updateUpdateTarget(r.id, t.targetId, { errorMessage: message, updatedAt: now }, ['pending'])
    this.changed(r.id)
  }

  /** An agent dropped before it switched: its target goes back to pending (sent again when it returns). */
  private async agentLeft (endpointId: string): Promise<void> {
    if (this.hub.agentsOf(endpointId).length > 0) return
    for (const r of await this.store.updates.activeRollouts()) {
      if (r.kind !== 'agents') continue
      await this.flush()
      if (await this.store.updates.updateUpdateTarget(r.id, endpointId, { state: 'pending', updatedAt: Date.now() }, BEFORE_SWITCH)) this.changed(r.id)
    }
  }

  // ---- reports ----

  private async onAgentProgress (agent: AgentRef, msg: AgentMessage<'update-progress'>): Promise<void> {
    const { sid: _sid, mac: _mac, t: _t, ...report } = msg
    await this.onProgress(agent.endpointId, report)
  }

  private async onRelayProgress (relayId: string, msg: RelayLevelMessage<'relay-update-progress'>): Promise<void> {
    const { t: _t, ...report } = msg
    await this.onProgress(relayId, report)
  }

  /**
   * Progress and outcomes, from the target itself (an agent's authenticated
   * end to end, a relay's over its own link). An outcome is applied once; a
   * success counts only from the new version running. A target the server
   * timed out takes the outcome that arrives later.
   */
  private async onProgress (targetId: string, report: ProgressReport): Promise<void> {
    const key = `${report.updateId}\n${targetId}`
    const queued = this.pending.get(key)
    const stored = await this.store.updates.getUpdateTarget(report.updateId, targetId)
    if (stored === undefined) return
    const current = queued === undefined ? stored : { ...stored, ...queued.patch }
    const timedOut = current.state === 'failed' && current.errorCode === 'RG_ERR_UPDATE_TIMEOUT'
    if (FINAL.has(current.state) && !timedOut) return
    const now = Date.now()
    if (report.state === 'succeeded' || report.state === 'failed') {
      if (report.state === 'succeeded' && report.running !== report.version) return
      await this.flush()
      const patch: Partial<UpdateTargetRecord> = report.state === 'succeeded'
        ? { state: 'succeeded', progress: 1, running: report.running, errorCode: null, errorMessage: null, updatedAt: now }
        : { state: 'failed', running: report.running, errorCode: report.code ?? 'RG_ERR_INTERNAL', errorMessage: report.message ?? 'the update failed', updatedAt: now }
      if (await this.store.updates.updateUpdateTarget(report.updateId, targetId, patch, current.state === 'failed' ? ['failed'] : [current.state])) {
        this.logger.info({ updateId: report.updateId, target: targetId, state: report.state, code: report.code }, 'update outcome')
        this.changed(report.updateId)
        this.soon()
      }
      return
    }
    if (timedOut) return
    this.pending.set(key, { updateId: report.updateId, targetId, patch: { ...queued?.patch, state: report.state, progress: report.progress, bytes: report.bytes, running: report.running, updatedAt: now } })
    this.flushTimer ??= setTimeout(() => { void this.flush().catch(err => this.warn(err, 'update progress not written')) }, FLUSH_MS)
  }

  /** Writes the gathered progress in one transaction (only onto targets still on their way). */
  private async flush (): Promise<void> {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer)
    this.flushTimer = null
    if (this.pending.size === 0) return
    const entries = [...this.pending.values()]
    this.pending.clear()
    await this.store.transaction(async tx => {
      for (const e of entries) await tx.updates.updateUpdateTarget(e.updateId, e.targetId, e.patch, IN_FLIGHT)
    })
    for (const id of new Set(entries.map(e => e.updateId))) this.changed(id)
  }

  private changed (updateId: string): void {
    for (const l of this.listeners) l(updateId)
  }

  private warn (err: unknown, what: string): void {
    this.logger.warn({ err: (err as Error).message }, what)
  }
}
