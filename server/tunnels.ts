import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { CheckinFlag, RelaygateError } from '../protocol/index.js'
import { deriveCredentialKey, newCredential, sealCredential, verifyTunnelProof } from '../protocol/tunnel-crypto.js'
import { SealedStream, deriveTunnelStreamKey, newStreamNonce } from '../protocol/tunnel-stream.js'
import type { TunnelStreamMeta } from '../protocol/messages.js'
import type { Store, SettingsRef } from './store.js'
import type { RelayHub, AgentRef, AgentMessage } from './hub.js'
import type { SecurityLog } from './security.js'
import { TunnelStreamPool } from './tunnel-stream-pool.js'
import { TunnelHttpAgent } from './tunnel-http-agent.js'

export type TunnelStateName = 'closed' | 'requested' | 'open'


interface Waiter {
  resolve: () => void
  reject: (err: RelaygateError) => void
  timer: NodeJS.Timeout
}

interface Tunnel {
  endpointId: string
  state: 'requested' | 'open'
  tunnelId: string
  credential: string
  /** Key of the tunnel's end-to-end encrypted streams (from the credential). */
  streamKey: Buffer
  /** What offers need of the endpoint (read once, when the tunnel is requested). */
  endpoint: { tunnelKey: Buffer, tunnelTarget: string | null }
  used: boolean
  owner: AgentRef | null
  requestedAt: number
  openedAt: number | null
  waiters: Set<Waiter>
  lastAdminActivity: number
  /** Proxied WebSockets and raw TCP sessions open now. */
  sessions: number
  streams: Set<SealedStream>
  /** Who asked for it (the audit log's tunnel sessions), and the bytes of its streams that ended, each way. */
  by: TunnelRequester | null
  bytesToAgent: number
  bytesFromAgent: number
  keepAliveTimer: NodeJS.Timeout | null
  agent: TunnelHttpAgent | null
  /** Kept-alive streams of proxied HTTP requests (http-splice.ts). */
  pool: TunnelStreamPool | null
  log: Logger
}

/** Who asked for a tunnel: the API token's name and the caller's address. */
export interface TunnelRequester { token: string, source: string | null }

/** A tunnel session opened (an agent took it) or closed (the admin, idle, the agent went away), for the audit log. */
export interface TunnelSessionEvent {
  kind: 'open' | 'close'
  endpointId: string
  tunnelId: string
  by: TunnelRequester | null
  edgeId: string | null
  relayId: string | null
  /** close: plaintext bytes each way and how long it was open. */
  bytesToAgent?: number
  bytesFromAgent?: number
  seconds?: number
  reason?: string
}

export interface TunnelInfo {
  state: TunnelStateName
  tunnelId?: string
  relayId?: string
  edgeId?: string
  requestedAt?: string
  openedAt?: string | null
  streams?: number
}

/**
 * Edge tunnels: raising the flag, one-time credentials sealed per agent, the
 * election among a cluster's agents (first valid use wins), keep-alives while
 * an admin is active, and re-offering when the tunnel drops while wanted.
 */
export class TunnelManager {
  private readonly tunnels = new Map<string, Tunnel>()
  private readonly hub: RelayHub
  private readonly store: Store
  private readonly logger: Logger
  private closed = false
  private readonly stateListeners: Array<(endpointId: string, state: TunnelStateName) => void> = []
  opens = 0
  private readonly openListeners: Array<(seconds: number) => void> = []
  private readonly sessionListeners: Array<(event: TunnelSessionEvent) => void> = []

  /** Requests within this window count as an open admin session (keep-alives are sent). */
  private readonly adminWindowMs: number

  private readonly security: SecurityLog | undefined

  private readonly settings: SettingsRef

  constructor (options: { hub: RelayHub, store: Store, settings: SettingsRef, logger: Logger, adminWindowMs?: number, security?: SecurityLog }) {
    this.settings = options.settings
    this.adminWindowMs = options.adminWindowMs ?? 60_000
    this.security = options.security
    this.hub = options.hub
    this.store = options.store
    this.logger = options.logger
    this.hub.onRelayMessage('tunnel-open', (agent, msg) => this.onOpen(agent, msg))
    this.hub.onRelayMessage('tunnel-closed', (agent, msg) => this.onClosedByAgent(agent, msg))
    this.hub.onRelayMessage('tunnel-need', agent => this.onNeed(agent))
    this.hub.onPresence((agent, online) => online ? this.onAgentOnline(agent) : this.onAgentOffline(agent))
  }

  /** Hears every tunnel state change (requested, open, closed; open -> requested when its agent left). */
  onState (listener: (endpointId: string, state: TunnelStateName) => void): void {
    this.stateListeners.push(listener)
  }

  private changed (endpointId: string, state: TunnelStateName): void {
    for (const listener of this.stateListeners) listener(endpointId, state)
  }

  /** Hears each tunnel opening with the seconds from request to open (for the latency histogram). */
  onOpened (listener: (seconds: number) => void): void {
    this.openListeners.push(listener)
  }

  /** Hears each tunnel session open and close (the audit log). */
  onSession (listener: (event: TunnelSessionEvent) => void): void {
    this.sessionListeners.push(listener)
  }

  /**
   * A session ends: the tunnel closes, or its agent went away (offered again
   * under a new id). Returns its streams still open, taken out of the tunnel
   * (counted here, for the caller to destroy).
   */
  private sessionEnded (t: Tunnel, reason: string): SealedStream[] {
    const open = [...t.streams]
    t.streams.clear()
    if (t.openedAt === null || t.owner === null) return open
    let toAgent = t.bytesToAgent
    let fromAgent = t.bytesFromAgent
    for (const s of open) {
      toAgent += s.bytesSent
      fromAgent += s.bytesReceived
    }
    const event: TunnelSessionEvent = {
      kind: 'close', endpointId: t.endpointId, tunnelId: t.tunnelId, by: t.by, edgeId: t.owner.edgeId, relayId: t.owner.relayId,
      bytesToAgent: toAgent, bytesFromAgent: fromAgent, seconds: Math.round((Date.now() - t.openedAt) / 1000), reason
    }
    t.bytesToAgent = 0
    t.bytesFromAgent = 0
    for (const listener of this.sessionListeners) listener(event)
    return open
  }

  /** Figures for /metrics: tunnels open and streams through them now. */
  counts (): { open: number, requested: number, streams: number } {
    let open = 0
    let streams = 0
    for (const t of this.tunnels.values()) {
      if (t.state === 'open') open++
      streams += t.streams.size
    }
    return { open, requested: this.tunnels.size - open, streams }
  }

  info (endpointId: string): TunnelInfo {
    const t = this.tunnels.get(endpointId)
    if (t === undefined) return { state: 'closed' }
    return {
      state: t.state,
      tunnelId: t.tunnelId,
      relayId: t.owner?.relayId,
      edgeId: t.owner?.edgeId,
      requestedAt: new Date(t.requestedAt).toISOString(),
      openedAt: t.openedAt === null ? null : new Date(t.openedAt).toISOString(),
      streams: t.streams.size
    }
  }

  /** The endpoint's tunnel target, as read when its tunnel was requested (null: none, or no tunnel). */
  tunnelTarget (endpointId: string): string | null {
    return this.tunnels.get(endpointId)?.endpoint.tunnelTarget ?? null
  }

  /** Raises the flag (idempotent) and offers credentials to the endpoint's online agents. */
  async request (endpointId: string, by: TunnelRequester | null = null): Promise<TunnelStateName> {
    if (this.closed) throw new RelaygateError('RG_ERR_CLOSED', 'server is shutting down')
    const endpoint = this.tunnels.get(endpointId)?.endpoint ?? await this.store.getEndpoint(endpointId)
    if (endpoint === undefined) throw new RelaygateError('RG_ERR_NOT_FOUND', `no endpoint ${endpointId}`)
    if (this.closed) throw new RelaygateError('RG_ERR_CLOSED', 'server is shutting down')
    let t = this.tunnels.get(endpointId)
    if (t === undefined) {
      const cred = newCredential()
      t = {
        endpointId,
        state: 'requested',
        tunnelId: cred.tunnelId,
        credential: cred.credential,
        streamKey: deriveTunnelStreamKey(cred.credential, cred.tunnelId),
        endpoint: { tunnelKey: endpoint.tunnelKey, tunnelTarget: endpoint.tunnelTarget },
        used: false,
        owner: null,
        requestedAt: Date.now(),
        openedAt: null,
        waiters: new Set(),
        lastAdminActivity: Date.now(),
        sessions: 0,
        streams: new Set(),
        by,
        bytesToAgent: 0,
        bytesFromAgent: 0,
        keepAliveTimer: null,
        agent: null,
        pool: null,
        log: this.logger.child({ endpointId, tunnelId: cred.tunnelId })
      }
      this.tunnels.set(endpointId, t)
      t.log.info('tunnel requested')
      // Offers first, then the flag: an agent told by the flag already holds its offer.
      for (const agent of this.hub.agentsOf(endpointId)) this.offer(t, agent)
      this.hub.setFlags(endpointId, this.hub.getFlags(endpointId) | CheckinFlag.TUNNEL)
      this.changed(endpointId, 'requested')
    }
    return t.state
  }

  /** Raises the flag if needed and resolves once the tunnel is open. */
  async ensureOpen (endpointId: string, timeoutMs: number, by: TunnelRequester | null = null): Promise<void> {
    await this.request(endpointId, by)
    const t = this.tunnels.get(endpointId)!
    if (t.state === 'open') return
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => { clearTimeout(waiter.timer); t.waiters.delete(waiter); resolve() },
        reject: err => { clearTimeout(waiter.timer); t.waiters.delete(waiter); reject(err) },
        timer: setTimeout(() => waiter.reject(new RelaygateError('RG_ERR_TUNNEL_TIMEOUT', `tunnel to ${endpointId} not open after ${Math.round(timeoutMs / 1000)} s (is an agent online?)`)), timeoutMs)
      }
      t.waiters.add(waiter)
    })
  }

  /** Closes the tunnel and lowers the flag. */
  closeTunnel (endpointId: string, reason = 'closed by the admin'): boolean {
    const t = this.tunnels.get(endpointId)
    if (t === undefined) return false
    if (t.owner !== null && t.owner.online) t.owner.order({ t: 'tunnel-close', tunnelId: t.tunnelId, reason })
    this.finish(t, reason)
    return true
  }

  /** Admin activity (a proxied request): keeps the tunnel from idling out. */
  touch (endpointId: string): void {
    const t = this.tunnels.get(endpointId)
    if (t !== undefined) t.lastAdminActivity = Date.now()
  }

  /** A long-lived admin session (proxied WebSocket, TCP) started; call the returned function when it ends. */
  session (endpointId: string): () => void {
    const t = this.tunnels.get(endpointId)
    if (t === undefined) return () => {}
    t.sessions++
    let done = false
    return () => {
      if (done) return
      done = true
      t.sessions--
      t.lastAdminActivity = Date.now()
    }
  }

  /**
   * Opens a stream through the open tunnel to the agent's target (or an
   * allowed TCP port): plaintext here, encrypted records end to end, so the
   * relay forwards bytes it cannot read or alter.
   */
  openStream (endpointId: string, meta: Pick<TunnelStreamMeta, 'kind' | 'port'>): Duplex {
    const t = this.tunnels.get(endpointId)
    if (t === undefined || t.state !== 'open' || t.owner === null) throw new RelaygateError('RG_ERR_TUNNEL_CLOSED', `no open tunnel to ${endpointId}`)
    const nonce = newStreamNonce()
    const raw = t.owner.openStream({ t: 'tunnel', tunnelId: t.tunnelId, kind: meta.kind, ...(meta.port !== undefined ? { port: meta.port } : {}), nonce })
    const stream = new SealedStream(raw, t.streamKey, nonce, 'server')
    const owner = t.owner
    stream.once('error', err => {
      if ((err as RelaygateError).code !== 'RG_ERR_TUNNEL_TAMPERED') return
      this.security?.record({ code: 'RG_ERR_TUNNEL_TAMPERED', relayId: owner.relayId, endpointId, edgeId: owner.edgeId, kind: 'tunnel-stream', ref: t.tunnelId, message: err.message })
    })
    t.streams.add(stream)
    t.lastAdminActivity = Date.now()
    stream.once('close', () => {
      if (!t.streams.delete(stream)) return
      t.bytesToAgent += stream.bytesSent
      t.bytesFromAgent += stream.bytesReceived
    })
    return stream
  }

  /** The http.Agent for proxying WebSocket upgrades to this endpoint's open tunnel. */
  httpAgent (endpointId: string): TunnelHttpAgent {
    const t = this.tunnels.get(endpointId)
    if (t === undefined || t.state !== 'open') throw new RelaygateError('RG_ERR_TUNNEL_CLOSED', `no open tunnel to ${endpointId}`)
    t.agent ??= new TunnelHttpAgent(() => this.openStream(endpointId, { kind: 'http' }))
    return t.agent
  }

  /** Kept-alive tunnel streams for proxying HTTP to this endpoint's open tunnel. */
  streamPool (endpointId: string): TunnelStreamPool {
    const t = this.tunnels.get(endpointId)
    if (t === undefined || t.state !== 'open') throw new RelaygateError('RG_ERR_TUNNEL_CLOSED', `no open tunnel to ${endpointId}`)
    t.pool ??= new TunnelStreamPool(() => this.openStream(endpointId, { kind: 'http' }))
    return t.pool
  }

  /** Closes every tunnel; the manager takes no more requests. */
  async close (): Promise<void> {
    this.closed = true
    for (const t of [...this.tunnels.values()]) this.finish(t, 'server shutting down')
  }

  private offer (t: Tunnel, agent: AgentRef): void {
    const { endpoint } = t
    const settings = this.settings.current
    const key = deriveCredentialKey(endpoint.tunnelKey, agent.edgeId)
    const blob = sealCredential(key, t.endpointId, agent.edgeId, { tunnelId: t.tunnelId, credential: t.credential })
    agent.order({
      t: 'tunnel-offer',
      tunnelId: t.tunnelId,
      blob,
      target: endpoint.tunnelTarget,
      idleTimeoutSeconds: settings.tunnelIdleTimeoutSeconds
    })
  }

  private async onOpen (agent: AgentRef, msg: AgentMessage<'tunnel-open'>): Promise<void> {
    const tunnelId = msg.tunnelId
    const t = this.tunnels.get(agent.endpointId)
    const refuse = (code: 'RG_ERR_CREDENTIAL_USED' | 'RG_ERR_AUTH' | 'RG_ERR_INTERNAL', message: string): void => {
      this.logger.info({ endpointId: agent.endpointId, edgeId: agent.edgeId, code }, 'tunnel open refused')
      agent.order({ t: 'tunnel-result', tunnelId, ok: false, code, message })
    }
    if (t === undefined || t.tunnelId !== tunnelId || t.used) return refuse('RG_ERR_CREDENTIAL_USED', 'these credentials were used or retired')
    const input = { tunnelId, endpointId: agent.endpointId, edgeId: agent.edgeId, relayId: agent.relayId }
    if (!verifyTunnelProof(t.credential, input, msg.proof)) return refuse('RG_ERR_AUTH', 'wrong tunnel proof')
    // First valid use wins; the credential is spent, here and in the store (whichever server process hears it).
    t.used = true
    let first: boolean
    try {
      first = await this.store.spendCredential(tunnelId, Date.now())
    } catch (err) {
      t.used = false
      t.log.warn({ err: (err as Error).message }, 'tunnel credential not recorded as spent')
      return refuse('RG_ERR_INTERNAL', 'the server could not record the tunnel credential; try again')
    }
    if (!first || this.tunnels.get(agent.endpointId) !== t || t.tunnelId !== tunnelId) return refuse('RG_ERR_CREDENTIAL_USED', 'these credentials were used or retired')
    t.owner = agent
    t.state = 'open'
    t.openedAt = Date.now()
    this.opens++
    t.log.info({ edgeId: agent.edgeId, relayId: agent.relayId, ms: t.openedAt - t.requestedAt }, 'tunnel open')
    agent.order({ t: 'tunnel-result', tunnelId, ok: true })
    this.startKeepAlive(t)
    this.changed(t.endpointId, 'open')
    for (const listener of this.openListeners) listener((t.openedAt - t.requestedAt) / 1000)
    for (const listener of this.sessionListeners) listener({ kind: 'open', endpointId: t.endpointId, tunnelId, by: t.by, edgeId: agent.edgeId, relayId: agent.relayId })
    for (const w of [...t.waiters]) w.resolve()
  }

  private onClosedByAgent (agent: AgentRef, msg: AgentMessage<'tunnel-closed'>): void {
    const t = this.tunnels.get(agent.endpointId)
    if (t === undefined || t.owner !== agent || t.tunnelId !== msg.tunnelId) return
    this.finish(t, msg.reason === '' ? 'closed by the agent' : msg.reason)
  }

  private onNeed (agent: AgentRef): void {
    const t = this.tunnels.get(agent.endpointId)
    if (t !== undefined && t.state === 'requested') this.offer(t, agent)
  }

  private onAgentOnline (agent: AgentRef): void {
    const t = this.tunnels.get(agent.endpointId)
    if (t !== undefined && t.state === 'requested') this.offer(t, agent)
  }

  private onAgentOffline (agent: AgentRef): void {
    const t = this.tunnels.get(agent.endpointId)
    if (t === undefined || t.owner !== agent) return
    // The tunnel dropped while wanted: new credentials, offered to whoever is online.
    t.log.warn({ edgeId: agent.edgeId }, 'tunnel lost with its agent; offering it again')
    const open = this.sessionEnded(t, 'its agent went away')
    this.stopKeepAlive(t)
    t.agent?.destroy()
    t.agent = null
    t.pool?.destroy()
    t.pool = null
    for (const s of open) s.destroy(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the agent serving the tunnel went away'))
    const cred = newCredential()
    t.tunnelId = cred.tunnelId
    t.credential = cred.credential
    t.streamKey = deriveTunnelStreamKey(cred.credential, cred.tunnelId)
    t.used = false
    t.owner = null
    t.state = 'requested'
    t.openedAt = null
    t.log = this.logger.child({ endpointId: t.endpointId, tunnelId: t.tunnelId })
    for (const other of this.hub.agentsOf(t.endpointId)) this.offer(t, other)
    this.changed(t.endpointId, 'requested')
  }

  private startKeepAlive (t: Tunnel): void {
    this.stopKeepAlive(t)
    const everyMs = this.settings.current.keepAliveSeconds * 1000
    t.keepAliveTimer = setInterval(() => {
      const active = t.sessions > 0 || t.streams.size > 0 || Date.now() - t.lastAdminActivity < this.adminWindowMs
      if (active && t.owner !== null && t.owner.online) t.owner.order({ t: 'tunnel-keepalive', tunnelId: t.tunnelId })
    }, everyMs)
    t.keepAliveTimer.unref()
  }

  private stopKeepAlive (t: Tunnel): void {
    if (t.keepAliveTimer !== null) clearInterval(t.keepAliveTimer)
    t.keepAliveTimer = null
  }

  /** Endpoints whose tunnel is requested here and has no agent to offer it to (several replicas: it may be online elsewhere). */
  waitingForAgents (): string[] {
    return [...this.tunnels.values()].filter(t => t.owner === null && this.hub.agentsOf(t.endpointId).length === 0).map(t => t.endpointId)
  }

  /**
   * Several replicas: the endpoint's agent came online at another replica,
   * which took over a tunnel requested here and not yet open. Requests
   * waiting here are told to send again (they are forwarded there).
   */
  handOver (endpointId: string): void {
    const t = this.tunnels.get(endpointId)
    if (t === undefined || t.owner !== null) return
    this.finish(t, 'its agent came online at another replica, which holds the tunnel now', new RelaygateError('RG_ERR_TUNNEL_MOVED', `the agents of ${endpointId} came online at another server replica; send the request again`))
  }

  private finish (t: Tunnel, reason: string, error?: RelaygateError): void {
    if (this.tunnels.get(t.endpointId) !== t) return
    this.tunnels.delete(t.endpointId)
    const open = this.sessionEnded(t, reason)
    this.stopKeepAlive(t)
    t.agent?.destroy()
    t.agent = null
    t.pool?.destroy()
    t.pool = null
    const err = error ?? new RelaygateError('RG_ERR_TUNNEL_CLOSED', `tunnel closed: ${reason}`)
    for (const s of open) s.destroy(err)
    for (const w of [...t.waiters]) w.reject(err)
    if (!this.closed) this.hub.setFlags(t.endpointId, this.hub.getFlags(t.endpointId) & ~CheckinFlag.TUNNEL)
    t.log.info({ reason }, 'tunnel closed')
    this.changed(t.endpointId, 'closed')
  }
}
