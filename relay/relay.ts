import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { RelaygateError, ErrorCode, toRelaygateError } from '../protocol/index.js'
import { readArtifactHeader, type AgentUp, type JobResultBody } from '../protocol/messages.js'
import { loadOrCreateCert } from '../common/tls.js'
import { writeReadyFile } from '../common/files.js'
import { Lifecycle } from '../common/lifecycle.js'
import { VERSION } from '../common/version.js'
import { ArtifactCache } from '../cache/index.js'
import { verifyRelayConfig, type RelayConfig } from './config.js'
import { ServerLink } from './server-link.js'
import { AgentSession, type SessionHost } from './session.js'
import { AgentRegistry } from './agents.js'
import { onServerMessage, onServerStream, type ServerMessageContext } from './server-messages.js'
import { AgentListener } from './listener.js'
import { serveArtifact } from './downloads.js'
import { ResultQueue } from './results.js'
import { createRelayMetrics } from './metrics.js'
import type { UwsTransport } from './uws-transport.js'

export interface RelayStats {
  agents: number
  /** Tunnel streams joined (server side to agent side) since start. */
  streams: number
  checkins: number
  pushes: number
  authFailures: number
}

export interface RelaygateRelay {
  readonly config: RelayConfig
  readonly wsUrl: string | null
  readonly wssUrl: string | null
  readonly fingerprint: string | null
  readonly relayId: string | null
  readonly linked: boolean
  readonly stats: RelayStats
  readonly cache: ArtifactCache
  /** Job results waiting on disk for the server's acknowledgement. */
  readonly queuedResults: number
  /** Resolves once linked to the server (and the ready file is written). */
  whenLinked: () => Promise<void>
  close: () => Promise<void>
  destroy: () => Promise<void>
}

export interface RelayHooks {
  /** The server refused this relay for good, or it gave up; the relay has stopped. */
  onFatal?: (err: RelaygateError) => void
}

/**
 * Builds and starts a relay: agent listeners on the plain and TLS ports and
 * one link to the server. Check-ins are answered here from the flag table
 * the server keeps up to date; the server hears only about changes.
 */
export async function buildRelay (input: Partial<RelayConfig>, logger: Logger, hooks: RelayHooks = {}): Promise<RelaygateRelay> {
  const config = verifyRelayConfig(input)
  mkdirSync(config.dataDir, { recursive: true })
  const life = new Lifecycle()
  const agents = new AgentRegistry()
  const pendingAuth = new Set<AgentSession>()
  const stats: RelayStats = { get agents () { return agents.size }, streams: 0, checkins: 0, pushes: 0, authFailures: 0 }
  const intervals = new IntervalTracker()
  const results = new ResultQueue(join(config.dataDir, 'results'), logger)
  const offline = new OfflineBatch(sids => link.send({ t: 'offline', sids }))
  let linkedResolve!: () => void
  const linked = new Promise<void>(resolve => { linkedResolve = resolve })
  let lastStats = ''
  let readyWritten = false

  const cert = config.tlsPort >= 0
    ? await loadOrCreateCert({ dir: config.dataDir, certFile: config.tlsCert, keyFile: config.tlsKey, commonName: 'relaygate relay', logger })
    : null
  const cache = new ArtifactCache({
    dir: join(config.dataDir, 'cache'),
    maxBytes: config.cacheMaxBytes,
    minFreeBytes: config.cacheMinFreeBytes,
    logger: logger.child({ component: 'cache' }),
    // Fills travel over the one server link, as flow-controlled streams.
    fetch: async (sha256, offset) => {
      const stream = link.openStream({ t: 'artifact', sha256, offset })
      const header = await readArtifactHeader(stream)
      if (header.offset !== offset) {
        stream.destroy()
        throw new RelaygateError('RG_ERR_PROTOCOL', `asked for offset ${offset}, got ${header.offset}`)
      }
      return { size: header.size, body: stream }
    }
  })
  await cache.open()
  life.onClose('cache', () => cache.close())

  const host: SessionHost = {
    get intervalSeconds () { return intervals.current },
    flagsOf: endpointId => agents.flagsOf(endpointId),
    beginAuth,
    sendProof: (s, proof) => link.send({ t: 'auth-proof', sid: s.sid, proof }),
    forwardUp: (s, msg: AgentUp) => link.send({ ...msg, sid: s.sid }),
    storeResult,
    onClosed: (s: AgentSession) => {
      agents.remove(s)
      pendingAuth.delete(s)
      if (s.introduced && link.isReady) offline.add(s.sid)
    },
    count: what => { stats[what]++ }
  }

  const ctx: ServerMessageContext = {
    agents,
    cache,
    results,
    logger,
    get relayId () { return link.relayId },
    get intervalSeconds () { return intervals.current },
    get snapshotIntervalSeconds () { return link.settings.snapshotIntervalSeconds },
    settingsChanged: seconds => {
      if (intervals.change(seconds)) logger.info({ intervalSeconds: seconds }, 'check-in interval changed')
    },
    countStream: () => { stats.streams++ },
    countAuthFailure: () => { stats.authFailures++ }
  }

  const urls = { wsUrl: null as string | null, wssUrl: null as string | null }
  const link = new ServerLink({
    serverUrl: config.server,
    serverFingerprint: config.serverFingerprint,
    logger: logger.child({ component: 'server-link' }),
    keepAliveMs: config.serverKeepAliveMs,
    livenessTimeoutMs: config.serverLivenessTimeoutMs,
    giveUpAfterMs: config.giveUpAfterMs,
    hello: () => ({
      role: 'relay',
      token: config.token,
      version: VERSION,
      ...(config.name !== undefined ? { name: config.name } : {}),
      ...(urls.wsUrl !== null ? { wsUrl: urls.wsUrl } : {}),
      ...(urls.wssUrl !== null ? { wssUrl: urls.wssUrl } : {}),
      ...(cert !== null ? { fingerprint: cert.fingerprint } : {})
    }),
    onReady: () => onLinked(),
    onDown: () => offline.clear(),
    onMessage: msg => onServerMessage(ctx, msg),
    onStream: stream => onServerStream(ctx, stream),
    onFatal: err => {
      logger.error({ code: err.code, message: err.message }, 'relay stopped: the server link cannot be established')
      void life.close(false).then(() => hooks.onFatal?.(err))
    }
  })

  function beginAuth (s: AgentSession): void {
    s.restartAuth()
    if (link.send({ t: 'auth-begin', sid: s.sid, endpointId: s.endpointId, edgeId: s.edgeId })) return
    if (pendingAuth.size >= config.maxPendingAuth) {
      s.fail(new RelaygateError('RG_ERR_UPSTREAM_UNAVAILABLE', 'relay has no link to the server and too many agents wait'))
      return
    }
    pendingAuth.add(s)
  }

  function storeResult (s: AgentSession, result: JobResultBody): void {
    const key = ResultQueue.keyOf(result.jobId, s.endpointId, result.attempt)
    const { jobId, attempt } = result
    // On disk first: from then on the result survives a server outage and a relay restart.
    results.add({ key, endpointId: s.endpointId, jobId, attempt, result, queuedAt: Date.now() }).then(() => {
      s.send({ t: 'job-result-ack', jobId, attempt })
      link.send({ t: 'job-result', key, endpointId: s.endpointId, jobId, attempt, result })
    }, (err: unknown) => {
      const coded = toRelaygateError(err)
      s.log.warn({ code: coded.code, message: coded.message }, 'result not stored; the agent will send it again')
    })
  }

  function onLinked (): void {
    ctx.settingsChanged(link.settings.checkinIntervalSeconds)
    // Everyone connected (or half-way through) authenticates again: the
    // server may have restarted and trusts only what it verified itself.
    pendingAuth.clear()
    for (const s of agents.sessions.values()) if (s.introduced) beginAuth(s)
    // Results kept while the server was away: replay them (the server applies each once).
    for (const r of results.all()) link.send({ t: 'job-result', key: r.key, endpointId: r.endpointId, jobId: r.jobId, attempt: r.attempt, result: r.result })
    lastStats = ''
    sendStats()
    if (readyWritten) return
    readyWritten = true
    writeReadyFile(config.readyFile, { wsUrl: urls.wsUrl, wssUrl: urls.wssUrl, fingerprint: cert?.fingerprint ?? null, relayId: link.relayId, pid: process.pid })
    linkedResolve()
  }

  function acceptAgent (transport: UwsTransport): void {
    if (life.closed || agents.size >= config.maxAgents) {
      const code = life.closed ? 'RG_ERR_GOING_AWAY' : 'RG_ERR_QUEUE_FULL'
      transport.close(ErrorCode[code].close, life.closed ? 'relay shutting down' : 'relay is full')
      return
    }
    const sid = agents.allocateSid()
    const log = logger.child({ sid, remote: transport.remote })
    agents.add(new AgentSession(sid, transport, host, config, log))
  }

  const metrics = createRelayMetrics({ stats, cache, link, queuedResults: () => results.size })
  const listener = await AgentListener.listen({ host: config.host, port: config.port, tlsPort: config.tlsPort, cert, logger }, {
    onAgent: acceptAgent,
    healthz: res => res.writeHeader('content-type', 'application/json')
      .end(JSON.stringify({ ok: true, linked: link.isReady, relayId: link.relayId, agents: agents.size, version: VERSION })),
    metrics: res => metrics.serve(res),
    artifact: (res, req) => serveArtifact(res, req, { cache, authorize: token => agents.mayDownload(token), logger })
  })
  urls.wsUrl = config.publicUrls.find(u => !u.startsWith('wss:'))?.replace(/\/+$/, '') ?? listener.wsUrl
  urls.wssUrl = config.publicUrls.find(u => u.startsWith('wss:'))?.replace(/\/+$/, '') ?? listener.wssUrl
  logger.info({ wsUrl: urls.wsUrl, wssUrl: urls.wssUrl, fingerprint: cert?.fingerprint }, 'relay listening')

  // Results are on disk already; a graceful stop gives the server a moment to acknowledge those in flight.
  life.onClose('server link', async graceful => {
    if (graceful) await waitFor(() => results.size === 0 || !link.isReady, config.resultFlushTimeoutMs)
    await link.close()
  })
  life.onClose('agents', async graceful => {
    // Graceful: agents get a go-away and move to their next relay.
    const err = new RelaygateError('RG_ERR_GOING_AWAY', 'relay shutting down')
    const all = [...agents.sessions.values()]
    await Promise.allSettled(all.map(s => graceful ? s.mux.close(err.closeCode, err.message) : s.mux.destroy(err)))
    for (const s of all) s.mux.transport.terminate()
  })
  life.onClose('listener', () => listener.close())
  life.onClose('offline batch', () => offline.clear())
  life.onClose('timers', startTimers())
  link.start()

  /** The liveness sweep and the figures sent to the server; returns the step that stops them. */
  function startTimers (): () => void {
    const sweeper = setInterval(() => sweep(agents, intervals, config.authTimeoutMs), 1000)
    const statsTimer = setInterval(sendStats, config.statsIntervalMs)
    sweeper.unref()
    statsTimer.unref()
    return () => { clearInterval(sweeper); clearInterval(statsTimer) }
  }

  /** Figures for GET /api/relays, sent when they changed (at most every few seconds). */
  function sendStats (): void {
    const body = { agents: agents.size, queuedResults: results.size, cache: cache.getStats() }
    const text = JSON.stringify(body)
    if (text !== lastStats && link.send({ t: 'stats', ...body })) lastStats = text
  }

  return {
    config,
    wsUrl: urls.wsUrl,
    wssUrl: urls.wssUrl,
    fingerprint: cert?.fingerprint ?? null,
    get relayId () { return link.relayId },
    get linked () { return link.isReady },
    stats,
    cache,
    get queuedResults () { return results.size },
    whenLinked: () => linked,
    close: () => life.close(true),
    destroy: () => life.close(false)
  }
}

/**
 * The check-in interval agents are told, and the longest one some may
 * still be using after a change (they learn it at their next check-in), so
 * the liveness sweep does not drop them in between.
 */
class IntervalTracker {
  current = 5
  private longest = 5
  private changedAt = Date.now()

  change (seconds: number): boolean {
    if (seconds === this.current) return false
    this.longest = Math.max(this.longest, seconds, this.current)
    this.changedAt = Date.now()
    this.current = seconds
    return true
  }

  /** Silence after which an agent counts as gone (ms). */
  deadline (now: number): number {
    const deadline = 3 * this.longest * 1000 + 1000
    if (now - this.changedAt > deadline) this.longest = this.current
    return deadline
  }
}

/** Drops agents that did not authenticate in time or stopped checking in. */
function sweep (agents: AgentRegistry, intervals: IntervalTracker, authTimeoutMs: number): void {
  const now = Date.now()
  const deadline = intervals.deadline(now)
  for (const s of agents.sessions.values()) {
    if (!s.ready) {
      if (now - s.createdAt > authTimeoutMs) s.fail(new RelaygateError('RG_ERR_LIVENESS', 'authentication did not finish in time'))
    } else if (now - s.lastCheckin > deadline) {
      s.fail(new RelaygateError('RG_ERR_LIVENESS', `no check-in for ${Math.round((now - s.lastCheckin) / 1000)} s`))
    }
  }
}

/** Agents gone offline, sent to the server in one message per 100 ms: a site whose network blips sends one, not thousands. */
class OfflineBatch {
  private sids: number[] = []
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly flush: (sids: number[]) => void) {}

  add (sid: number): void {
    this.sids.push(sid)
    this.timer ??= setTimeout(() => {
      this.timer = null
      const sids = this.sids
      this.sids = []
      if (sids.length > 0) this.flush(sids)
    }, 100)
  }

  clear (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.sids = []
  }
}

/** Polls `check` every 25 ms until it holds or `timeoutMs` passed. */
async function waitFor (check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 25))
}
