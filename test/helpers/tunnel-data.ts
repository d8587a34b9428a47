import http from 'node:http'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startSite, startAgent, type TapLike } from './cluster.js'

/**
 * Helpers for tunnel data-path tests: deterministic byte streams (so both
 * ends can know a 64 MB body's sha256 without keeping it), real target
 * servers on loopback, and a node:http client that streams bodies.
 */

const CHUNK = 64 * 1024

/** Fills `buf` (length a multiple of 4) from a xorshift32 PRNG; returns the next state. */
function fill (buf: Buffer, state: number): number {
  // Buffers of CHUNK bytes are not pooled: offset 0, aligned for a word view.
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2)
  let x = state
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    words[i] = x
  }
  return x
}

/** `bytes` pseudo-random bytes from `seed` (never 0), produced on demand with backpressure. */
export function patternStream (seed: number, bytes: number): Readable {
  let state = seed | 0 || 1
  let left = bytes
  return new Readable({
    highWaterMark: CHUNK,
    read () {
      if (left <= 0) {
        this.push(null)
        return
      }
      const buf = Buffer.allocUnsafe(CHUNK)
      state = fill(buf, state)
      const out = left >= CHUNK ? buf : buf.subarray(0, left)
      left -= out.length
      this.push(out)
    }
  })
}

/** The sha256 of `patternStream(seed, bytes)`, computed without a stream. */
export function patternSha256 (seed: number, bytes: number): string {
  const hash = createHash('sha256')
  let state = seed | 0 || 1
  const buf = Buffer.allocUnsafe(CHUNK)
  for (let left = bytes; left > 0; left -= CHUNK) {
    state = fill(buf, state)
    hash.update(left >= CHUNK ? buf : buf.subarray(0, left))
  }
  return hash.digest('hex')
}

/** Reads a stream to its end, hashing as it goes. */
export async function hashStream (stream: Readable): Promise<{ sha256: string, bytes: number }> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) {
    hash.update(chunk as Buffer)
    bytes += (chunk as Buffer).length
  }
  return { sha256: hash.digest('hex'), bytes }
}

export async function readAll (stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** An HTTP server on 127.0.0.1:0 (or a unix socket path), closed with all its connections in teardown. */
export async function listenHttp (t: TapLike, handler: http.RequestListener, path?: string): Promise<{ server: http.Server, port: number }> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    if (path === undefined) server.listen(0, '127.0.0.1', resolve)
    else server.listen(path, resolve)
  })
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise(resolve => server.close(() => resolve(undefined)))
  })
  const address = server.address()
  return { server, port: typeof address === 'object' && address !== null ? (address as AddressInfo).port : 0 }
}

/** A TCP echo server on 127.0.0.1:0. */
export async function listenEcho (t: TapLike): Promise<{ server: net.Server, port: number }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer(socket => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.pipe(socket)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise(resolve => server.close(() => resolve(undefined)))
  })
  return { server, port: (server.address() as AddressInfo).port }
}

/**
 * One request with node:http (no pooling), the body streamed from `body`.
 * Resolves with the response once its head arrived; rejects on a request error.
 */
export function httpRequest (url: string, options: { method?: string, headers?: Record<string, string>, body?: Readable } = {}): { req: http.ClientRequest, response: Promise<http.IncomingMessage> } {
  const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false })
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once('response', resolve)
    req.once('error', reject)
  })
  if (options.body !== undefined) options.body.pipe(req)
  else req.end()
  return { req, response }
}

/** Rejects with a clear message if `promise` does not settle within `ms` (a bound on a hang, not a wait). */
export async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

export const MB = 1024 * 1024

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

/** The built CLI (npm run build). */
export const cliBin = join(repoRoot, 'dist', 'cli', 'main.js')

export interface Child {
  stdout: Buffer[]
  stderr: string
  exit: Promise<number | null>
  proc: ReturnType<typeof spawn>
}

/** `relaygate <args>` as a child process, with only the admin token from the environment. */
export function spawnCli (t: TapLike, token: string, args: string[], stdin: 'pipe' | 'ignore' = 'pipe'): Child {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RELAYGATE_') && k !== 'NODE_OPTIONS') env[k] = v
  env.RELAYGATE_ADMIN_TOKEN = token
  const proc = spawn(process.execPath, [cliBin, ...args], { cwd: repoRoot, env, stdio: [stdin, 'pipe', 'pipe'] })
  const child: Child = {
    proc,
    stdout: [],
    stderr: '',
    exit: new Promise(resolve => proc.once('close', code => resolve(code)))
  }
  proc.stdout!.on('data', (c: Buffer) => child.stdout.push(c))
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { child.stderr += d })
  proc.stdin?.on('error', () => {})
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await child.exit
    }
  })
  return child
}

/** An echo server behind an online agent that allows its port. */
export async function echoSite (t: TapLike, name: string): Promise<{ echo: { port: number }, site: Awaited<ReturnType<typeof startSite>>, ep: any, agent: ReturnType<typeof startAgent> }> {
  const echo = await listenEcho(t)
  const site = await startSite(t)
  const ep = await site.api.ok('POST', '/api/endpoints', { name })
  const agent = startAgent(t, ep.joinToken, { allowTcp: [echo.port] })
  await agent.whenOnline()
  return { echo, site, ep, agent }
}

