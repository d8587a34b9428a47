import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, existsSync, rmSync, openSync, closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { repoRoot } from './report.js'

export interface Proc {
  child: ChildProcess
  ready: Record<string, any>
  stop: () => Promise<void>
}

const cli = (): string => join(repoRoot(), 'dist', 'cli', 'main.js')

function cleanEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RELAYGATE_') && k !== 'NODE_OPTIONS') env[k] = v
  return { ...env, ...extra }
}

/**
 * Extra node flags for one kind of child, from BENCH_NODE_ARGS_<NAME>: e.g.
 * BENCH_NODE_ARGS_RELAY="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles every
 * relay a scenario starts (names: SERVER, RELAY, AGENT).
 */
function profileArgs (name: string): string[] {
  const kind = name.replace(/[^a-z].*$/i, '').toUpperCase()
  return (process.env[`BENCH_NODE_ARGS_${kind}`] ?? '').split(' ').filter(a => a !== '')
}

/** BENCH_CHILD_STDOUT_DIR=<dir> keeps each child's stdout (e.g. --trace-gc output) in <dir>/<name>.out. */
function stdoutFor (name: string): number | 'ignore' {
  const dir = process.env.BENCH_CHILD_STDOUT_DIR
  return dir === undefined || dir === '' ? 'ignore' : openSync(join(dir, `${name}.out`), 'w')
}

/** Starts `relaygate <args>` as a child process and waits for its ready file. */
export async function startProc (name: string, args: string[], options: { timeoutMs?: number, env?: Record<string, string>, nodeArgs?: string[] } = {}): Promise<Proc> {
  const dir = mkdtempSync(join(tmpdir(), `rg-bench-${name}-`))
  const readyFile = join(dir, 'ready.json')
  const stdout = stdoutFor(name)
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...profileArgs(name), cli(), ...args, '--ready-file', readyFile], {
    env: cleanEnv({ RELAYGATE_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', ...options.env }),
    stdio: ['ignore', stdout, 'pipe']
  })
  if (typeof stdout === 'number') closeSync(stdout)
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000) })
  const deadline = Date.now() + (options.timeoutMs ?? 60_000)
  while (!existsSync(readyFile)) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${stderr}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`${name} not ready in time: ${stderr}`)
    }
    await new Promise(r => setTimeout(r, 50))
  }
  const ready = JSON.parse(readFileSync(readyFile, 'utf8')) as Record<string, any>
  let stopping = false
  child.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`bench: ${name} exited unexpectedly (code ${String(code)}, signal ${String(signal)}):\n${stderr}\n`)
  })
  return {
    child,
    ready,
    stop: async () => {
      stopping = true
      // A child killed by a signal (a scenario's SIGKILL) has exitCode null and signalCode set: already gone.
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
        await new Promise(r => child.once('exit', r))
        clearTimeout(timer)
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

export function dataDir (name: string): string {
  return mkdtempSync(join(tmpdir(), `rg-bench-data-${name}-`))
}

export async function api (base: string, token: string, method: string, path: string, body?: unknown): Promise<any> {
  // A GET that meets a keep-alive socket the server is closing at that moment
  // (ECONNRESET) is simply asked again; other methods are not retried.
  for (let attempt = 1; method === 'GET' && attempt < 3; attempt++) {
    try {
      return await apiOnce(base, token, method, path, body)
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code !== 'ECONNRESET') throw err
    }
  }
  return await apiOnce(base, token, method, path, body)
}

async function apiOnce (base: string, token: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return text === '' ? null : JSON.parse(text)
}

/** Server + one relay as child processes, with the admin token read. */
export async function startSite (options: { relayArgs?: string[], serverArgs?: string[] } = {}): Promise<{ server: Proc, relay: Proc, token: string, relayToken: string, dirs: string[], stop: () => Promise<void> }> {
  const sdir = dataDir('server')
  const rdir = dataDir('relay')
  const server = await startProc('server', ['server', '--data-dir', sdir, '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off', ...(options.serverArgs ?? [])])
  const token = readFileSync(server.ready.adminTokenFile, 'utf8').trim()
  const created = await api(server.ready.httpUrl, token, 'POST', '/api/relays', { name: 'bench-relay' })
  const relay = await startProc('relay', ['relay', '--server', server.ready.httpUrl, '--token', created.token, '--data-dir', rdir, '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off', ...(options.relayArgs ?? [])])
  return {
    server,
    relay,
    token,
    relayToken: created.token,
    dirs: [sdir, rdir],
    stop: async () => {
      await relay.stop()
      await server.stop()
      for (const d of [sdir, rdir]) rmSync(d, { recursive: true, force: true })
    }
  }
}
