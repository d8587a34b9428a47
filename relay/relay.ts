import { createWriteStream, mkdirSync } from 'node:fs'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/index.js'
import { readArtifactHeader, type Settings } from '../protocol/messages.js'
import { loadOrCreateCert } from '../common/tls.js'
import { writeReadyFile } from '../common/files.js'
import { Lifecycle } from '../common/lifecycle.js'
import { VERSION, atLeastVersion, UPDATES_SINCE } from '../common/version.js'
import { SelfUpdater } from '../common/updater.js'
import { Versions } from '../common/self-update.js'
import { isOneFile } from '../common/embedded.js'
import { ArtifactCache, type Upstream } from '../cache/index.js'
import { verifyRelayConfig, type RelayConfig } from './config.js'
import { ServerLink } from './server-link.js'
import { RelayCore, type RelayStats, type RelayTaps } from './core.js'
import { AgentListener } from './listener.js'
import { serveArtifact } from './downloads.js'
import { serveInstall } from './install.js'
import { FailureLimiter } from '../common/failure-limiter.js'
import { ResultQueue } from './results.js'
import { createRelayMetrics } from './metrics.js'

export type { RelayStats } from './core.js'

export interface RelaygateRelay {
  readonly config: RelayConfig
  readonly wsUrl: string | null
  readonly wssUrl: string | null
  readonly fingerprint: string | null
  readonly relayId: string | null
  readonly linked: boolean
  /** The settings the server gave (they change with PATCH /api/settings on any replica). */
  readonly settings: Settings
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
  /** A self-update switched versions (issue 16): close the relay and start it again (the CLI exits with RESTART_EXIT_CODE). */
  onRestart?: (reason: string) => void
  /** Tests that play a hostile relay (never set in production). */
  taps?: RelayTaps
}

/**
 * Builds and starts a relay: agent listeners on the plain and TLS ports and
 * one link to the server. Check-ins are answered here (RelayCore) from the
 * flag table the server keeps up to date; the server hears only about changes.
 * Each part registers its close step as it is built; they run in reverse.
 */
export async function buildRelay (input: Partial<RelayConfig>, logger: Logger, hooks: RelayHooks = {}): Promise<RelaygateRelay> {
  const config = verifyRelayConfig(input)
  const version = config.version ?? VERSION
  mkdirSync(config.dataDir, { recursive: true })
  const life = new Lifecycle()
  const urls = { wsUrl: null as string | null, wssUrl: null as string | null }
  let readyWritten = false
  let linkedResolve!: () => void
  const linked = new Promise<void>(resolve => { linkedResolve = resolve })

  const cert = config.tlsPort >= 0
    ? await loadOrCreateCert({ dir: config.dataDir, certFile: config.tlsCert, keyFile: config.tlsKey, commonName: 'relaygate relay', logger })
    : null
  const cache = new ArtifactCache({
    dir: join(config.dataDir, 'cache'),
    maxBytes: config.cacheMaxBytes,
    minFreeBytes: config.cacheMinFreeBytes,
    logger: logger.child({ component: 'cache' }),
    fetch: (sha256, offset) => fill(link, sha256, offset)
  })
  await cache.open()
  life.onClose('cache', () => cache.close())
  const results = new ResultQueue(join(config.dataDir, 'results'), logger)

  const link: ServerLink = new ServerLink({
    serverUrls: config.servers,
    serverFingerprints: config.serverFingerprints,
    ...(config.proxy === undefined ? {} : { proxy: config.proxy }),
    logger: logger.child({ component: 'server-link' }),
    keepAliveMs: config.serverKeepAliveMs,
    livenessTimeoutMs: config.serverLivenessTimeoutMs,
    giveUpAfterMs: config.giveUpAfterMs,
    hello: () => ({
      role: 'relay',
      token: config.token,
      version,
      ...(config.name !== undefined ? { name: config.name } : {}),
      ...(urls.wsUrl !== null ? { wsUrl: urls.wsUrl } : {}),
      ...(urls.wssUrl !== null ? { wssUrl: urls.wssUrl } : {}),
      ...(cert !== null ? { fingerprint: cert.fingerprint } : {})
    }),
    onReady: () => {
      core.linked()
      stats.resend()
      // Only a server that orders updates hears about them (an older one would refuse the message).
      if (atLeastVersion(link.serverVersion ?? '', UPDATES_SINCE)) updater.onOnline()
      if (readyWritten) return
      readyWritten = true
      writeReadyFile(config.readyFile, { wsUrl: urls.wsUrl, wssUrl: urls.wssUrl, fingerprint: cert?.fingerprint ?? null, relayId: link.relayId, pid: process.pid })
      linkedResolve()
    },
    onDown: () => core.linkDown(),
    onMessage: msg => core.onMessage(msg),
    onStream: stream => core.onStream(stream),
    onFatal: err => {
      logger.error({ code: err.code, message: err.message }, 'relay stopped: the server link cannot be established')
      void life.close(false).then(() => hooks.onFatal?.(err))
    }
  })
  // Results are on disk already; a graceful stop gives the server a moment to acknowledge those in flight.
  life.onClose('server link', async graceful => {
    if (graceful) await waitFor(() => results.size === 0 || !link.isReady, config.resultFlushTimeoutMs)
    await link.close()
  })

  const core = new RelayCore(config, link, results, cache, logger, hooks.taps)
  life.onClose('agents', graceful => core.close(graceful))
  const updater = relayUpdater(config, version, cache, link, logger, hooks)
  core.onUpdate = order => updater.onOrder(order)
  life.onClose('updates', () => updater.close())
  const metrics = createRelayMetrics({ stats: core.stats, cache, link, queuedResults: () => results.size, version })
  // The executable at /install/: 5 downloads per peer address at once, then one every 10 minutes.
  const installDownloads = new FailureLimiter({ burst: 5, perSecond: 1 / 600, maxKeys: 10_000 })
  const listener = await AgentListener.listen({ host: config.host, port: config.port, tlsPort: config.tlsPort, cert, logger, retryForMs: config.listenRetryMs }, {
    onAgent: transport => core.accept(transport),
    healthz: res => res.writeStatus(link.isReady ? '200 OK' : '503 Service Unavailable').writeHeader('content-type', 'application/json')
      .end(JSON.stringify({ ok: link.isReady, linked: link.isReady, relayId: link.relayId, agents: core.agents.size, version })),
    metrics: res => metrics.serve(res),
    artifact: (res, req) => serveArtifact(res, req, { cache, authorize: token => core.agents.mayDownload(token), logger }),
    install: (res, req, secure) => serveInstall(res, req, { installers: () => core.installers, cache, secure, logger, limiter: installDownloads })
  })
  life.onClose('listener', () => listener.close())
  urls.wsUrl = config.publicUrls.find(u => !u.startsWith('wss:'))?.replace(/\/+$/, '') ?? listener.wsUrl
  urls.wssUrl = config.publicUrls.find(u => u.startsWith('wss:'))?.replace(/\/+$/, '') ?? listener.wssUrl
  logger.info({ wsUrl: urls.wsUrl, wssUrl: urls.wssUrl, fingerprint: cert?.fingerprint }, 'relay listening')

  const stats = new StatsReporter(() => ({ agents: core.agents.size, queuedResults: results.size, cache: cache.getStats() }), body => link.send({ t: 'stats', ...body }))
  const sweeper = setInterval(() => core.sweep(), 1000)
  const statsTimer = setInterval(() => stats.send(), config.statsIntervalMs)
  sweeper.unref()
  statsTimer.unref()
  life.onClose('timers', () => { clearInterval(sweeper); clearInterval(statsTimer) })
  link.start()

  return {
    config,
    wsUrl: urls.wsUrl,
    wssUrl: urls.wssUrl,
    fingerprint: cert?.fingerprint ?? null,
    get relayId () { return link.relayId },
    get linked () { return link.isReady },
    get settings () { return link.settings },
    stats: core.stats,
    cache,
    get queuedResults () { return results.size },
    whenLinked: () => linked,
    close: () => life.close(true),
    destroy: () => life.close(false)
  }
}

/** The relay's self-update (issue 16): the executable comes from its own cache, filled through the link like any artifact. */
function relayUpdater (config: RelayConfig, version: string, cache: ArtifactCache, link: ServerLink, logger: Logger, hooks: RelayHooks): SelfUpdater {
  return new SelfUpdater({
    role: 'relay',
    logger,
    version,
    send: report => { link.send({ t: 'relay-update-progress', ...report }) },
    // With verify, the cache hashes its copy first: a damaged one is dropped and fetched again.
    fetch: async (order, part, verify, progress) => {
      const { stream } = await cache.get(order.sha256, 0, { verify })
      let bytes = 0
      const count = new Transform({ transform: (chunk: Buffer, _enc, cb) => { bytes += chunk.length; progress(bytes); cb(null, chunk) } })
      await pipeline(stream, count, createWriteStream(part))
    },
    restart: reason => hooks.onRestart?.(reason)
  }, config.selfUpdate ?? new Versions(config.dataDir, { execPath: process.execPath, version, oneFile: isOneFile() }), config.dataDir)
}

/** A cache fill: a flow-controlled stream over the one server link, after its 16-byte header. */
async function fill (link: ServerLink, sha256: string, offset: number): Promise<Upstream> {
  const stream = link.openStream({ t: 'artifact', sha256, offset })
  const header = await readArtifactHeader(stream)
  if (header.offset !== offset) {
    stream.destroy()
    throw new RelaygateError('RG_ERR_PROTOCOL', `asked for offset ${offset}, got ${header.offset}`)
  }
  return { size: header.size, body: stream }
}

/** The relay's figures for GET /api/relays, sent when they changed (checked every few seconds) and after each re-link. */
class StatsReporter<T> {
  private last = ''

  constructor (private readonly read: () => T, private readonly sendUp: (body: T) => boolean) {}

  send (): void {
    const body = this.read()
    const text = JSON.stringify(body)
    if (text !== this.last && this.sendUp(body)) this.last = text
  }

  resend (): void {
    this.last = ''
    this.send()
  }
}

/** Polls `check` every 25 ms until it holds or `timeoutMs` passed. */
async function waitFor (check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 25))
}
