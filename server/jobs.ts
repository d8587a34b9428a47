import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/index.js'
import { DEFAULT_JOB_DEADLINE_MS, type Store, type JobRecord, type JobTargetRecord, type JobTargetState } from './store.js'
import type { RelayHub, AgentRef, AgentMessage, RelayLevelMessage } from './hub.js'
import type { ServerToRelay } from '../protocol/messages.js'
import type { SecurityLog } from './security.js'
import { newId } from './ids.js'
import { UnansweredOrders, ORDER_RESENDS } from './job-orders.js'

const FINAL: ReadonlySet<JobTargetState> = new Set(['succeeded', 'failed'])
/** How long target updates wait to be written together. */
const FLUSH_MS = 100
/** How long agents coming online wait to have their jobs looked up together (ms). */
const ARRIVAL_MS = 50
/** How often targets are checked against their job's deadline (ms). */
const DEADLINE_CHECK_MS = 1000

/** The longest file name (bytes) of the agents' file systems (Linux, macOS, Windows). */
const NAME_MAX = 255

/** A job path: relative, no "..", no empty or dot segments, no backslashes or NULs. */
export function verifyJobPath (path: string): string {
  const bad = path === '' || path.length > 512 || path.startsWith('/') || path.includes('\\') || path.includes('\0') ||
    path.split('/').some(seg => seg === '' || seg === '.' || seg === '..')
  if (bad) throw new RelaygateError('RG_ERR_PATH_ESCAPE', `path "${path.slice(0, 80)}" must be relative to the agent's files dir, without ".." or empty segments`)
  const long = path.split('/').find(seg => Buffer.byteLength(seg) > NAME_MAX)
  if (long !== undefined) throw new RelaygateError('RG_ERR_BAD_REQUEST', `path segment "${long.slice(0, 40)}…" is ${Buffer.byteLength(long)} bytes; a file name has at most ${NAME_MAX}`)
  return path
}

export interface JobView {
  id: string
  state: 'queued' | 'running' | 'succeeded' | 'failed'
  artifact: string
  sha256: string
  size: number
  path: string
  run: string[] | null
  createdAt: string
  deadline: string
  targets: Array<Record<string, unknown>>
}

/**
 * Jobs: deliver an artifact (and optionally run an allow-listed command) on
 * a set of endpoints. Dispatch goes through each endpoint's relay; an
 * endpoint offline at dispatch gets its job when it comes back. Results come
 * from the relay's durable queue and are applied once per (job, endpoint,
 * attempt).
 */
export class JobManager {
  private readonly store: Store
  private readonly hub: RelayHub
  private readonly logger: Logger
  private readonly listeners: Array<(jobId: string) => void> = []
  /** Last progress write per target (bounded), to coalesce frequent progress messages. */
  private readonly lastProgress = new Map<string, { state: string, at: number }>()
  /**
   * Target updates not yet written, merged per target, with the relay acks
   * that wait for them: written together in one transaction every
   * FLUSH_MS. One commit per progress message or result (better-sqlite3 runs
   * them on the event loop) stopped the server for 26 s when 1,000 agents
   * finished at once on a busy disk (bench P5 profile).
   */
  private readonly pending = new Map<string, PendingUpdate>()
  private flushTimer: NodeJS.Timeout | null = null
  /**
   * Agents that came online in the last ARRIVAL_MS, by endpoint: their jobs
   * are looked up together. `sent`: jobs created meanwhile, already sent.
   */
  private readonly arrivals = new Map<string, { agent: AgentRef, sent: Set<string> }>()
  private arrivalTimer: NodeJS.Timeout | null = null
  /** The flush being written: flushes run one after another, so a later update is never overwritten by an earlier one. */
  private flushing: Promise<void> | null = null
  /** Fails targets whose job's deadline passed (see failOverdue), and sends unanswered orders again (see resendUnanswered). */
  private readonly deadlineTimer: NodeJS.Timeout
  /** Orders sent from here and not answered yet. */
  private readonly unanswered: UnansweredOrders
  private resending = false

  private readonly security: SecurityLog

  constructor (options: { store: Store, hub: RelayHub, logger: Logger, security: SecurityLog, orderAnswerMs?: number }) {
    this.unanswered = new UnansweredOrders(options.orderAnswerMs)
    this.store = options.store
    this.hub = options.hub
    this.logger = options.logger
    this.security = options.security
    this.hub.onPresence((agent, online) => {
      if (!online) return
      this.arrivals.set(agent.endpointId, { agent, sent: new Set() })
      this.arrivalTimer ??= setTimeout(() => { void this.dispatchArrivals() }, ARRIVAL_MS)
    })
    this.hub.onRelayMessage('job-progress', (agent, msg) => this.onProgress(agent, msg))
    this.hub.onRelayMessage('order-refused', (agent, msg) => this.onOrderRefused(agent, msg))
    this.hub.onRelayLevel('job-result', (relayId, msg, reply) => this.onResult(relayId, msg, reply))
    this.hub.onRelayLevel('result-held', (relayId, msg) => this.onResultHeld(relayId, msg))
    this.deadlineTimer = setInterval(() => {
      this.failOverdue().catch((err: Error) => this.logger.warn({ err: err.message }, 'job deadlines not checked'))
      if (!this.resending) {
        this.resending = true
        this.resendUnanswered().catch((err: Error) => this.logger.warn({ err: err.message }, 'unanswered job orders not checked')).finally(() => { this.resending = false })
      }
    }, DEADLINE_CHECK_MS)
    this.deadlineTimer.unref()
  }

  /** Stops the deadline checks and writes what is pending. */
  async close (): Promise<void> {
    clearInterval(this.deadlineTimer)
    if (this.arrivalTimer !== null) clearTimeout(this.arrivalTimer)
    await this.flush()
  }

  /**
   * Every target ends: one still waiting when its job's deadline passes
   * (its agent offline, its download waiting for a relay, its result held
   * by a relay that never came back) fails with RG_ERR_JOB_DEADLINE, saying
   * what it was doing then. A late result for it is not applied.
   */
  async failOverdue (now = Date.now()): Promise<void> {
    for (const overdue of await this.store.overdueTargets(now, 1000)) {
      const target = await this.target(overdue.jobId, overdue.endpointId)
      if (target === undefined || FINAL.has(target.state)) continue
      const online = this.hub.agentsOf(target.endpointId).length > 0
      const doing = target.state === 'queued' ? (online ? 'queued' : 'queued, its agent offline') : `${target.state} (attempt ${target.attempt})`
      this.queueUpdate(target.jobId, target.endpointId, {
        state: 'failed',
        errorCode: 'RG_ERR_JOB_DEADLINE',
        errorMessage: `the job's deadline passed while this target was ${doing}`,
        updatedAt: now
      }, target.attempt)
      this.logger.warn({ jobId: target.jobId, endpointId: target.endpointId, was: target.state }, 'job target failed: deadline passed')
    }
  }

  /**
   * Orders unanswered for ORDER_ANSWER_MS (15 s; the target still queued at that
   * attempt, its agent online here) go again as a new attempt; after
   * ORDER_RESENDS the agent's next arrival sends it (and the deadline ends it).
   */
  async resendUnanswered (now = Date.now()): Promise<void> {
    for (const w of this.unanswered.takeDue(now)) {
      const agent = this.hub.agentsOf(w.endpointId)[0]
      if (agent === undefined) continue
      const target = await this.target(w.jobId, w.endpointId)
      if (target === undefined || target.state !== 'queued' || target.attempt !== w.attempt) continue
      if (w.resends >= ORDER_RESENDS) {
        this.logger.warn({ jobId: w.jobId, endpointId: w.endpointId, attempt: w.attempt }, 'job order still unanswered; left to the agent\'s next arrival')
        continue
      }
      const job = await this.store.getJob(w.jobId)
      if (job === undefined) continue
      this.logger.warn({ jobId: w.jobId, endpointId: w.endpointId, attempt: w.attempt, seconds: Math.round((now - w.sentAt) / 1000) }, 'job order unanswered; sending it again')
      await this.dispatch(job, agent, w.endpointId, w.resends + 1)
    }
  }

  /** A target as it will be once pending updates are written. */
  private async target (jobId: string, endpointId: string): Promise<JobTargetRecord | undefined> {
    const stored = await this.store.getJobTarget(jobId, endpointId)
    const queued = this.pending.get(`${jobId}\n${endpointId}`)
    return stored === undefined || queued === undefined ? stored : { ...stored, ...queued.patch }
  }

  /**
   * Queues a change of a target, for the attempt it is about: it is written
   * only if the target is still at that attempt and unfinished (checked in
   * the write itself), so a result is applied once and nothing that was
   * decided on an older read (late progress) overwrites a finished target.
   */
  private queueUpdate (jobId: string, endpointId: string, patch: Partial<JobTargetRecord>, onlyAttempt: number, ack?: () => void): void {
    const key = `${jobId}\n${endpointId}`
    const entry = this.pending.get(key)
    if (entry === undefined) this.pending.set(key, { jobId, endpointId, patch, onlyAttempt, acks: ack === undefined ? [] : [ack] })
    else {
      Object.assign(entry.patch, patch)
      entry.onlyAttempt = onlyAttempt
      if (ack !== undefined) entry.acks.push(ack)
    }
    this.flushTimer ??= setTimeout(() => { void this.flush() }, FLUSH_MS)
  }

  /** Writes pending target updates in one transaction, then acks and notifies. */
  async flush (): Promise<void> {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer)
    this.flushTimer = null
    while (this.flushing !== null) await this.flushing
    if (this.pending.size === 0) return
    const entries = [...this.pending.values()]
    this.pending.clear()
    this.flushing = this.write(entries).finally(() => { this.flushing = null })
    await this.flushing
  }

  private async write (entries: PendingUpdate[]): Promise<void> {
    try {
      await this.store.transaction(async tx => {
        for (const e of entries) await tx.updateJobTarget(e.jobId, e.endpointId, e.patch, e.onlyAttempt)
      })
    } catch (err) {
      // Not acked: the relays keep the results and send them again.
      this.logger.error({ err: (err as Error).message, targets: entries.length }, 'job target updates not written')
      return
    }
    for (const e of entries) for (const ack of e.acks) ack()
    for (const jobId of new Set(entries.map(e => e.jobId))) this.changed(jobId)
  }

  /** Called with a job id whenever a job's state or progress changes. */
  onChange (listener: (jobId: string) => void): void {
    this.listeners.push(listener)
  }

  async create (input: { artifact: string, endpoints: string[], path?: string, run?: string[], deadlineSeconds?: number }): Promise<JobRecord> {
    const artifact = await this.store.getArtifact(input.artifact)
    if (artifact === undefined) throw new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${input.artifact}`)
    const unique = [...new Set(input.endpoints)]
    for (const id of unique) {
      if (await this.store.getEndpoint(id) === undefined) throw new RelaygateError('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
    }
    const now = Date.now()
    const job: JobRecord = {
      id: newId('j'),
      artifact: artifact.name,
      sha256: artifact.sha256,
      size: artifact.size,
      path: verifyJobPath(input.path ?? artifact.name),
      run: input.run ?? null,
      createdAt: now,
      deadline: now + (input.deadlineSeconds === undefined ? DEFAULT_JOB_DEADLINE_MS : input.deadlineSeconds * 1000)
    }
    await this.store.createJob(job, unique)
    this.logger.info({ jobId: job.id, artifact: job.artifact, targets: unique.length }, 'job created')
    for (const endpointId of unique) {
      const agent = this.hub.agentsOf(endpointId)[0]
      if (agent === undefined) continue
      this.arrivals.get(endpointId)?.sent.add(job.id)
      await this.dispatch(job, agent, endpointId)
    }
    this.changed(job.id)
    return job
  }

  /**
   * A job another replica created: its targets whose agents are online
   * here are sent from here (the other replica sent those it holds).
   */
  async dispatchLocal (jobId: string): Promise<void> {
    const job = await this.store.getJob(jobId)
    if (job === undefined) return
    for (const target of await this.store.listJobTargets(jobId)) {
      if (target.state !== 'queued' || target.attempt > 0) continue
      const agent = this.hub.agentsOf(target.endpointId)[0]
      if (agent === undefined) continue
      this.arrivals.get(target.endpointId)?.sent.add(job.id)
      await this.dispatch(job, agent, target.endpointId)
    }
  }

  /**
   * Several replicas, after notifications were lost: targets never sent
   * (attempt 0) whose agents are online here are sent now.
   */
  async dispatchQueued (endpointIds: string[]): Promise<void> {
    const jobs = new Map<string, JobRecord | undefined>()
    for (const target of await this.store.unfinishedTargets(endpointIds)) {
      const agent = this.hub.agentsOf(target.endpointId)[0]
      if (target.attempt > 0 || agent === undefined) continue
      if (!jobs.has(target.jobId)) jobs.set(target.jobId, await this.store.getJob(target.jobId))
      const job = jobs.get(target.jobId)
      if (job !== undefined) await this.dispatch(job, agent, target.endpointId)
    }
  }

  /** A job with its targets; `names` (endpoint id -> name) is read from the store when not given. */
  async view (id: string, names?: Map<string, string>): Promise<JobView | undefined> {
    const job = await this.store.getJob(id)
    if (job === undefined) return undefined
    const nameOf = names ?? await this.endpointNames()
    const targets = (await this.store.listJobTargets(id)).map(t => {
      const queued = this.pending.get(`${t.jobId}\n${t.endpointId}`)
      return queued === undefined ? t : { ...t, ...queued.patch }
    })
    return {
      id: job.id,
      state: aggregate(targets),
      artifact: job.artifact,
      sha256: job.sha256,
      size: job.size,
      path: job.path,
      run: job.run,
      createdAt: new Date(job.createdAt).toISOString(),
      deadline: new Date(job.deadline).toISOString(),
      targets: targets.map(t => {
        const out: Record<string, unknown> = {
          endpointId: t.endpointId,
          name: nameOf.get(t.endpointId) ?? null,
          state: t.state,
          progress: t.progress,
          bytes: t.bytes,
          attempt: t.attempt,
          updatedAt: new Date(t.updatedAt).toISOString()
        }
        if (t.exitCode !== null) out.exitCode = t.exitCode
        if (t.errorCode !== null) out.error = { code: t.errorCode, message: t.errorMessage ?? '' }
        if (t.output !== null) out.output = t.output
        return out
      })
    }
  }

  private async endpointNames (): Promise<Map<string, string>> {
    return new Map((await this.store.listEndpoints()).map(e => [e.id, e.name]))
  }

  async list (limit = 100): Promise<JobView[]> {
    const views = []
    const names = await this.endpointNames()
    for (const j of await this.store.listJobs(limit)) {
      const view = await this.view(j.id, names)
      if (view !== undefined) views.push(view)
    }
    return views
  }

  /**
   * Sends the agents that came online their endpoints' unfinished jobs:
   * looked up together (a relay bringing back 15,000 agents costs a few
   * queries, not 15,000), after the results waiting to be written (a target
   * they finish is not sent again).
   */
  private async dispatchArrivals (): Promise<void> {
    this.arrivalTimer = null
    const agents = new Map(this.arrivals)
    this.arrivals.clear()
    try {
      await this.flush()
      const jobs = new Map<string, JobRecord | undefined>()
      for (const target of await this.store.unfinishedTargets([...agents.keys()])) {
        const arrival = agents.get(target.endpointId)
        if (arrival === undefined || !arrival.agent.online || arrival.sent.has(target.jobId)) continue
        const { agent } = arrival
        if (!jobs.has(target.jobId)) jobs.set(target.jobId, await this.store.getJob(target.jobId))
        const job = jobs.get(target.jobId)
        if (job !== undefined) await this.dispatch(job, agent, target.endpointId)
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message, endpoints: agents.size }, 'jobs not dispatched; they go out when the agents return')
    }
  }

  /** Sends a job to an agent as the target's next attempt (counted in the store first, so a result names a known attempt). */
  private async dispatch (job: JobRecord, agent: AgentRef, endpointId: string, resends = 0): Promise<void> {
    const attempt = await this.store.nextAttempt(job.id, endpointId, agent.relayId, Date.now())
    if (attempt === undefined) return
    agent.order({ t: 'job', jobId: job.id, attempt, sha256: job.sha256, size: job.size, path: job.path, run: job.run, deadline: job.deadline })
    this.unanswered.sent({ jobId: job.id, endpointId, attempt, sentAt: Date.now(), resends })
    this.logger.info({ jobId: job.id, endpointId, attempt, relayId: agent.relayId }, 'job dispatched')
  }

  private async onProgress (agent: AgentRef, msg: AgentMessage<'job-progress'>): Promise<void> {
    this.unanswered.answered(msg.jobId, agent.endpointId, msg.attempt)
    // Progress is frequent (every agent, several times a second): write a state change at once,
    // the same state's progress at most once a second per target.
    const key = `${msg.jobId}\n${agent.endpointId}`
    const now = Date.now()
    const last = this.lastProgress.get(key)
    if (last !== undefined && last.state === msg.state && now - last.at < 1000) return
    const target = await this.target(msg.jobId, agent.endpointId)
    // Progress of an earlier attempt (late, or replayed by a relay) says nothing about this one.
    if (target === undefined || FINAL.has(target.state) || msg.attempt !== target.attempt) {
      this.lastProgress.delete(key)
      return
    }
    this.lastProgress.set(key, { state: msg.state, at: now })
    if (this.lastProgress.size > 100_000) this.lastProgress.delete(this.lastProgress.keys().next().value!)
    this.queueUpdate(msg.jobId, agent.endpointId, { state: msg.state, progress: msg.progress, bytes: msg.bytes, updatedAt: Date.now() }, msg.attempt)
  }

  private async onResult (relayId: string, msg: RelayLevelMessage<'job-result'>, reply: (m: ServerToRelay) => void): Promise<void> {
    const ack = (): void => reply({ t: 'job-result-ack', key: msg.key })
    const { jobId, endpointId, edgeId, result } = msg
    // The relay stores and replays results; it cannot make or alter one: the agent's MAC must verify.
    if (result.jobId !== jobId || result.attempt !== msg.attempt || !await this.hub.verifyStoredReport(endpointId, edgeId, { t: 'job-result', ...result })) {
      await this.security.record({ code: 'RG_ERR_REPORT_FORGED', relayId, endpointId, edgeId, kind: 'job-result', ref: jobId, message: 'a job result does not verify end to end: dropped' })
      return ack()
    }
    this.unanswered.answered(jobId, endpointId, result.attempt)
    const target = await this.target(jobId, endpointId)
    if (target === undefined) return ack()
    // A result of an earlier attempt (a replay, or one overtaken by a new dispatch) does not end this one.
    if (result.attempt !== target.attempt) return ack()
    // A relay speaks only for agents that went through it: the job was sent via this relay.
    if (target.relayId !== relayId) {
      this.logger.warn({ jobId, endpointId, relayId, expected: target.relayId }, 'job result from a relay the job did not go through: ignored')
      return ack()
    }
    // Each result is applied once; replays after an outage find it final already.
    if (FINAL.has(target.state)) return ack()
    const state = result.state
    this.queueUpdate(jobId, endpointId, {
      state,
      progress: state === 'succeeded' ? 1 : target.progress,
      bytes: result.bytes ?? target.bytes,
      exitCode: result.exitCode ?? null,
      errorCode: result.error?.code ?? (state === 'failed' ? 'RG_ERR_INTERNAL' : null),
      errorMessage: result.error?.message ?? null,
      output: result.output ?? null,
      updatedAt: Date.now()
    }, result.attempt, ack) // acked once written: the relay keeps the result until then
    this.logger.info({ jobId, endpointId, state, exitCode: result.exitCode }, 'job result applied')
  }

  /**
   * A relay could not store a result (its disk full): the target keeps its
   * state and shows why it waits, until the result arrives or the deadline.
   */
  private async onResultHeld (relayId: string, msg: RelayLevelMessage<'result-held'>): Promise<void> {
    const target = await this.target(msg.jobId, msg.endpointId)
    if (target === undefined || FINAL.has(target.state) || target.attempt !== msg.attempt || target.relayId !== relayId) return
    this.queueUpdate(msg.jobId, msg.endpointId, { errorCode: msg.code, errorMessage: msg.message, updatedAt: Date.now() }, target.attempt)
  }

  /**
   * The agent refused an order (forged or replayed on the way). Recorded;
   * a job order refused as forged also shows on its target (which keeps its
   * state: the genuine order may still come, and a result then replaces this).
   */
  private async onOrderRefused (agent: AgentRef, msg: AgentMessage<'order-refused'>): Promise<void> {
    await this.security.record({ code: msg.code, relayId: agent.relayId, endpointId: agent.endpointId, edgeId: agent.edgeId, kind: msg.kind, ref: msg.ref, message: `the agent refused a ${msg.kind} order: ${msg.message}` })
    if (msg.kind !== 'job' || msg.code !== 'RG_ERR_ORDER_FORGED') return
    const target = await this.target(msg.ref, agent.endpointId)
    if (target === undefined || FINAL.has(target.state)) return
    this.queueUpdate(msg.ref, agent.endpointId, { errorCode: msg.code, errorMessage: `the agent refused a job order that did not verify end to end (relay ${agent.relayId})`, updatedAt: Date.now() }, target.attempt)
  }

  private changed (jobId: string): void {
    for (const l of this.listeners) l(jobId)
  }
}

interface PendingUpdate {
  jobId: string
  endpointId: string
  patch: Partial<JobTargetRecord>
  /** Written only while the target is unfinished at this attempt. */
  onlyAttempt: number
  acks: Array<() => void>
}

function aggregate (targets: JobTargetRecord[]): JobView['state'] {
  if (targets.length === 0) return 'succeeded'
  if (targets.every(t => t.state === 'queued')) return 'queued'
  if (targets.every(t => FINAL.has(t.state))) return targets.some(t => t.state === 'failed') ? 'failed' : 'succeeded'
  return 'running'
}
