import fs from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import type { AgentDown, UnsignedReport } from '../protocol/messages.js'
import { hashFile } from './sha256.js'
import type { SelfUpdateHost, UpdateOutcome } from './self-update.js'

/** An update order as the agent (end to end authenticated) or the relay (over its link) receives it. */
export type UpdateOrder = Omit<Extract<AgentDown, { t: 'update' }>, 't' | 'n' | 'mac'>
/** A progress report or outcome, before the agent or relay makes it its message. */
export type UpdateReport = Omit<Extract<UnsignedReport, { t: 'update-progress' }>, 't'>

export interface UpdaterHost {
  /** 'agent' or 'relay', for messages. */
  readonly role: string
  /** Sends a report up to the server (dropped while offline). */
  send: (report: UpdateReport) => void
  /**
   * Downloads the order's executable into `part` (resuming what is there;
   * with `verify`, asking the source to check its own copy first), calling
   * `progress` with the bytes so far.
   */
  fetch: (order: UpdateOrder, part: string, verify: boolean, progress: (bytes: number) => void) => Promise<void>
  /** The new version is in place: stop and be started again (exit RESTART_EXIT_CODE). */
  restart: (reason: string) => void
  readonly logger: Logger
  /** The version running. */
  readonly version: string
}

/** How often download progress goes up (ms): the server keeps it per target. */
const PROGRESS_EVERY_MS = 1000

/**
 * A process's side of a self-update (issue 16), for agents and relays alike:
 * an update order downloads the new executable (the agent through its relay's
 * cache, the relay through its link), checks its sha256, hands it
 * to the versions dir (which checks that it runs as the version ordered and
 * switches to it), and asks for a restart. After the restart the new version
 * confirms itself once online and reports success; a trial not online by its
 * deadline rolls itself back and restarts on the old version, which reports
 * the failure. The last outcome goes up again at every connect: the server
 * applies it once.
 */
export class SelfUpdater {
  private running: string | null = null
  private trialTimer: NodeJS.Timeout | null = null
  private readonly downloadsDir: string

  constructor (private readonly host: UpdaterHost, private readonly versions: SelfUpdateHost, dataDir: string) {
    this.downloadsDir = join(dataDir, 'downloads')
    const trial = versions.trial()
    if (trial !== null) {
      // This process is a new version on trial: online by the deadline, or back to the old one.
      host.logger.info({ updateId: trial.updateId, from: trial.from, deadline: new Date(trial.deadline).toISOString() }, 'running a new version on trial')
      this.trialTimer = setTimeout(() => this.trialExpired(), Math.max(0, trial.deadline - Date.now()))
      this.trialTimer.unref()
    }
  }

  get busy (): boolean {
    return this.running !== null
  }

  close (): void {
    if (this.trialTimer !== null) clearTimeout(this.trialTimer)
  }

  /** Online (again): a trial is confirmed; the last outcome goes up (again). */
  onOnline (): void {
    if (this.trialTimer !== null) clearTimeout(this.trialTimer)
    this.trialTimer = null
    let outcome: UpdateOutcome | null
    try {
      outcome = this.versions.confirm() ?? this.versions.outcome()
    } catch (err) {
      this.host.logger.warn({ err: (err as Error).message }, 'the versions dir cannot be read')
      return
    }
    if (outcome === null) return
    if (outcome.state === 'succeeded' && outcome.version === this.host.version) this.host.logger.info({ updateId: outcome.updateId, version: outcome.version }, 'updated')
    this.sendOutcome(outcome)
  }

  private trialExpired (): void {
    this.trialTimer = null
    const trial = this.versions.trial()
    if (trial === null) return
    const message = `version ${trial.version} was not online within its deadline: back on ${trial.from}`
    this.host.logger.error({ updateId: trial.updateId }, message)
    this.versions.rollBack('RG_ERR_UPDATE_ROLLED_BACK', message)
    this.host.restart('rolled back')
  }

  onOrder (order: UpdateOrder): void {
    if (this.running !== null) {
      this.host.logger.info({ updateId: order.updateId, running: this.running }, 'an update is under way; the order waits for the next dispatch')
      return
    }
    this.running = order.updateId
    void this.apply(order).finally(() => { this.running = null })
  }

  private async apply (order: UpdateOrder): Promise<void> {
    const log = this.host.logger.child({ updateId: order.updateId, version: order.version })
    if (order.version === this.host.version) {
      const outcome: UpdateOutcome = { updateId: order.updateId, version: order.version, state: 'succeeded', at: Date.now() }
      this.recordQuietly(outcome)
      return this.sendOutcome(outcome)
    }
    const reason = this.versions.unsupported()
    if (reason !== null) return this.fail(order, new RelaygateError('RG_ERR_UPDATE_UNSUPPORTED', `this ${this.host.role} cannot update itself: ${reason}`))
    fs.mkdirSync(this.downloadsDir, { recursive: true })
    const part = join(this.downloadsDir, `update-${order.sha256}.part`)
    try {
      log.info({ from: this.host.version }, 'updating')
      let last = 0
      for (let round = 0; ; round++) {
        await this.host.fetch(order, part, round > 0, bytes => {
          if (Date.now() - last < PROGRESS_EVERY_MS) return
          last = Date.now()
          this.progress(order, 'downloading', bytes)
        })
        this.progress(order, 'verifying', order.size)
        if (await hashFile(part) === order.sha256) break
        fs.rmSync(part, { force: true })
        // A second round asks the relay to hash what it serves: a damaged cache entry is dropped and filled again.
        if (round === 2) throw new RelaygateError('RG_ERR_DIGEST_MISMATCH', 'the executable did not match its sha256 after 3 downloads (a damaged or swapped copy on the way): nothing installed')
        log.warn('the downloaded executable does not match its sha256: refused; downloading again')
      }
      this.progress(order, 'installing', order.size)
      await this.versions.install(part, order)
      this.progress(order, 'restarting', order.size)
      log.info('new version installed: restarting into it')
      this.host.restart(`update to ${order.version}`)
    } catch (err) {
      fs.rmSync(part, { force: true })
      this.fail(order, toRelaygateError(err, 'RG_ERR_DOWNLOAD_FAILED'))
    }
  }

  private fail (order: UpdateOrder, err: RelaygateError): void {
    this.host.logger.warn({ updateId: order.updateId, code: err.code, message: err.message }, 'update failed; staying on this version')
    const outcome: UpdateOutcome = { updateId: order.updateId, version: order.version, state: 'failed', code: err.code, message: err.message, at: Date.now() }
    this.recordQuietly(outcome)
    this.sendOutcome(outcome)
  }

  private recordQuietly (outcome: UpdateOutcome): void {
    try {
      this.versions.record(outcome)
    } catch (err) {
      this.host.logger.warn({ err: (err as Error).message }, 'the update\'s outcome is not kept on disk')
    }
  }

  private progress (order: UpdateOrder, state: 'downloading' | 'verifying' | 'installing' | 'restarting', bytes: number): void {
    this.host.send({
      updateId: order.updateId, version: order.version, state, bytes, running: this.host.version,
      progress: order.size > 0 ? Math.min(1, bytes / order.size) : 1
    })
  }

  private sendOutcome (o: UpdateOutcome): void {
    const msg: UpdateReport = { updateId: o.updateId, version: o.version, state: o.state, progress: 1, bytes: 0, running: this.host.version }
    if (o.code !== undefined) msg.code = o.code
    if (o.message !== undefined) msg.message = o.message.slice(0, 1000)
    this.host.send(msg)
  }
}
