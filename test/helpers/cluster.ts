import { mkdtempSync, rmSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino, type Logger } from 'pino'
import { buildServer, type RelaygateServer } from '../../server/server.js'
import { buildRelay, type RelaygateRelay } from '../../relay/relay.js'
import { RelaygateAgent } from '../../agent/agent.js'
import type { ServerConfig } from '../../server/config.js'
import type { RelayConfig } from '../../relay/config.js'
import type { AgentConfig } from '../../agent/config.js'
import { databaseFor } from './postgres.js'

export interface TapLike {
  teardown: (fn: () => unknown) => void
}

export function testLogger (): Logger {
  return pino({ level: process.env.RELAYGATE_TEST_LOG ?? 'silent' })
}

export function tempDir (t: TapLike, prefix = 'relaygate-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A thin client for the admin API. */
export class Api {
  constructor (readonly baseUrl: string, readonly token: string) {}

  async request (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> {
    const res = await fetch(this.baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body))
    })
    const text = await res.text()
    let parsed: unknown = text
    try { parsed = text === '' ? null : JSON.parse(text) } catch {}
    return { status: res.status, body: parsed }
  }

  async ok (method: string, path: string, body?: unknown): Promise<any> {
    const res = await this.request(method, path, body)
    if (res.status >= 300) throw new Error(`${method} ${path} -> ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }
}

/**
 * The store a test server uses: the SQLite file in its data dir, or with
 * RELAYGATE_TEST_STORE=postgres (the suite's PostgreSQL pass, `npm run
 * test:postgres`) a database of its own on a PostgreSQL server this test
 * process starts, the same one again for the same data dir (restarts).
 */
export async function testStore (dataDir: string): Promise<Partial<ServerConfig>> {
  if (process.env.RELAYGATE_TEST_STORE !== 'postgres') return {}
  return { databaseUrl: await databaseFor(dataDir) }
}

export async function startServer (t: TapLike, dataDir?: string, extra: Partial<ServerConfig> = {}): Promise<{ server: RelaygateServer, api: Api, dataDir: string }> {
  const dir = dataDir ?? join(tempDir(t), 'server')
  const server = await buildServer({ dataDir: dir, host: '127.0.0.1', httpPort: 0, httpsPort: 0, ...await testStore(dir), ...extra }, testLogger())
  t.teardown(() => server.destroy())
  const token = readFileSync(server.adminTokenFile, 'utf8').trim()
  return { server, api: new Api(server.httpUrl, token), dataDir: dir }
}

export async function startRelay (t: TapLike, serverUrl: string | string[], token: string, extra: Partial<RelayConfig> = {}, logger: Logger = testLogger()): Promise<RelaygateRelay> {
  const relay = await buildRelay({ server: serverUrl, token, dataDir: join(tempDir(t), 'relay'), host: '127.0.0.1', port: 0, tlsPort: 0, ...extra }, logger)
  t.teardown(() => relay.destroy())
  await relay.whenLinked()
  return relay
}

export function startAgent (t: TapLike, joinToken: string, extra: Partial<AgentConfig> = {}): RelaygateAgent {
  const agent = new RelaygateAgent({ joinToken, dataDir: join(tempDir(t), 'agent'), ...extra }, testLogger())
  t.teardown(() => agent.destroy())
  return agent.start()
}

/** A logger that keeps every line (at `level`) in memory, for asserting what was logged. */
export function capturingLogger (level = 'trace'): { logger: Logger, lines: string[] } {
  const lines: string[] = []
  const logger = pino({ level }, { write: (line: string) => { lines.push(line) } })
  return { logger, lines }
}

/** An HTTP server on 127.0.0.1 answering JSON {name, path}: an agent-side tunnel target. */
export async function startTarget (t: TapLike, name = 'target'): Promise<{ url: string, port: number, hits: string[] }> {
  const http = await import('node:http')
  const hits: string[] = []
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? '')
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ name, path: req.url }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise(resolve => { server.closeAllConnections(); server.close(resolve) }))
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}`, port, hits }
}

/** A port that was free a moment ago (for restarts on a fixed port). */
export async function freePort (): Promise<number> {
  const { createServer } = await import('node:net')
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

/** Polls `check` until it returns a truthy value (or throws after `timeoutMs`). */
export async function eventually<T> (check: () => Promise<T> | T, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value) return value
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms${last === undefined ? '' : `: ${String(last)}`}`)
    await new Promise(resolve => setTimeout(resolve, stepMs))
  }
}

/** Server + one relay linked to it. */
export async function startSite (t: TapLike, extra: { server?: Partial<ServerConfig>, relay?: Partial<RelayConfig>, relayLogger?: Logger } = {}): Promise<{ server: RelaygateServer, api: Api, relay: RelaygateRelay, relayToken: string, relayId: string }> {
  const { server, api } = await startServer(t, undefined, extra.server)
  const created = await api.ok('POST', '/api/relays', { name: 'site-a' })
  const relay = await startRelay(t, server.httpUrl, created.token, extra.relay, extra.relayLogger)
  return { server, api, relay, relayToken: created.token, relayId: created.id }
}
