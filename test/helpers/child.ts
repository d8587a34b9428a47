import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TapLike } from './cluster.js'

/** `relaygate` as child processes of dist/cli/main.js (run `npm run build` first). */
export const root = fileURLToPath(new URL('../../', import.meta.url))
export const bin = join(root, 'dist', 'cli', 'main.js')

export type Env = Record<string, string>

export interface Exit { code: number | null, signal: NodeJS.Signals | null }

export interface Child {
  proc: ChildProcess
  readonly stdout: string
  readonly stderr: string
  closed: Promise<Exit>
  exit: Exit | null
}

/** The parent's environment without RELAYGATE_* and NODE_OPTIONS (tap's loaders), plus `extra`. */
export function childEnv (extra: Env = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RELAYGATE_') && k !== 'NODE_OPTIONS') env[k] = v
  return { ...env, ...extra }
}

/** Starts `relaygate ...args` (in `cwd`); killed in teardown if still running. */
export function start (t: TapLike, args: string[], env: Env = {}, cwd = root): Child {
  return startCommand(t, process.execPath, [bin, ...args], childEnv(env), cwd)
}

/** Starts any program with exactly `env`, its output kept; killed in teardown if still running. */
export function startCommand (t: TapLike, command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Child {
  const proc = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const child: Child = {
    proc,
    get stdout () { return stdout },
    get stderr () { return stderr },
    exit: null,
    closed: new Promise<Exit>(resolve => {
      proc.once('close', (code, signal) => {
        child.exit = { code, signal }
        resolve(child.exit)
      })
    })
  }
  t.teardown(async () => {
    if (child.exit === null) {
      proc.kill('SIGKILL')
      await child.closed
    }
  })
  return child
}

/** Runs `relaygate ...args` to completion (killed after `timeoutMs`). */
export async function run (t: TapLike, args: string[], env: Env = {}, cwd = root, timeoutMs = 30_000): Promise<Exit & { stdout: string, stderr: string }> {
  const child = start(t, args, env, cwd)
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), timeoutMs)
  const exit = await child.closed
  clearTimeout(timer)
  return { ...exit, stdout: child.stdout, stderr: child.stderr }
}

/** Waits for a ready file (JSON) while the child runs; fails at once if it exits. */
export async function readyFile (child: Child, file: string, timeoutMs = 20_000): Promise<any> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (existsSync(file)) {
      try {
        return JSON.parse(readFileSync(file, 'utf8'))
      } catch {}
    }
    if (child.exit !== null) throw new Error(`process exited (${JSON.stringify(child.exit)}) before writing ${file}; stderr: ${child.stderr}`)
    if (Date.now() > deadline) throw new Error(`no ready file ${file} within ${timeoutMs} ms; stderr: ${child.stderr}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** Sends SIGTERM and waits for the exit (at most `timeoutMs`). */
export async function stop (child: Child, timeoutMs = 10_000): Promise<Exit> {
  if (child.exit !== null) return child.exit
  child.proc.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([child.closed, new Promise<Exit>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`process did not exit within ${timeoutMs} ms; stderr: ${child.stderr}`)), timeoutMs)
    })])
  } finally {
    clearTimeout(timer)
  }
}

export const lines = (text: string): string[] => text.split('\n').filter(l => l.trim() !== '')
