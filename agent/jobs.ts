import fs from 'node:fs'
import { spawn, type ChildProcess } from 'node:child_process'
import { join, resolve, sep, dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import PQueue from 'p-queue'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { hashFile, SHA256_HEX } from '../common/sha256.js'
import { Backoff } from '../common/backoff.js'
import { download, type DownloadContext, type RelayAccess } from './download.js'
import { MAX_ERROR_MESSAGE, MAX_JOB_OUTPUT, type UnsignedReport, type RelayToAgent, type UnsignedJobResult } from '../protocol/messages.js'

export interface JobHost {
  /** Sends a control message to the relay (dropped while offline). */
  send: (msg: UnsignedReport | ({ t: 'job-result' } & UnsignedJobResult)) => void
  /** The relay link's URL (ws:// or wss://) and accepted fingerprints, and our download token. */
  relay: () => RelayAccess | null
  readonly logger: Logger
}

export interface JobRunnerOptions {
  dataDir: string
  filesDir: string
  allowExec: boolean
  /** Download attempts (each resumes with Range). */
  downloadRetries?: number
  /** A command running longer is killed (ms). */
  runTimeoutMs?: number
  /** Download progress as a redrawn line on stderr (default: when stderr is a TTY); else a log line every 5 s. */
  progressTty?: boolean
}

interface Job {
  jobId: string
  attempt: number
  sha256: string
  size: number
  path: string
  run: string[] | null
  deadline: number
}

type Result = UnsignedJobResult

/** Resolves a job path inside the files dir, refusing anything that leaves it (also through symlinks). */
export function placeInside (filesDir: string, path: string): string {
  const root = resolve(filesDir)
  const dest = resolve(root, path)
  if (!dest.startsWith(root + sep) || path.includes('\0')) {
    throw new RelaygateError('RG_ERR_PATH_ESCAPE', `path ${path} leaves ${root}`)
  }
  fs.mkdirSync(dirname(dest), { recursive: true })
  const realParent = fs.realpathSync(dirname(dest))
  const realRoot = fs.realpathSync(root)
  if (realParent !== realRoot && !realParent.startsWith(realRoot + sep)) {
    throw new RelaygateError('RG_ERR_PATH_ESCAPE', `path ${path} leads out of ${root} through a symlink`)
  }
  return dest
}

/** Partial downloads older than this are removed at start. */
const PART_MAX_AGE_MS = 24 * 3600 * 1000
/** How long a result the relay refuses to store is sent again, per connection (ms). */
const RESEND_FOR_MS = 30 * 60_000

/**
 * Runs jobs the server sends through the relay: download the artifact from
 * the relay (resuming with Range after an interruption), verify its sha256,
 * place it atomically under the files dir, optionally run a command (only
 * with --allow-exec), and report progress and the result. Results are kept
 * until the relay has them on disk (job-result-ack), and sent again after a
 * reconnect.
 */
export class JobRunner {
  private readonly host: JobHost
  private readonly opts: Required<JobRunnerOptions>
  private readonly queue = new PQueue({ concurrency: 2 })
  private readonly active = new Map<string, Job>()
  private readonly unacked = new Map<string, Result>()
  /** Backoff per unacknowledged result the relay refused to store (job-result-nack) since the last connect, and the resend timers. */
  private readonly refusals = new Map<string, Backoff>()
  private readonly resendTimers = new Map<string, NodeJS.Timeout>()
  /** Finished jobs, so a re-dispatch gets the result again instead of a second run (bounded). */
  private readonly finished = new Map<string, Result>()
  private readonly downloadsDir: string
  private closed = false
  /** Stopping gracefully: no new job starts (the server dispatches it again when the agent returns). */
  private draining = false
  private readonly started = new Set<string>()
  private readonly children = new Set<ChildProcess>()

  constructor (host: JobHost, options: JobRunnerOptions) {
    this.host = host
    this.opts = { downloadRetries: 8, runTimeoutMs: 10 * 60_000, progressTty: process.stderr.isTTY === true, ...options }
    this.downloadsDir = join(options.dataDir, 'downloads')
    fs.mkdirSync(this.downloadsDir, { recursive: true })
    fs.mkdirSync(options.filesDir, { recursive: true })
    this.sweepParts()
  }

  /** Partial downloads untouched for a day belong to no job any more (jobs resume theirs well within that). */
  private sweepParts (): void {
    const before = Date.now() - PART_MAX_AGE_MS
    for (const name of fs.readdirSync(this.downloadsDir)) {
      const file = join(this.downloadsDir, name)
      try {
        if (name.endsWith('.part') && fs.statSync(file).mtimeMs < before) fs.rmSync(file, { force: true })
      } catch {}
    }
  }

  get running (): number {
    return this.active.size
  }

  onControl (msg: Extract<RelayToAgent, { t: 'job' | 'job-result-ack' | 'job-result-nack' }>): void {
    if (msg.t === 'job') return this.onJob(msg)
    const r = this.unacked.get(msg.jobId)
    if (r === undefined || r.attempt !== msg.attempt) return
    if (msg.t === 'job-result-ack') {
      this.unacked.delete(r.jobId)
      this.refusals.delete(r.jobId)
      return
    }
    this.resendLater(r, msg.retryInSeconds * 1000, msg.code)
  }

  /**
   * The relay could not store a result (its disk full): it goes again after
   * the relay's delay, growing with each refusal (jittered, at most a minute
   * apart, for at most RESEND_FOR_MS; a reconnect sends it again anyway).
   */
  private resendLater (r: Result, delayMs: number, code: string): void {
    let backoff = this.refusals.get(r.jobId)
    if (backoff === undefined) {
      backoff = new Backoff({ baseMs: delayMs, maxMs: 60_000, giveUpAfterMs: RESEND_FOR_MS })
      this.refusals.set(r.jobId, backoff)
    }
    if (this.resendTimers.has(r.jobId)) return
    const wait = backoff.next()
    if (wait === undefined) return
    this.host.logger.warn({ jobId: r.jobId, code, tries: backoff.attempts, retryInMs: wait }, 'the relay could not store a result; sending it again later')
    const timer = setTimeout(() => {
      this.resendTimers.delete(r.jobId)
      if (!this.closed && this.unacked.get(r.jobId) === r) this.host.send({ t: 'job-result', ...r })
    }, wait)
    timer.unref()
    this.resendTimers.set(r.jobId, timer)
  }

  /** After a (re)connect: results the relay has not confirmed go again. */
  onOnline (): void {
    this.refusals.clear()
    for (const r of this.unacked.values()) this.host.send({ t: 'job-result', ...r })
  }

  async close (): Promise<void> {
    this.closed = true
    for (const timer of this.resendTimers.values()) clearTimeout(timer)
    this.resendTimers.clear()
    this.queue.clear()
  }

  /**
   * Graceful stop: starts no new job, waits (at most `timeoutMs`) for the
   * running ones to finish and for the relay to acknowledge every result.
   * Jobs still running then are reported failed with RG_ERR_GOING_AWAY (and
   * their commands get SIGTERM); their acknowledgement is awaited briefly.
   */
  async drain (timeoutMs: number, ackWaitMs = 2000): Promise<void> {
    this.draining = true
    // Queued, not started: leave them to the server's next dispatch.
    this.queue.clear()
    for (const id of [...this.active.keys()]) if (!this.started.has(id)) this.active.delete(id)
    const settled = (): boolean => this.active.size === 0 && this.unacked.size === 0
    if (this.active.size > 0) this.host.logger.info({ jobs: [...this.active.keys()], timeoutMs }, 'stopping: waiting for running jobs')
    if (await waitUntil(settled, timeoutMs)) return
    for (const job of [...this.active.values()]) {
      this.active.delete(job.jobId)
      const result: Result = {
        jobId: job.jobId,
        attempt: job.attempt,
        state: 'failed',
        error: { code: 'RG_ERR_GOING_AWAY', message: `the agent stopped before the job finished (waited ${Math.round(timeoutMs / 1000)} s)` }
      }
      this.finished.set(job.jobId, result)
      this.report(result)
    }
    this.closed = true
    for (const child of this.children) {
      child.kill('SIGTERM')
      // A grandchild may keep the pipes open: stop reading them.
      child.stdout?.destroy()
      child.stderr?.destroy()
    }
    await waitUntil(() => this.unacked.size === 0, ackWaitMs)
  }

  private onJob (msg: Extract<RelayToAgent, { t: 'job' }>): void {
    const job: Job = { jobId: msg.jobId, attempt: msg.attempt, sha256: msg.sha256, size: msg.size, path: msg.path, run: msg.run, deadline: msg.deadline }
    const running = this.active.get(job.jobId)
    if (running !== undefined) {
      running.attempt = job.attempt
      return
    }
    const done = this.finished.get(job.jobId)
    // A new attempt of a job that failed here runs again (resuming its
    // download); a success is reported again, not repeated.
    if (done !== undefined && (done.state === 'succeeded' || job.attempt <= done.attempt)) {
      this.report({ ...done, attempt: job.attempt })
      return
    }
    this.finished.delete(job.jobId)
    if (this.draining || this.closed) {
      this.host.logger.info({ jobId: job.jobId }, 'stopping: job left for the next start')
      return
    }
    this.active.set(job.jobId, job)
    void this.queue.add(async () => {
      if (this.active.get(job.jobId) !== job) return
      this.started.add(job.jobId)
      let result: Result
      try {
        result = await this.execute(job)
      } catch (err) {
        const coded = toRelaygateError(err)
        result = { jobId: job.jobId, attempt: job.attempt, state: 'failed', error: { code: coded.code, message: coded.message } }
      }
      this.started.delete(job.jobId)
      // Given up on at shutdown: already reported as failed.
      if (this.active.get(job.jobId) !== job) return
      this.active.delete(job.jobId)
      result.attempt = job.attempt
      this.finished.set(job.jobId, result)
      if (this.finished.size > 1000) this.finished.delete(this.finished.keys().next().value!)
      this.report(result)
    })
  }

  private report (result: Result): void {
    // Within the message schema whatever the command printed or the error said.
    if (result.output !== undefined) result.output = result.output.slice(-MAX_JOB_OUTPUT)
    if (result.error !== undefined) result.error = { code: result.error.code, message: result.error.message.slice(0, MAX_ERROR_MESSAGE) }
    this.host.logger.info({ jobId: result.jobId, state: result.state, exitCode: result.exitCode, error: result.error }, 'job finished')
    this.unacked.set(result.jobId, result)
    this.host.send({ t: 'job-result', ...result })
  }

  private progress (job: Job, state: 'downloading' | 'verifying' | 'running', bytes: number): void {
    const progress = job.size > 0 ? Math.min(1, bytes / job.size) : 0
    this.host.send({ t: 'job-progress', jobId: job.jobId, attempt: job.attempt, state, progress, bytes })
  }

  /** What a download of `job` needs from this runner. */
  private downloads (job: Job): DownloadContext {
    return {
      relay: () => this.host.relay(),
      closed: () => this.closed,
      progress: bytes => this.progress(job, 'downloading', bytes),
      retries: this.opts.downloadRetries,
      progressTty: this.opts.progressTty
    }
  }

  private async execute (job: Job): Promise<Result> {
    const log = this.host.logger.child({ jobId: job.jobId })
    if (!SHA256_HEX.test(job.sha256)) throw new RelaygateError('RG_ERR_PROTOCOL', 'job without a valid sha256')
    const dest = placeInside(this.opts.filesDir, job.path)
    // One part file per job: jobs for the same artifact at once each download and place their own (a shared one was renamed away under the other).
    const part = join(this.downloadsDir, `${job.sha256}.${job.jobId}.part`)
    let verified = false
    for (let round = 0; round < 3 && !verified; round++) {
      // After a mismatch, ask the relay to hash what it serves: a cache file
      // damaged on disk is then dropped and the next round refetches it.
      await download(job, part, log, round > 0, this.downloads(job))
      this.progress(job, 'verifying', job.size)
      const actual = await hashFile(part)
      if (actual === job.sha256) verified = true
      else {
        log.warn({ actual }, 'downloaded bytes do not match the sha256; downloading again')
        fs.rmSync(part, { force: true })
      }
    }
    if (!verified) throw new RelaygateError('RG_ERR_DIGEST_MISMATCH', 'the artifact did not verify after 3 downloads')
    // Atomic placement: rename within the data dir's filesystem.
    const tmp = `${dest}.${randomBytes(4).toString('hex')}.tmp`
    fs.renameSync(part, tmp)
    fs.renameSync(tmp, dest)
    log.info({ dest }, 'artifact placed')
    if (job.run === null) return { jobId: job.jobId, attempt: job.attempt, state: 'succeeded', bytes: job.size }
    if (!this.opts.allowExec) {
      return {
        jobId: job.jobId,
        attempt: job.attempt,
        state: 'failed',
        bytes: job.size,
        error: { code: 'RG_ERR_EXEC_NOT_ALLOWED', message: 'this agent runs no commands (start it with --allow-exec)' }
      }
    }
    this.progress(job, 'running', job.size)
    return await this.runCommand(job, dest, log)
  }

  private async runCommand (job: Job, dest: string, log: Logger): Promise<Result> {
    const [cmd, ...args] = job.run!
    let output = ''
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-MAX_JOB_OUTPUT)
    }
    return await new Promise(resolvePromise => {
      const child = spawn(cmd, args, {
        cwd: this.opts.filesDir,
        env: { ...process.env, RELAYGATE_JOB_ID: job.jobId, RELAYGATE_ARTIFACT: dest },
        stdio: ['ignore', 'pipe', 'pipe']
      })
      this.children.add(child)
      child.once('close', () => this.children.delete(child))
      const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, this.opts.runTimeoutMs)
      let timedOut = false
      child.stdout.on('data', keep)
      child.stderr.on('data', keep)
      child.once('error', err => {
        clearTimeout(timer)
        resolvePromise({ jobId: job.jobId, attempt: job.attempt, state: 'failed', output, error: { code: 'RG_ERR_EXEC_FAILED', message: `cannot start ${cmd}: ${(err as NodeJS.ErrnoException).code ?? err.message}` } })
      })
      child.once('close', (code, signal) => {
        clearTimeout(timer)
        log.info({ exitCode: code, signal }, 'command finished')
        if (code === 0) resolvePromise({ jobId: job.jobId, attempt: job.attempt, state: 'succeeded', exitCode: 0, output, bytes: job.size })
        else {
          resolvePromise({
            jobId: job.jobId,
            attempt: job.attempt,
            state: 'failed',
            exitCode: code ?? -1,
            output,
            bytes: job.size,
            error: { code: 'RG_ERR_EXEC_FAILED', message: timedOut ? `killed after ${this.opts.runTimeoutMs} ms` : `exited with ${code ?? signal}` }
          })
        }
      })
    })
  }

}

/** Polls `check` every 50 ms; true once it holds, false after `timeoutMs`. */
async function waitUntil (check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() >= deadline) return false
    await new Promise(resolve => setTimeout(resolve, Math.min(50, Math.max(1, deadline - Date.now()))))
  }
  return true
}
