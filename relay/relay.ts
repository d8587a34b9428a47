import uWS from 'uWebSockets.js'
import { hostname } from 'node:os'
import { mkdirSync } from 'node:fs'
import type { Logger } from 'pino'
import {
  Mux, FrameType, PROTOCOL_VERSION, AGENT_MAX_PAYLOAD, HEADER_SIZE, RelaygateError, isErrorCode,
  decodeHello, decodeJson, decodeCheckin, encodeFrame, encodeHello, encodeJson, frames, toRelaygateError, type Frame, type MuxStream, streamMeta
} from '../protocol/index.js'
import { str, AGENT_UPWARD, AGENT_DOWNWARD } from '../protocol/messages.js'
import { spliceStreams } from '../protocol/splice.js'
import { loadOrCreateCert } from '../protocol/tls.js'
import { writeReadyFile } from '../protocol/files.js'
import { VERSION } from '../protocol/version.js'
import { verifyRelayConfig, type RelayConfig } from './config.js'
import { ServerLink } from './server-link.js'
import { UwsTransport, type AgentSocketData } from './uws-transport.js'
import { ArtifactCache, type CacheStats } from '../cache/index.js'
import { serveArtifact } from './downloads.js'
import { ResultQueue } from './results.js'
import { createRelayMetrics } from './metrics.js'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'

type SessionState = 'hello' | 'auth' | 'ready'

/** One connected agent, as the relay sees it. */
class AgentSession {
  readonly sid: number
  readonly mux: Mux
  readonly log: Logger
  readonly createdAt = Date.now()
  state: SessionState = 'hello'
  endpointId = ''
  edgeId = ''
  authenticated = false
  awaitingProof = false
  /** Bearer token for GET /artifacts, given to the agent in its welcome. */
  downloadToken = ''
  /** With pushFlags off: a tunnel offer waiting for the agent's next check-in. */
  heldOffer: Record<string, unknown> | null = null
  authStartedAt = Date.now()
  lastCheckin = Date.now()
  tokens: number
  lastRefill = Date.now()
  overLimit = 0

  constructor (sid: number, mux: Mux, log: Logger, burst: number) {
    this.sid = sid
    this.mux = mux
    this.log = log
    this.tokens = burst
  }

  control (body: object): void {
    this.mux.send(encodeFrame(FrameType.CONTROL, 0, 0, encodeJson(body)))
  }
}

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

function listen (app: uWS.TemplatedApp, host: string, port: number): Promise<uWS.us_listen_socket> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, token => {
      if (token === false) reject(new RelaygateError('RG_ERR_CONFIG', `cannot listen on ${host}:${port}`))
      else resolve(token)
    })
  })
}

/** Reads exactly `n` bytes from the start of a stream, leaving the rest in it. */
async function readExactly (stream: MuxStream, n: number): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let have = 0
    const onReadable = (): void => {
      let chunk: Buffer | null
      while (have < n && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk)
        have += chunk.length
      }
      if (have < n) return
      cleanup()
      const all = Buffer.concat(chunks)
      if (all.length > n) stream.unshift(all.subarray(n))
      resolve(all.subarray(0, n))
    }
    const onError = (err: Error): void => { cleanup(); reject(err) }
    const onEnd = (): void => { cleanup(); reject(new RelaygateError('RG_ERR_PROTOCOL', 'stream ended before its header')) }
    const cleanup = (): void => {
      stream.off('readable', onReadable)
      stream.off('error', onError)
      stream.off('end', onEnd)
    }
    stream.on('readable', onReadable)
    stream.on('error', onError)
    stream.on('end', onEnd)
  })
}

function advertisedHost (host: string): string {
  if (host === '0.0.0.0' || host === '::') return hostname()
  return host.includes(':') ? `[${host}]` : host
}

/**
 * Builds and starts a relay: agent listeners on the plain and TLS ports and
 * one link to the server. Check-ins are answered here from the flag table
 * the server keeps up to date; the server hears only about changes.
 */
export async function buildRelay (input: Partial<RelayConfig>, logger: Logger, hooks: RelayHooks = {}): Promise<RelaygateRelay> {
  const config = verifyRelayConfig(input)
  mkdirSync(config.dataDir, { recursive: true })
  const sessions = new Map<number, AgentSession>()
  const byEndpoint = new Map<string, Set<AgentSession>>()
  const flagTable = new Map<string, number>()
  const pendingAuth = new Set<AgentSession>()
  const sockets = new Set<UwsTransport>()
  const stats: RelayStats = { get agents () { return sessions.size }, streams: 0, checkins: 0, pushes: 0, authFailures: 0 }
  let offlineBatch: number[] = []
  let offlineTimer: NodeJS.Timeout | null = null
  let nextSid = 1
  let interval = 5
  /** The longest interval agents may still be using (grace after a change). */
  let livenessInterval = 5
  let lastIntervalChange = Date.now()
  let closed = false
  let linkedResolve!: () => void
  const linked = new Promise<void>(resolve => { linkedResolve = resolve })
  let readyWritten = false
  const downloadTokens = new Map<string, AgentSession>()
  const results = new ResultQueue(join(config.dataDir, 'results'))
  let lastStats = ''

  const cert = config.tlsPort >= 0
    ? await loadOrCreateCert({ dir: config.dataDir, certFile: config.tlsCert, keyFile: config.tlsKey, commonName: 'relaygate relay', logger })
    : null

  const refreshUrls = { wsUrl: null as string | null, wssUrl: null as string | null }

  const cache = new ArtifactCache({
    dir: join(config.dataDir, 'cache'),
    maxBytes: config.cacheMaxBytes,
    minFreeBytes: config.cacheMinFreeBytes,
    logger: logger.child({ component: 'cache' }),
    // Fills travel over the one server link, as flow-controlled streams.
    fetch: async (sha256, offset) => {
      const stream = link.openStream({ t: 'artifact', sha256, offset })
      const header = await readExactly(stream, 16)
      const size = Number(header.readBigUInt64BE(0))
      const from = Number(header.readBigUInt64BE(8))
      if (from !== offset) {
        stream.destroy()
        throw new RelaygateError('RG_ERR_PROTOCOL', `asked for offset ${offset}, got ${from}`)
      }
      return { size, body: stream }
    }
  })
  await cache.open()

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
      name: config.name,
      version: VERSION,
      wsUrl: refreshUrls.wsUrl ?? undefined,
      wssUrl: refreshUrls.wssUrl ?? undefined,
      fingerprint: cert?.fingerprint
    }),
    onReady: (_relayId, settings) => {
      changeInterval(settings.checkinIntervalSeconds)
      // Everyone connected (or half-way through) authenticates again: the
      // server may have restarted and trusts only what it verified itself.
      pendingAuth.clear()
      for (const s of sessions.values()) if (s.state !== 'hello') beginAuth(s)
      // Results kept while the server was away: replay them (the server applies each once).
      for (const r of results.all()) link.send({ t: 'job-result', key: r.key, endpointId: r.endpointId, jobId: r.jobId, attempt: r.attempt, result: r.result, sid: 0 })
      lastStats = ''
      sendStats()
      if (!readyWritten) {
        readyWritten = true
        writeReadyFile(config.readyFile, { wsUrl: refreshUrls.wsUrl, wssUrl: refreshUrls.wssUrl, fingerprint: cert?.fingerprint ?? null, relayId: link.relayId, pid: process.pid })
        linkedResolve()
      }
    },
    onDown: () => {
      if (offlineTimer !== null) clearTimeout(offlineTimer)
      offlineTimer = null
      offlineBatch = []
    },
    onMessage: msg => onServerMessage(msg),
    onStream: stream => onServerStream(stream),
    onFatal: err => {
      logger.error({ code: err.code, message: err.message }, 'relay stopped: the server link cannot be established')
      void shutdown(false).then(() => hooks.onFatal?.(err))
    }
  })

  function changeInterval (seconds: number): void {
    if (seconds === interval) return
    livenessInterval = Math.max(livenessInterval, seconds, interval)
    lastIntervalChange = Date.now()
    interval = seconds
  }

  function beginAuth (s: AgentSession): void {
    s.awaitingProof = false
    s.authStartedAt = Date.now()
    if (link.send({ t: 'auth-begin', sid: s.sid, endpointId: s.endpointId, edgeId: s.edgeId })) return
    if (pendingAuth.size >= config.maxPendingAuth) {
      void s.mux.destroy(new RelaygateError('RG_ERR_UPSTREAM_UNAVAILABLE', 'relay has no link to the server and too many agents wait'))
      return
    }
    pendingAuth.add(s)
  }

  function pushAnswer (s: AgentSession, flags: number): void {
    if (!config.pushFlags) return
    stats.pushes++
    s.mux.send(frames.checkinAnswer({ seq: 0, flags, intervalSeconds: interval }))
  }

  function onServerMessage (msg: Record<string, unknown>): void {
    switch (msg.t) {
      case 'auth-challenge': {
        const s = sessions.get(msg.sid as number)
        if (s === undefined || typeof msg.nonce !== 'string') return
        s.awaitingProof = true
        s.control({ t: 'challenge', nonce: msg.nonce, relayId: link.relayId })
        return
      }
      case 'auth-result': {
        const s = sessions.get(msg.sid as number)
        if (s === undefined) return
        s.awaitingProof = false
        if (msg.ok === true) {
          const flags = typeof msg.flags === 'number' ? msg.flags : 0
          if (flags === 0) flagTable.delete(s.endpointId)
          else flagTable.set(s.endpointId, flags)
          const first = !s.authenticated
          s.authenticated = true
          s.state = 'ready'
          s.lastCheckin = Date.now()
          let set = byEndpoint.get(s.endpointId)
          if (set === undefined) {
            set = new Set()
            byEndpoint.set(s.endpointId, set)
          }
          set.add(s)
          if (first) {
            s.log.info({ endpointId: s.endpointId }, 'agent authenticated')
            s.downloadToken = randomBytes(24).toString('base64url')
            downloadTokens.set(s.downloadToken, s)
          }
          s.control({
            t: 'welcome',
            endpointId: s.endpointId,
            relayId: link.relayId,
            intervalSeconds: interval,
            snapshotIntervalSeconds: link.settings.snapshotIntervalSeconds,
            downloadToken: s.downloadToken
          })
          if (flags !== 0) pushAnswer(s, flags)
          return
        }
        stats.authFailures++
        const code = isErrorCode(msg.code) ? msg.code : 'RG_ERR_AUTH'
        s.log.warn({ endpointId: s.endpointId, code }, 'agent refused by the server')
        void s.mux.destroy(new RelaygateError(code, typeof msg.message === 'string' ? msg.message : undefined))
        return
      }
      case 'flags': {
        if (!Array.isArray(msg.set)) return
        for (const entry of msg.set) {
          if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1] !== 'number') continue
          const [endpointId, flags] = entry as [string, number]
          if (flags === 0) flagTable.delete(endpointId)
          else flagTable.set(endpointId, flags)
          // Push at once instead of waiting for the next check-in.
          if (flags !== 0) for (const s of byEndpoint.get(endpointId) ?? []) if (s.state === 'ready') pushAnswer(s, flags)
        }
        return
      }
      case 'settings':
        changeInterval(link.settings.checkinIntervalSeconds)
        logger.info({ intervalSeconds: interval }, 'check-in interval changed')
        return
      case 'kick': {
        if (typeof msg.endpointId !== 'string') return
        const code = isErrorCode(msg.code) ? msg.code : 'RG_ERR_ENDPOINT_DELETED'
        flagTable.delete(msg.endpointId)
        for (const s of [...sessions.values()]) {
          if (s.endpointId === msg.endpointId) void s.mux.destroy(new RelaygateError(code, typeof msg.message === 'string' ? msg.message : undefined))
        }
        return
      }
      case 'prestage':
        if (typeof msg.sha256 === 'string') {
          cache.prestage(msg.sha256).then(
            () => logger.info({ sha256: msg.sha256 }, 'prestaged'),
            err => logger.warn({ sha256: msg.sha256, code: (err as RelaygateError).code }, 'prestage failed'))
        }
        return
      case 'job-result-ack':
        if (typeof msg.key === 'string') results.remove(msg.key)
        return
      default: {
        if (typeof msg.t === 'string' && AGENT_DOWNWARD.has(msg.t)) {
          // For one agent: pass it down without the sid.
          const s = sessions.get(msg.sid as number)
          if (s === undefined || !s.authenticated) return
          const { sid: _sid, ...rest } = msg
          s.log.trace({ forward: rest }, 'server -> agent')
          if (!config.pushFlags && rest.t === 'tunnel-offer') {
            // Polling mode: the agent learns of the tunnel at its next check-in.
            s.heldOffer = rest
            return
          }
          s.control(rest)
          return
        }
        logger.debug({ t: msg.t }, 'ignoring unknown message from the server')
      }
    }
  }

  /** A tunnel stream from the server for one of our agents: open one to the agent and join them. */
  function onServerStream (up: MuxStream): void {
    const meta = streamMeta(up)
    if (meta === null) return
    const s = sessions.get(meta.sid as number)
    if (s === undefined || !s.authenticated) {
      up.destroy(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'that agent is not connected to this relay'))
      return
    }
    const { sid: _sid, ...forAgent } = meta
    let down: MuxStream
    try {
      down = s.mux.openStream(encodeJson(forAgent))
    } catch (err) {
      up.destroy(toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED'))
      return
    }
    stats.streams++
    s.log.trace({ meta: forAgent, streamId: down.id }, 'tunnel stream')
    spliceStreams(up, down)
  }

  function queueOffline (sid: number): void {
    if (!link.isReady) return
    offlineBatch.push(sid)
    if (offlineTimer === null) {
      // Batch: a site whose network blips sends one message, not thousands.
      offlineTimer = setTimeout(() => {
        offlineTimer = null
        const sids = offlineBatch
        offlineBatch = []
        if (sids.length > 0) link.send({ t: 'offline', sids })
      }, 100)
    }
  }

  function onAgentFrame (s: AgentSession, frame: Frame): void {
    switch (frame.type) {
      case FrameType.HELLO: {
        if (s.state !== 'hello') throw new RelaygateError('RG_ERR_PROTOCOL', 'second hello')
        const { version, body } = decodeHello(frame.payload)
        if (version !== PROTOCOL_VERSION) throw new RelaygateError('RG_ERR_VERSION', `relay speaks protocol ${PROTOCOL_VERSION}, agent ${version}`)
        if (body.role !== 'agent') throw new RelaygateError('RG_ERR_PROTOCOL', 'only agents may connect here')
        s.endpointId = str(body, 'endpointId', 64)
        s.edgeId = str(body, 'edgeId', 128)
        s.state = 'auth'
        s.mux.send(encodeFrame(FrameType.HELLO, 0, 0, encodeHello(PROTOCOL_VERSION, { role: 'relay', version: VERSION })))
        beginAuth(s)
        return
      }
      case FrameType.CONTROL: {
        if (s.state === 'hello') throw new RelaygateError('RG_ERR_PROTOCOL', 'hello first')
        const msg = decodeJson(frame.payload)
        if (msg.t === 'proof') {
          if (!s.awaitingProof) throw new RelaygateError('RG_ERR_PROTOCOL', 'proof without a challenge')
          s.awaitingProof = false
          if (!link.send({ t: 'auth-proof', sid: s.sid, proof: str(msg, 'proof', 128) })) beginAuth(s)
          return
        }
        if (msg.t === 'job-result') {
          if (!s.authenticated) throw new RelaygateError('RG_ERR_PROTOCOL', 'job-result before authentication')
          const jobId = str(msg, 'jobId', 64)
          const attempt = typeof msg.attempt === 'number' && Number.isInteger(msg.attempt) ? msg.attempt : 0
          const key = ResultQueue.keyOf(jobId, s.endpointId, attempt)
          const { t: _t, ...result } = msg
          // On disk first: from then on the result survives a server outage and a relay restart.
          results.add({ key, endpointId: s.endpointId, jobId, attempt, result, queuedAt: Date.now() }).then(() => {
            s.control({ t: 'job-result-ack', jobId, attempt })
            link.send({ t: 'job-result', key, endpointId: s.endpointId, jobId, attempt, result, sid: 0 })
          }, (err: unknown) => {
            const coded = toRelaygateError(err)
            s.log.warn({ code: coded.code, message: coded.message }, 'result not stored; the agent will send it again')
          })
          return
        }
        if (typeof msg.t === 'string' && AGENT_UPWARD.has(msg.t)) {
          if (!s.authenticated) throw new RelaygateError('RG_ERR_PROTOCOL', `${msg.t} before authentication`)
          // Up to the server, naming the agent by the session it authenticated on.
          s.log.trace({ forward: msg }, 'agent -> server')
          link.send({ ...msg, t: msg.t, sid: s.sid })
          return
        }
        throw new RelaygateError('RG_ERR_PROTOCOL', `unknown control message ${JSON.stringify(msg.t)}`)
      }
      case FrameType.CHECKIN: {
        if (!s.authenticated) throw new RelaygateError('RG_ERR_PROTOCOL', 'check-in before authentication')
        const { seq } = decodeCheckin(frame.payload)
        const now = Date.now()
        s.tokens = Math.min(config.checkinBurst, s.tokens + (now - s.lastRefill) / 1000 * config.checkinRatePerSecond)
        s.lastRefill = now
        if (s.tokens < 1) {
          s.overLimit++
          if (s.overLimit > config.checkinBurst * 4) throw new RelaygateError('RG_ERR_RATE_LIMIT', 'check-ins far above the allowed rate')
          s.mux.send(frames.error(4006, 'check-in rate limit: slow down'))
          return
        }
        s.tokens -= 1
        s.lastCheckin = now
        stats.checkins++
        s.mux.send(frames.checkinAnswer({ seq, flags: flagTable.get(s.endpointId) ?? 0, intervalSeconds: interval }))
        if (s.heldOffer !== null) {
          s.control(s.heldOffer)
          s.heldOffer = null
        }
        return
      }
      default:
        throw new RelaygateError('RG_ERR_PROTOCOL', `unexpected frame 0x${frame.type.toString(16)} from an agent`)
    }
  }

  function acceptAgent (transport: UwsTransport): void {
    if (closed || sessions.size >= config.maxAgents) {
      transport.close(closed ? 4009 : 4016, closed ? 'relay shutting down' : 'relay is full')
      return
    }
    const sid = nextSid
    nextSid = nextSid >= 0xfffffffe ? 1 : nextSid + 1
    const log = logger.child({ sid, remote: transport.remote })
    let session: AgentSession | null = null
    const mux = new Mux(transport, {
      role: 'listener',
      maxPayload: AGENT_MAX_PAYLOAD,
      maxStreams: 256,
      maxBufferedBytes: 1024 * 1024,
      logger: log,
      onFrame: frame => {
        try {
          onAgentFrame(session!, frame)
        } catch (err) {
          const coded = toRelaygateError(err, 'RG_ERR_PROTOCOL')
          log.warn({ code: coded.code, message: coded.message }, 'closing agent link')
          void mux.destroy(coded)
        }
      },
      onClose: ({ code }) => {
        const s = session!
        sessions.delete(s.sid)
        pendingAuth.delete(s)
        sockets.delete(transport)
        const set = byEndpoint.get(s.endpointId)
        if (set !== undefined && set.delete(s) && set.size === 0) byEndpoint.delete(s.endpointId)
        if (s.downloadToken !== '') downloadTokens.delete(s.downloadToken)
        if (s.state !== 'hello') queueOffline(s.sid)
        if (s.authenticated) log.info({ endpointId: s.endpointId, code }, 'agent disconnected')
      }
    })
    session = new AgentSession(sid, mux, log, config.checkinBurst)
    sessions.set(sid, session)
    sockets.add(transport)
  }

  const behavior: uWS.WebSocketBehavior<AgentSocketData> = {
    compression: uWS.DISABLED,
    maxPayloadLength: 4 * (AGENT_MAX_PAYLOAD + HEADER_SIZE),
    maxBackpressure: 2 * 1024 * 1024,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    open: ws => {
      const transport = new UwsTransport(ws)
      ws.getUserData().transport = transport
      acceptAgent(transport)
    },
    message: (ws, message, isBinary) => {
      const t = ws.getUserData().transport
      if (t === undefined || t.closed) return
      if (!isBinary) {
        t.close(4000, 'text messages are not part of the protocol')
        return
      }
      t.onMessage(message)
    },
    drain: ws => ws.getUserData().transport?.onDrain(),
    close: (ws, code, message) => ws.getUserData().transport?.onClose(code, message)
  }

  const healthz = (res: uWS.HttpResponse): void => {
    res.writeHeader('content-type', 'application/json').end(JSON.stringify({ ok: true, linked: link.isReady, relayId: link.relayId, agents: sessions.size, version: VERSION }))
  }
  const notFound = (res: uWS.HttpResponse, req: uWS.HttpRequest): void => {
    res.writeStatus('404 Not Found').writeHeader('content-type', 'application/json')
      .end(JSON.stringify({ error: { code: 'RG_ERR_NOT_FOUND', message: `no route ${req.getMethod().toUpperCase()} ${req.getUrl()}` } }))
  }
  const downloads = (res: uWS.HttpResponse, req: uWS.HttpRequest): void => serveArtifact(res, req, {
    cache,
    authorize: token => token !== '' && downloadTokens.get(token)?.authenticated === true,
    logger
  })
  const metrics = createRelayMetrics({ stats, cache, link, queuedResults: () => results.size })
  const setup = (app: uWS.TemplatedApp): uWS.TemplatedApp => app.ws('/agent', behavior).get('/healthz', healthz).get('/metrics', res => metrics.serve(res)).get('/artifacts/:sha256', downloads).any('/*', notFound)

  const listeners: uWS.us_listen_socket[] = []
  let wsUrl: string | null = null
  let wssUrl: string | null = null
  try {
    const plain = setup(uWS.App())
    const port = uWS.us_socket_local_port(await listen(plain, config.host, config.port).then(t => { listeners.push(t); return t }))
    wsUrl = `ws://${advertisedHost(config.host)}:${port}`
    if (cert !== null) {
      const secure = setup(uWS.SSLApp({ key_file_name: cert.keyFile, cert_file_name: cert.certFile }))
      const tlsPort = uWS.us_socket_local_port(await listen(secure, config.host, config.tlsPort).then(t => { listeners.push(t); return t }))
      wssUrl = `wss://${advertisedHost(config.host)}:${tlsPort}`
    }
  } catch (err) {
    for (const l of listeners) uWS.us_listen_socket_close(l)
    throw err
  }
  for (const u of config.publicUrls) {
    if (u.startsWith('wss:')) wssUrl = u.replace(/\/+$/, '')
    else wsUrl = u.replace(/\/+$/, '')
  }
  refreshUrls.wsUrl = wsUrl
  refreshUrls.wssUrl = wssUrl
  logger.info({ wsUrl, wssUrl, fingerprint: cert?.fingerprint }, 'relay listening')

  const sweeper = setInterval(() => {
    const now = Date.now()
    const deadline = 3 * livenessInterval * 1000 + 1000
    if (now - lastIntervalChange > deadline) livenessInterval = interval
    for (const s of sessions.values()) {
      if (!s.authenticated) {
        if (now - s.createdAt > config.authTimeoutMs) void s.mux.destroy(new RelaygateError('RG_ERR_LIVENESS', 'authentication did not finish in time'))
      } else if (now - s.lastCheckin > deadline) {
        void s.mux.destroy(new RelaygateError('RG_ERR_LIVENESS', `no check-in for ${Math.round((now - s.lastCheckin) / 1000)} s`))
      }
    }
  }, 1000)
  sweeper.unref()

  /** Figures for GET /api/relays, sent when they changed (at most every few seconds). */
  function sendStats (): void {
    const c: CacheStats = cache.getStats()
    const body = { agents: sessions.size, queuedResults: results.size, cache: c }
    const text = JSON.stringify(body)
    if (text === lastStats) return
    if (link.send({ t: 'stats', sid: 0, ...body })) lastStats = text
  }
  const statsTimer = setInterval(sendStats, config.statsIntervalMs)
  statsTimer.unref()

  link.start()

  let shutting: Promise<void> | null = null
  function shutdown (graceful: boolean): Promise<void> {
    if (shutting !== null) return shutting
    closed = true
    shutting = (async () => {
      clearInterval(sweeper)
      clearInterval(statsTimer)
      if (offlineTimer !== null) clearTimeout(offlineTimer)
      for (const l of listeners) uWS.us_listen_socket_close(l)
      listeners.length = 0
      const err = new RelaygateError('RG_ERR_GOING_AWAY', 'relay shutting down')
      // Graceful: agents get a go-away (4009) and move to their next relay.
      await Promise.allSettled([...sessions.values()].map(s => graceful ? s.mux.close(4009, 'relay shutting down') : s.mux.destroy(err)))
      for (const t of sockets) t.terminate()
      // Results are on disk already; give the server a moment to acknowledge those in flight.
      if (graceful) await waitFor(() => results.size === 0 || !link.isReady, config.resultFlushTimeoutMs)
      await link.close()
      await cache.close()
    })()
    return shutting
  }

  return {
    config,
    wsUrl,
    wssUrl,
    fingerprint: cert?.fingerprint ?? null,
    get relayId () { return link.relayId },
    get linked () { return link.isReady },
    stats,
    cache,
    get queuedResults () { return results.size },
    whenLinked: () => linked,
    close: () => shutdown(true),
    destroy: () => shutdown(false)
  }
}

/** Polls `check` every 25 ms until it holds or `timeoutMs` passed. */
async function waitFor (check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 25))
}
