import { execFile } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, renameSync, rmSync, symlinkSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { RelaygateError, type ErrorCodeName } from '../protocol/errors.js'
import { writeFileAtomic } from './files.js'

/**
 * The versions of this executable kept in a data dir (issue 16: self-update
 * with rollback), shared by the agent, the relay and `relaygate update-guard`:
 *
 *   <data-dir>/versions/state.json          which version is current, the one before, a trial under way,
 *                                           and the outcome of the last update (sent again at every connect)
 *   <data-dir>/versions/<version>-<sha>/relaygate   an installed build
 *   <data-dir>/bin/relaygate                the link the service runs (ExecStart), to the current build
 *
 * The state file is the truth: the guard (ExecStartPre, run by the installed
 * executable before every start) points the link at its `current`. A switch
 * writes the state, then the link; a trial that does not come online by its
 * deadline, or that exits at start more than MAX_TRIAL_STARTS times, is
 * rolled back: by the new version itself when it runs long enough to notice,
 * by the guard before the next start when it does not.
 */

/** What a process exits with to be started again by its service (systemd: Restart=on-failure). */
export const RESTART_EXIT_CODE = 75
/** Starts of a new version that may fail before the guard rolls it back. */
export const MAX_TRIAL_STARTS = 3

export interface VersionRef { version: string, sha256: string | null, path: string }

export interface UpdateOutcome {
  updateId: string
  version: string
  state: 'succeeded' | 'failed'
  code?: ErrorCodeName
  message?: string
  at: number
}

export interface Trial {
  updateId: string
  version: string
  /** The version it replaced (rolled back to). */
  from: string
  /** Online by then (ms since the epoch), or rolled back. */
  deadline: number
  /** Starts so far (counted by the guard). */
  starts: number
}

export interface VersionsState {
  current: VersionRef
  previous: VersionRef | null
  trial: Trial | null
  last: UpdateOutcome | null
}

/** What an update order says (the parts the versions dir needs). */
export interface UpdateTarget { updateId: string, version: string, sha256: string, healthSeconds: number }

/** The running process as the versions dir sees it. */
export interface RunningBuild {
  /** The executable file running (process.execPath for the one-file build). */
  execPath: string
  version: string
  /** Only the one-file build can replace itself. */
  oneFile: boolean
}

/**
 * What a self-updating process needs of its versions dir. Versions is the
 * real one; the in-process fleets of tests and benches give their own.
 */
export interface SelfUpdateHost {
  /** Why this process cannot update itself, or null when it can. */
  unsupported: () => string | null
  /** Installs a verified download as `target.version`, checks that it runs as that version, and switches to it (on trial). */
  install: (file: string, target: UpdateTarget) => Promise<void>
  /** The trial under way if this process is it. */
  trial: () => Trial | null
  /** Online: the trial (if this is it) succeeded. Returns its outcome. */
  confirm: () => UpdateOutcome | null
  /** The trial did not come online in time: back to the version before. */
  rollBack: (code: ErrorCodeName, message: string) => void
  /** The last update's outcome (sent again at every connect), or null. */
  outcome: () => UpdateOutcome | null
  /** Records an outcome that needed no restart (failed before the switch, or already on the version). */
  record: (outcome: UpdateOutcome) => void
}

export class Versions implements SelfUpdateHost {
  readonly dir: string
  readonly stateFile: string
  readonly link: string

  constructor (readonly dataDir: string, private readonly self: RunningBuild) {
    this.dir = join(dataDir, 'versions')
    this.stateFile = join(this.dir, 'state.json')
    this.link = join(dataDir, 'bin', 'relaygate')
  }

  read (): VersionsState | null {
    if (!existsSync(this.stateFile)) return null
    try {
      const state = JSON.parse(readFileSync(this.stateFile, 'utf8')) as VersionsState
      if (typeof state?.current?.path !== 'string') return null
      return state
    } catch {
      return null
    }
  }

  private write (state: VersionsState): void {
    writeFileAtomic(this.stateFile, JSON.stringify(state, null, 2) + '\n', 0o600)
  }

  /** Points the link at `path` (a new link renamed over the old one: never absent). */
  private pointLink (path: string): void {
    mkdirSync(dirname(this.link), { recursive: true })
    let now: string | null = null
    try { now = readlinkSync(this.link) } catch {}
    if (now === path) return
    const tmp = `${this.link}.${randomBytes(4).toString('hex')}`
    symlinkSync(path, tmp)
    renameSync(tmp, this.link)
  }

  unsupported (): string | null {
    if (!this.self.oneFile) return 'it does not run as the one-file executable (installed from npm or a bundle): update it the way it was installed'
    const state = this.read()
    if (state === null) return `${this.stateFile} is missing: it was not installed as a service with relaygate install (whose unit runs relaygate update-guard before each start)`
    let linked: string
    try { linked = realpathSync(this.link) } catch { return `${this.link} is missing: the service does not run the executable through it` }
    if (linked !== realpathSync(this.self.execPath)) return `it runs ${this.self.execPath}, not ${this.link} (${linked}): start it through the installed service`
    return null
  }

  async install (file: string, target: UpdateTarget): Promise<void> {
    const state = this.read()
    if (state === null) throw new RelaygateError('RG_ERR_UPDATE_UNSUPPORTED', `${this.stateFile} is missing`)
    const home = join(this.dir, `${target.version}-${target.sha256.slice(0, 12)}`)
    const exe = join(home, 'relaygate')
    mkdirSync(home, { recursive: true, mode: 0o700 })
    chmodSync(file, 0o755)
    renameSync(file, exe)
    const said = await runsAs(exe)
    if (said !== target.version) {
      rmSync(home, { recursive: true, force: true })
      throw new RelaygateError('RG_ERR_UPDATE_BAD_BINARY', said === null
        ? `the new executable does not run here (${basename(exe)} --version failed): wrong machine kind, or a broken build`
        : `the new executable says it is ${said.slice(0, 64)}, not ${target.version}`)
    }
    this.write({
      current: { version: target.version, sha256: target.sha256, path: exe },
      previous: state.current,
      trial: { updateId: target.updateId, version: target.version, from: state.current.version, deadline: Date.now() + target.healthSeconds * 1000, starts: 0 },
      last: state.last
    })
    this.pointLink(exe)
  }

  trial (): Trial | null {
    const trial = this.read()?.trial ?? null
    return trial !== null && trial.version === this.self.version ? trial : null
  }

  confirm (): UpdateOutcome | null {
    const state = this.read()
    if (state?.trial == null || state.trial.version !== this.self.version) return null
    const outcome: UpdateOutcome = { updateId: state.trial.updateId, version: state.trial.version, state: 'succeeded', at: Date.now() }
    this.write({ ...state, trial: null, last: outcome })
    this.prune(state)
    return outcome
  }

  rollBack (code: ErrorCodeName, message: string): void {
    const state = this.read()
    if (state?.trial == null || state.previous === null) return
    const failed = state.current
    const outcome: UpdateOutcome = { updateId: state.trial.updateId, version: state.trial.version, state: 'failed', code, message, at: Date.now() }
    this.write({ current: state.previous, previous: null, trial: null, last: outcome })
    this.pointLink(state.previous.path)
    if (failed.path.startsWith(this.dir + '/')) rmSync(dirname(failed.path), { recursive: true, force: true })
  }

  outcome (): UpdateOutcome | null {
    return this.read()?.last ?? null
  }

  record (outcome: UpdateOutcome): void {
    const state = this.read()
    if (state !== null) this.write({ ...state, last: outcome })
  }

  /** Keeps the current and the previous build; other folders under versions/ go. */
  private prune (state: VersionsState): void {
    const keep = new Set([state.current.path, state.previous?.path].filter((p): p is string => p !== undefined).map(p => dirname(p)))
    for (const name of readdirSync(this.dir)) {
      const path = join(this.dir, name)
      if (name !== 'state.json' && !name.endsWith('.tmp') && !keep.has(path)) rmSync(path, { recursive: true, force: true })
    }
  }

  /**
   * Before every start of the service (ExecStartPre, run by the installed
   * executable): sets the versions dir up on first use (the installed
   * executable is the first current one), counts the starts of a trial and
   * rolls it back when it keeps failing or its deadline passed, and points
   * the link at the current build. Returns what it did, for the journal.
   */
  guard (now = Date.now()): string {
    let state = this.read()
    if (state === null) {
      state = { current: { version: this.self.version, sha256: null, path: this.self.execPath }, previous: null, trial: null, last: null }
      this.write(state)
      this.pointLink(state.current.path)
      return `versions set up: ${this.self.version} at ${this.self.execPath}`
    }
    if (state.trial !== null) {
      const trial = { ...state.trial, starts: state.trial.starts + 1 }
      const late = now > trial.deadline
      if ((trial.starts > MAX_TRIAL_STARTS || late) && state.previous !== null) {
        this.write({ ...state, trial })
        this.rollBack('RG_ERR_UPDATE_ROLLED_BACK', late
          ? `version ${trial.version} was not online within its deadline (started ${trial.starts - 1} times): back on ${trial.from}`
          : `version ${trial.version} stopped at start ${trial.starts - 1} times: back on ${trial.from}`)
        return `rolled back from ${trial.version} to ${trial.from}`
      }
      state = { ...state, trial }
      this.write(state)
    }
    if (!existsSync(state.current.path) && state.previous !== null && existsSync(state.previous.path)) {
      this.write({ current: state.previous, previous: null, trial: null, last: state.last })
      this.pointLink(state.previous.path)
      return `${state.current.path} is gone: back on ${state.previous.version}`
    }
    this.pointLink(state.current.path)
    return state.trial === null ? `running ${state.current.version}` : `trying ${state.trial.version} (start ${state.trial.starts})`
  }
}

/** What an executable says its version is (`--version`), or null when it does not run. */
async function runsAs (exe: string): Promise<string | null> {
  return await new Promise(resolve => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' }
    if (process.env.RELAYGATE_NATIVE_DIR !== undefined) env.RELAYGATE_NATIVE_DIR = process.env.RELAYGATE_NATIVE_DIR
    execFile(exe, ['--version'], { timeout: 30_000, encoding: 'utf8', env }, (err, stdout) => {
      resolve(err === null ? stdout.trim().split('\n')[0] : null)
    })
  })
}
