import type { Logger } from 'pino'
import { RelaygateError, ErrorCode, toRelaygateError, type Transport, type MuxStream } from '../protocol/index.js'
import type { InstallerFile } from '../protocol/relay-messages.js'
import type { UpdateOrder } from '../common/updater.js'
import type { AgentUp, JobResultBody, RelayToServer, ServerToRelay, Settings } from '../protocol/messages.js'
import type { ArtifactCache } from '../cache/index.js'
import { AgentSession, type SessionHost, type SessionLimits } from './session.js'
import { AgentRegistry } from './agents.js'
import { onServerMessage, onServerStream, type ServerMessageContext } from './server-messages.js'
import { IntervalTracker, OfflineBatch, sweep } from './liveness.js'
import { ResultQueue } from './results.js'
import { FailureLimiter } from '../common/failure-limiter.js'

/** An agent whose result the relay could not store sends it again after this long (s). */
const RESULT_RETRY_SECONDS = 5

/** What the core needs of the server link (the real one, or a fake in unit tests). */
export interface UpstreamLink {
  readonly isReady: boolean
  readonly relayId: string | null
  readonly settings: Settings
  /** Sends a control message; false when the link is down. */
  send: (msg: RelayToServer) => boolean
}

export interface RelayStats {
  agents: number
  /** Tunnel streams joined (server side to agent side) since start. */
  streams: number
  checkins: number
  pushes: number
  authFailures: number
  /** Connections closed at once because their address sent too many wrong proofs. */
  peersTurnedAway: number
}

/**
 * Taps on what a relay passes between the server and its agents, for tests
 * that play a relay taken over by an attacker (test/helpers/hostile-relay.ts):
 * end-to-end authentication is what must stop it. Unset in production.
 */
export interface RelayTaps {
  /** A message from the server, before the relay acts on it: the messages to act on instead. */
  fromServer?: (msg: ServerToRelay) => ServerToRelay[]
  /** A message to the server, before it is sent: the messages to send instead. */
  toServer?: (msg: RelayToServer) => RelayToServer[]
  /** A piece of a tunnel stream on its way through: the bytes to pass on instead. */
  tunnelChunk?: (chunk: Buffer, direction: 'to-agent' | 'to-server') => Buffer
  /** Called once with functions that make the relay act on or send a message of the test's own. */
  attach?: (inject: { fromServer: (msg: ServerToRelay) => void, toServer: (msg: RelayToServer) => boolean }) => void
}

export interface RelayCoreOptions extends SessionLimits {
  maxAgents: number
  maxPendingAuth: number
  authTimeoutMs: number
}

/**
 * The relay without its sockets: agent sessions, the flag table, the
 * authentication relayed to the server, durable job results, and the
 * handlers of what the server sends. The listener hands it transports, the
 * server link hands it messages; unit tests drive it over in-memory
 * transports and a fake link.
 */
export class RelayCore implements SessionHost {
  readonly agents = new AgentRegistry()
  readonly stats: RelayStats
  readonly intervals = new IntervalTracker()
  /** The one-file executables anyone may download here (/install/<name>), by name: the server's list. */
  installers = new Map<string, InstallerFile>()
  /** An update order for this relay itself (issue 16): set by the relay that owns this core. */
  onUpdate: (order: UpdateOrder) => void = () => {}
  private readonly pendingAuth = new Set<AgentSession>()
  private readonly offline: OfflineBatch
  private readonly ctx: ServerMessageContext
  private closed = false

  constructor (
    private readonly opts: RelayCoreOptions,
    upstream: UpstreamLink,
    private readonly results: ResultQueue,
    cache: ArtifactCache,
    private readonly logger: Logger,
    private readonly taps: RelayTaps = {}
  ) {
    const link = this.link = tapped(upstream, taps)
    const agents = this.agents
    this.stats = { get agents () { return agents.size }, streams: 0, checkins: 0, pushes: 0, authFailures: 0, peersTurnedAway: 0 }
    this.offline = new OfflineBatch(sids => link.send({ t: 'offline', sids }))
    const core = this
    this.ctx = {
      agents,
      cache,
      results,
      logger,
      get relayId () { return link.relayId },
      get intervalSeconds () { return core.intervals.current },
      settingsChanged: seconds => {
        if (this.intervals.change(seconds)) logger.info({ intervalSeconds: seconds }, 'check-in interval changed')
      },
      installersChanged: files => {
        this.installers = new Map(files.map(f => [f.name, f]))
        logger.info({ installers: files.map(f => f.name) }, 'installers from the server')
      },
      update: order => this.onUpdate(order),
      countStream: () => { this.stats.streams++ },
      countAuthFailure: (remote, code) => {
        this.stats.authFailures++
        if (code === 'RG_ERR_AUTH' || code === 'RG_ERR_RATE_LIMIT') this.peerFailures.fail(remote)
      },
      tunnelChunk: taps.tunnelChunk
    }
    taps.attach?.({ fromServer: msg => onServerMessage(this.ctx, msg), toServer: msg => upstream.send(msg) })
  }

  private readonly link: UpstreamLink
  /** Wrong proofs per peer address: a burst of 10, then one every 2 s (failures only: a site behind one NAT address reconnects at full speed). */
  private readonly peerFailures = new FailureLimiter({ burst: 10, perSecond: 0.5, maxKeys: 10_000 })

  // ---- from the listener ----

  /** A new agent connection: a session, or a refusal when full or closing. */
  accept (transport: Transport): AgentSession | null {
    if (this.closed || this.agents.size >= this.opts.maxAgents) {
      const code = this.closed ? 'RG_ERR_GOING_AWAY' : 'RG_ERR_QUEUE_FULL'
      transport.close(ErrorCode[code].close, this.closed ? 'relay shutting down' : 'relay is full')
      return null
    }
    // A peer sending wrong proofs is turned away here, before the server is asked again.
    if (!this.peerFailures.allows(transport.remote)) {
      this.stats.peersTurnedAway++
      transport.close(ErrorCode.RG_ERR_RATE_LIMIT.close, `too many failed authentications from ${transport.remote}; try again in ${this.peerFailures.retryAfter(transport.remote)} s`)
      return null
    }
    const sid = this.agents.allocateSid()
    const s = new AgentSession(sid, transport, this, this.opts, this.logger.child({ sid, remote: transport.remote }))
    this.agents.add(s)
    return s
  }

  // ---- from the server link ----

  /** Linked (again): everyone authenticates again (the server trusts only what it verified) and stored results are replayed. */
  linked (): void {
    this.ctx.settingsChanged(this.link.settings.checkinIntervalSeconds)
    this.pendingAuth.clear()
    for (const s of this.agents.sessions.values()) if (s.introduced) this.beginAuth(s)
    // The server applies each result once; replays of applied ones are acknowledged.
    for (const r of this.results.all()) this.link.send({ t: 'job-result', key: r.key, endpointId: r.endpointId, edgeId: r.edgeId, jobId: r.jobId, attempt: r.attempt, result: r.result })
  }

  linkDown (): void {
    this.offline.clear()
  }

  onMessage (msg: ServerToRelay): void {
    if (this.taps.fromServer === undefined) return onServerMessage(this.ctx, msg)
    for (const m of this.taps.fromServer(msg)) onServerMessage(this.ctx, m)
  }

  onStream (stream: MuxStream): void {
    onServerStream(this.ctx, stream)
  }

  /** Drops agents that did not authenticate in time or stopped checking in (every second). */
  sweep (): void {
    sweep(this.agents, this.intervals, this.opts.authTimeoutMs)
  }

  /** Graceful: agents get a go-away and move to their next relay; otherwise they are dropped. */
  async close (graceful: boolean): Promise<void> {
    this.closed = true
    this.offline.clear()
    const err = new RelaygateError('RG_ERR_GOING_AWAY', 'relay shutting down')
    const all = [...this.agents.sessions.values()]
    await Promise.allSettled(all.map(s => graceful ? s.mux.close(err.closeCode, err.message) : s.mux.destroy(err)))
    for (const s of all) s.mux.transport.terminate()
  }

  // ---- SessionHost: what sessions ask of the relay ----

  get intervalSeconds (): number {
    return this.intervals.current
  }

  flagsOf (endpointId: string): number {
    return this.agents.flagsOf(endpointId)
  }

  beginAuth (s: AgentSession): void {
    s.restartAuth()
    // The server hears of agents that left before of one that arrives: an agent
    // restarting (a self-update) is not taken for a clone of its own old session.
    this.offline.sendNow()
    if (this.link.send({ t: 'auth-begin', sid: s.sid, endpointId: s.endpointId, edgeId: s.edgeId })) return
    if (this.pendingAuth.size >= this.opts.maxPendingAuth) {
      s.fail(new RelaygateError('RG_ERR_UPSTREAM_UNAVAILABLE', 'relay has no link to the server and too many agents wait'))
      return
    }
    this.pendingAuth.add(s)
  }

  sendProof (s: AgentSession, proof: string, agentNonce: string): boolean {
    return this.link.send({ t: 'auth-proof', sid: s.sid, proof, agentNonce })
  }

  forwardUp (s: AgentSession, msg: AgentUp): void {
    this.link.send({ ...msg, sid: s.sid })
  }

  storeResult (s: AgentSession, result: JobResultBody): void {
    const key = ResultQueue.keyOf(result.jobId, s.endpointId, result.attempt)
    const { jobId, attempt } = result
    // On disk first: from then on the result survives a server outage and a relay restart.
    this.results.add({ key, endpointId: s.endpointId, edgeId: s.edgeId, jobId, attempt, result, queuedAt: Date.now() }).then(() => {
      s.send({ t: 'job-result-ack', jobId, attempt })
      this.link.send({ t: 'job-result', key, endpointId: s.endpointId, edgeId: s.edgeId, jobId, attempt, result })
    }, (err: unknown) => {
      // Not taken: the agent keeps the result and sends it again after the delay; the server shows why it waits.
      const coded = toRelaygateError(err)
      const message = coded.message.slice(0, 200)
      s.log.warn({ code: coded.code, message }, 'result not stored; the agent will send it again')
      s.send({ t: 'job-result-nack', jobId, attempt, code: coded.code, message, retryInSeconds: RESULT_RETRY_SECONDS })
      this.link.send({ t: 'result-held', endpointId: s.endpointId, jobId, attempt, code: coded.code, message: `the relay could not store this result (${message}); the agent sends it again` })
    })
  }

  onClosed (s: AgentSession): void {
    this.agents.remove(s)
    this.pendingAuth.delete(s)
    if (s.introduced && this.link.isReady) this.offline.add(s.sid)
  }

  count (what: 'checkins' | 'pushes'): void {
    this.stats[what]++
  }
}

/** The server link as the core sees it: through the toServer tap when one is set. */
function tapped (link: UpstreamLink, taps: RelayTaps): UpstreamLink {
  const toServer = taps.toServer
  if (toServer === undefined) return link
  return {
    get isReady () { return link.isReady },
    get relayId () { return link.relayId },
    get settings () { return link.settings },
    send: msg => {
      let ok = link.isReady
      for (const m of toServer(msg)) ok = link.send(m) && ok
      return ok
    }
  }
}
