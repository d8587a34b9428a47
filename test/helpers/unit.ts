import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startCommand, type Child, type Exit } from './child.js'
import type { TapLike } from './cluster.js'

/**
 * Runs an installed systemd unit the way systemd would, on a host without
 * systemd (here): every absolute path under `root` (where `relaygate install
 * --root` put the files), the environment from its EnvironmentFile, before
 * each start its ExecStartPre, then its ExecStart; Restart=on-failure: started
 * again after `restartMs` when it exits with a status other than 0 and
 * RestartPreventExitStatus (a failed ExecStartPre counts as a failed start).
 */
export class UnitRunner {
  readonly pre: string[] | null
  readonly main: string[]
  readonly env: NodeJS.ProcessEnv
  private readonly prevent: Set<number>
  /** Exits of the main process, in order. */
  readonly exits: Exit[] = []
  /** Output of each ExecStartPre run. */
  readonly guardLines: string[] = []
  starts = 0
  current: Child | null = null
  private stopped = false
  private loop: Promise<void> | null = null
  private readonly log: string[] = []

  constructor (private readonly t: TapLike, readonly root: string, unitPath: string, private readonly cwd: string, options: { env?: NodeJS.ProcessEnv, restartMs?: number, args?: (args: string[]) => string[] } = {}) {
    const unit = readFileSync(join(root, unitPath), 'utf8')
    const value = (key: string): string | null => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1] ?? null
    const under = (line: string): string[] => line.split(' ').map(a => a.startsWith('/') ? join(root, a) : a)
    const pre = value('ExecStartPre')
    this.pre = pre === null ? null : under(pre)
    this.main = (options.args ?? (a => a))(under(value('ExecStart')!))
    this.prevent = new Set((value('RestartPreventExitStatus') ?? '').split(' ').filter(Boolean).map(Number))
    const envFile = value('EnvironmentFile')!.replace(/^-/, '')
    const vars = Object.fromEntries(readFileSync(join(root, envFile), 'utf8').trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    this.env = { ...vars, PATH: '/nonexistent', ...options.env }
    this.restartMs = options.restartMs ?? 200
    t.teardown(() => this.stop())
  }

  private readonly restartMs: number

  start (): this {
    this.loop ??= this.run()
    return this
  }

  private async run (): Promise<void> {
    while (!this.stopped) {
      if (this.pre !== null) {
        const guard = spawnSync(this.pre[0], this.pre.slice(1), { cwd: this.cwd, env: this.env, encoding: 'utf8', timeout: 60_000 })
        this.guardLines.push(`${guard.stdout}${guard.stderr}`.trim())
        if (guard.status !== 0) {
          this.exits.push({ code: guard.status, signal: guard.signal })
          await new Promise(resolve => setTimeout(resolve, this.restartMs))
          continue
        }
      }
      this.starts++
      const child = startCommand(this.t, this.main[0], this.main.slice(1), this.env, this.cwd)
      this.current = child
      const exit = await child.closed
      this.exits.push(exit)
      this.log.push((child.stdout + child.stderr).slice(-20_000))
      if (this.stopped || exit.code === 0 || (exit.code !== null && this.prevent.has(exit.code))) break
      await new Promise(resolve => setTimeout(resolve, this.restartMs))
    }
  }

  /** What the main process wrote (stdout and stderr, as the journal keeps them), over all its starts (the tail of each). */
  get output (): string {
    const running = this.current !== null && this.current.exit === null ? this.current.stdout + this.current.stderr : ''
    return [...this.log, running].join('\n---\n')
  }

  async stop (): Promise<void> {
    this.stopped = true
    const child = this.current
    if (child !== null && child.exit === null) {
      child.proc.kill('SIGTERM')
      const timer = setTimeout(() => child.proc.kill('SIGKILL'), 10_000)
      await child.closed
      clearTimeout(timer)
    }
    await this.loop
  }
}
