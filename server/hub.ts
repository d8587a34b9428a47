import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import type { Logger } from 'pino'
import { Mux, DEFAULT_MAX_PAYLOAD, HEADER_SIZE, RelaygateError, ErrorCode, toRelaygateError, type Frame, type MuxStream } from '../protocol/index.js'
import type { InstallerFile } from '../protocol/relay-messages.js'
import { atLeastVersion } from '../common/version.js'

/** The first version whose relays understand the 'installers' message. */
const INSTALLERS_SINCE = '0.2.0'
import { WsTransport } from '../protocol/ws-transport.js'
import { hashToken } from '../protocol/auth.js'
import {
  Hellos, helloFrame, readHello, readControl, parseStreamMeta, RelayToServer, RelayStreams, deriveE2eKeys, verifyReportMac,
  type Settings, type ServerToRelay, type AgentUpWithSid, type RelayStreamMeta
} from '../protocol/messages.js'
import type { SecurityLog } from './security.js'
import type { AgentRef } from './agent-ref.js'
import type { Store, SettingsRef } from './store.js'
import PQueue from 'p-queue'
import { RelayLink, type Session } from './relay-link.js'
import { AgentSessions, type PresenceListener } from './agent-sessions.js'
import type { RelayHello } from '../protocol/handshake.js'

export interface HubOptions {
  store: Store
  settings: SettingsRef
  logger: Logger
  version: string
  /** Ping the relay after this much silence (ms). */
  keepAliveMs?: number
  /** Drop a relay link silent for this long (ms). */
  livenessTimeoutMs?: number
  /** A relay must say hello within this time (ms). */
  helloTimeoutMs?: number
  /** Agent sessions one relay may hold. */
  maxSessionsPerRelay?: number
  /** Where tampering caught end to end is recorded. */
  security: SecurityLog
  /** Wrong-secret proofs allowed per endpoint: a burst, then this many per second (over every relay). */
  authFailureBurst?: number
  authFailuresPerSecond?: number
  /** Several replicas: records that this replica holds the relay's link (before the relay hears it is linked); its fence. */
  onLinked?: (relayId: string) => Promise<number | null>
  /** The link of that fence closed (after its agents went offline). */
  onUnlinked?: (relayId: string, fence: number | null) => void
}


export type { AgentRef } from './agent-ref.js'

/** An agent's message passed up by its relay (kind K). */
export type AgentMessage<K extends AgentUpWithSid['t']> = Extract<AgentUpWithSid, { t: K }>
export type RelayMessageHandler<K extends AgentUpWithSid['t']> = (agent: AgentRef, msg: AgentMessage<K>) => Promise<void> | void
export type { PresenceListener } from './agent-sessions.js'
/** A stream a relay opened (an artifact fill), with its validated metadata. */
export type RelayStreamHandler = (relayId: string, stream: MuxStream, meta: RelayStreamMeta) => void
/** Relay-level messages (not about one agent): its figures, a durable job result. */
export type RelayLevelKind = 'stats' | 'job-result' | 'result-held' | 'relay-update-progress'
export type RelayLevelMessage<K extends RelayLevelKind> = Extract<RelayToServer, { t: K }>
export type RelayLevelHandler<K extends RelayLevelKind> = (relayId: string, msg: RelayLevelMessage<K>, reply: (message: ServerToRelay) => void) => Promise<void> | void


/**
 * Accepts relay links on `/relay` and keeps, in memory, which agents are
 * online through which relay. Work here is proportional to changes: an agent
 * that checks in every few seconds costs nothing once it is authenticated.
 */
export class RelayHub {
  private readonly opts: Required<Omit<HubOptions, 'onLinked' | 'onUnlinked'>> & Pick<HubOptions, 'onLinked' | 'onUnlinked'>
  private readonly wss: WebSocketServer
  private readonly links = new Map<string, RelayLink>()
  /** The agents behind the relays: authentication and presence. */
  private readonly agents: AgentSessions
  private readonly handlers = new Map<string, RelayMessageHandler<never>>()
  private readonly linkListeners: Array<(relayId: string) => void> = []
  private readonly streamHandlers = new Map<string, RelayStreamHandler>()
  private readonly relayHandlers = new Map<string, RelayLevelHandler<never>>()
  private readonly flags = new Map<string, number>()
  private readonly pending = new Set<Mux>()
  private closed = false
  /** Bytes of relay links that have closed (for monotonic metrics). */
  private readonly closedBytes = { in: 0, out: 0 }
  /**
   * Relay messages handled at once, over all links. A reconnect storm
   * (15,000 agents authenticating) queues here, not in the database pool,
   * so API requests still find a connection.
   */
  private readonly handling = new PQueue({ concurrency: 8 })

  constructor (options: HubOptions) {
    this.opts = {
      keepAliveMs: 15_000,
      livenessTimeoutMs: 45_000,
      helloTimeoutMs: 10_000,
      maxSessionsPerRelay: 50_000,
      authFailureBurst: 20,
      authFailuresPerSecond: 0.5,
      ...options
    }
    this.agents = new AgentSessions({
      store: this.opts.store,
      settings: this.opts.settings,
      logger: this.opts.logger,
      maxSessionsPerRelay: this.opts.maxSessionsPerRelay,
      authFailureBurst: this.opts.authFailureBurst,
      authFailuresPerSecond: this.opts.authFailuresPerSecond,
      flagsOf: endpointId => this.getFlags(endpointId),
      isLinked: link => this.links.get(link.relayId) === link
    })
    this.wss = new WebSocketServer({ noServer: true, maxPayload: DEFAULT_MAX_PAYLOAD + HEADER_SIZE, perMessageDeflate: false })
  }

  handleUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closed) {
      socket.destroy()
      return
    }
    this.wss.handleUpgrade(req, socket, head, ws => this.accept(ws, `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`))
  }

  isOnline (endpointId: string): boolean {
    return this.agents.isOnline(endpointId)
  }

  /** Relay ids currently serving an endpoint. */
  relaysOf (endpointId: string): string[] {
    return this.agents.relaysOf(endpointId)
  }

  /** Endpoints with an agent online through a relay linked here. */
  onlineEndpoints (): string[] {
    return this.agents.onlineEndpoints()
  }

  /** The agents online for an endpoint (several for a cluster). */
  agentsOf (endpointId: string): AgentRef[] {
    return this.agents.agentsOf(endpointId)
  }

  /** Agent authentications relays have asked for (auth-begin messages), for metrics. */
  get authBegins (): number {
    return this.agents.authBegins
  }

  /** Handles agent messages of kind `t` passed up by relays (they carry the agent's sid). */
  onRelayMessage<K extends AgentUpWithSid['t']> (t: K, handler: RelayMessageHandler<K>): void {
    this.handlers.set(t, handler as unknown as RelayMessageHandler<never>)
  }

  /** Handles streams relays open with metadata `{t, ...}`. */
  onRelayStream (t: RelayStreamMeta['t'], handler: RelayStreamHandler): void {
    this.streamHandlers.set(t, handler)
  }

  /** Handles relay-level messages of kind `t` (no sid). */
  onRelayLevel<K extends RelayLevelKind> (t: K, handler: RelayLevelHandler<K>): void {
    this.relayHandlers.set(t, handler as unknown as RelayLevelHandler<never>)
  }

  /** Sends a relay-level message to one relay, or to all with `relayId` undefined. Returns how many got it. */
  sendToRelays (message: ServerToRelay, relayId?: string): number {
    let n = 0
    for (const link of this.links.values()) {
      if (relayId !== undefined && link.relayId !== relayId) continue
      link.send(message)
      n++
    }
    return n
  }

  onPresence (listener: PresenceListener): void {
    this.agents.onPresence(listener)
  }

  /** The version of a relay linked here, or null when it is not. */
  relayVersion (relayId: string): string | null {
    return this.links.get(relayId)?.version ?? null
  }

  /** Relays linked here (ids). */
  linkedRelays (): string[] {
    return [...this.links.keys()]
  }

  /** Called with a relay's id each time it links here. */
  onRelayLinked (listener: (relayId: string) => void): void {
    this.linkListeners.push(listener)
  }

  relayStatus (relayId: string): { connected: boolean, agents: number, connectedAt: number | null } {
    const link = this.links.get(relayId)
    if (link === undefined) return { connected: false, agents: 0, connectedAt: null }
    let agents = 0
    for (const s of link.sessions.values()) if (s.online) agents++
    return { connected: true, agents, connectedAt: link.connectedAt }
  }

  /** Figures for /metrics: linked relays, agents online, bytes over relay links since start. */
  linkStats (): { relays: number, agents: number, bytesIn: number, bytesOut: number } {
    let agents = 0
    let bytesIn = this.closedBytes.in
    let bytesOut = this.closedBytes.out
    for (const link of this.links.values()) {
      for (const s of link.sessions.values()) if (s.online) agents++
      bytesIn += link.mux.bytesIn
      bytesOut += link.mux.bytesOut
    }
    return { relays: this.links.size, agents, bytesIn, bytesOut }
  }

  getFlags (endpointId: string): number {
    return this.flags.get(endpointId) ?? 0
  }

  /** Sets an endpoint's check-in flags; relays serving it get the delta at once. */
  setFlags (endpointId: string, value: number): void {
    if (value === 0) this.flags.delete(endpointId)
    else this.flags.set(endpointId, value)
    for (const relayId of this.relaysOf(endpointId)) {
      this.links.get(relayId)?.send({ t: 'flags', set: [[endpointId, value]] })
    }
  }

  /** The one-file executables relays serve at /install/ (issue 16): every link gets the whole list now and on linking. */
  setInstallers (files: InstallerFile[]): void {
    this.installers = files
    for (const link of this.links.values()) this.sendInstallers(link)
  }

  /** Only to relays of 0.2.0 or later: an older relay closes its link on a message it does not know. */
  private sendInstallers (link: RelayLink): void {
    if (atLeastVersion(link.version, INSTALLERS_SINCE)) link.send({ t: 'installers', files: this.installers })
  }

  private installers: InstallerFile[] = []

  settingsChanged (settings: Settings): void {
    for (const link of this.links.values()) link.send({ t: 'settings', settings })
    for (const ref of this.agents.online()) ref.order({ t: 'agent-settings', snapshotIntervalSeconds: settings.snapshotIntervalSeconds })
  }

  /** True when a stored report (a job result replayed by a relay) carries the MAC of that agent of the endpoint. */
  async verifyStoredReport (endpointId: string, edgeId: string, report: { t: string, mac?: unknown }): Promise<boolean> {
    const endpoint = await this.opts.store.getEndpoint(endpointId)
    if (endpoint === undefined) return false
    return verifyReportMac(deriveE2eKeys(endpoint.tunnelKey, edgeId), { endpointId, edgeId }, report)
  }

  /** Disconnects and refuses an endpoint's agents (after deletion). */
  kickEndpoint (endpointId: string, code: 'RG_ERR_ENDPOINT_DELETED' | 'RG_ERR_ENDPOINT_UNKNOWN' | 'RG_ERR_AUTH', message: string): void {
    this.flags.delete(endpointId)
    // The agents hear it from the server, authenticated: a relay's close code alone does not stop an agent that was online.
    for (const ref of this.agentsOf(endpointId)) ref.order({ t: 'stop', code, message })
    for (const link of this.links.values()) {
      link.send({ t: 'kick', endpointId, code, message })
      for (const s of [...link.sessions.values()]) {
        if (s.endpointId === endpointId) this.agents.drop(link, s)
      }
    }
  }

  /** Drops a relay's link (its token was revoked). */
  disconnectRelay (relayId: string, err: RelaygateError): void {
    const link = this.links.get(relayId)
    if (link !== undefined) void link.mux.destroy(err)
  }

  /** Graceful: relays get a go-away and their links close; `graceful: false` drops them at once. */
  async close (graceful = true): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.agents.shuttingDown()
    const goingAway = new RelaygateError('RG_ERR_GOING_AWAY', 'server shutting down')
    const all = [...this.links.values()].map(l => graceful ? l.mux.close(goingAway.closeCode, goingAway.message) : l.mux.destroy(goingAway))
    for (const mux of this.pending) all.push(mux.destroy(goingAway))
    await Promise.allSettled(all)
    for (const client of this.wss.clients) client.terminate()
    await new Promise<void>(resolve => this.wss.close(() => resolve()))
    await this.agents.close()
  }

  private accept (ws: WebSocket, remote: string): void {
    const log = this.opts.logger.child({ relayRemote: remote })
    let link: RelayLink | null = null
    /** Messages that came while the hello was being checked (null before the hello and once linked). */
    let early: Frame[] | null = null
    let gone = false
    const mux: Mux = new Mux(new WsTransport(ws, remote), {
      role: 'listener',
      maxPayload: DEFAULT_MAX_PAYLOAD,
      keepAliveMs: this.opts.keepAliveMs,
      livenessTimeoutMs: this.opts.livenessTimeoutMs,
      logger: log,
      maxStreams: 1024,
      // Tunnel downloads (and artifact fills) across a WAN start with a 4 MiB window instead of ramping up from 512 KiB for
      // three round trips; it comes out of the link's 64 MiB budget and goes back when unused (window-tuning.ts).
      openWindowBoost: 3.5 * 1024 * 1024,
      onStream: stream => {
        if (link === null) {
          stream.destroy(new RelaygateError('RG_ERR_STREAM_REFUSED', 'hello first'))
          return
        }
        // Bad metadata throws: the mux closes the link with the protocol-error code.
        const meta = parseStreamMeta(stream, RelayStreams)
        const handler = this.streamHandlers.get(meta.t)
        if (handler === undefined) stream.destroy(new RelaygateError('RG_ERR_STREAM_REFUSED', `no streams of kind ${meta.t}`))
        else handler(link.relayId, stream, meta)
      },
      // A throw (bad hello, malformed or unknown message) closes the link with its code: the mux catches it.
      onFrame: frame => {
        if (this.closed) return
        if (link !== null) return this.onControl(link, frame)
        if (early !== null) {
          if (early.length >= 1000) throw new RelaygateError('RG_ERR_PROTOCOL', 'too many messages before the hello was answered')
          early.push(frame)
          return
        }
        const hello = readHello(frame, Hellos.fromRelay)
        early = []
        this.onHello(mux, hello, log).then(linked => {
          if (gone || this.closed) {
            // Closed between the hello and this: onClose did not know the link yet.
            this.onLinkClosed(linked, ErrorCode.RG_ERR_GOING_AWAY.close, 'closed during its hello')
            return
          }
          link = linked
          for (const f of early ?? []) this.onControl(linked, f)
          early = null
        }).catch(err => { void mux.destroy(toRelaygateError(err)) })
      },
      onClose: ({ code, reason }) => {
        gone = true
        clearTimeout(helloTimer)
        this.pending.delete(mux)
        if (link !== null) this.onLinkClosed(link, code, reason)
      }
    })
    this.pending.add(mux)
    const helloTimer = setTimeout(() => {
      if (link === null) void mux.destroy(new RelaygateError('RG_ERR_PROTOCOL', 'no hello in time'))
    }, this.opts.helloTimeoutMs)
    helloTimer.unref()
  }

  private async onHello (mux: Mux, hello: RelayHello, log: Logger): Promise<RelayLink> {
    const record = await this.opts.store.findRelayByTokenHash(hashToken(hello.token))
    if (record === undefined || record.revokedAt !== null) {
      throw new RelaygateError('RG_ERR_RELAY_REVOKED', 'relay token unknown or revoked')
    }
    // Written before the relay hears it is linked: a join token made after
    // that names the relay's addresses.
    await this.opts.store.updateRelay(record.id, {
      lastSeen: Date.now(),
      version: hello.version,
      wsUrl: hello.wsUrl ?? null,
      wssUrl: hello.wssUrl ?? null,
      fingerprint: hello.fingerprint ?? null
    }).catch((err: Error) => log.warn({ relayId: record.id, err: err.message }, 'relay record not updated'))
    if (this.closed || !this.pending.has(mux)) throw new RelaygateError('RG_ERR_GOING_AWAY', 'the link closed during its hello')
    const fence = await this.opts.onLinked?.(record.id) ?? null
    if (this.closed || !this.pending.has(mux)) {
      this.opts.onUnlinked?.(record.id, fence)
      throw new RelaygateError('RG_ERR_GOING_AWAY', 'the link closed during its hello')
    }
    const previous = this.links.get(record.id)
    if (previous !== undefined) {
      previous.log.info('relay linked again; dropping the older link')
      void previous.mux.destroy(new RelaygateError('RG_ERR_REPLACED'))
      this.onLinkClosed(previous, ErrorCode.RG_ERR_REPLACED.close, 'replaced')
    }
    const link = new RelayLink(record.id, mux, log.child({ relayId: record.id }), this.handling)
    link.fence = fence
    link.version = hello.version
    this.pending.delete(mux)
    this.links.set(record.id, link)
    mux.send(helloFrame({ role: 'server', relayId: record.id, settings: this.opts.settings.current, version: this.opts.version }))
    if (this.installers.length > 0) this.sendInstallers(link)
    link.log.info({ wsUrl: hello.wsUrl, wssUrl: hello.wssUrl }, 'relay linked')
    for (const listener of this.linkListeners) listener(record.id)
    return link
  }

  /**
   * One validated message from a relay: one call per kind, queued behind
   * the earlier messages about the same agent (handlers wait for the store).
   */
  private onControl (link: RelayLink, frame: Frame): void {
    const msg = readControl(frame, RelayToServer)
    switch (msg.t) {
      case 'auth-begin':
      case 'auth-proof': {
        const refuse = (err: RelaygateError): void => {
          link.sessions.delete(msg.sid)
          link.send({ t: 'auth-result', sid: msg.sid, ok: false, code: err.code, message: err.message })
        }
        if (msg.t === 'auth-begin') return link.enqueue(msg.sid, () => this.agents.begin(link, msg.sid, msg.endpointId, msg.edgeId), refuse)
        return link.enqueue(msg.sid, () => this.agents.prove(link, msg.sid, msg.proof, msg.agentNonce), refuse)
      }
      case 'offline':
        // Each after what is queued for that agent; presence is written in batches (a site going dark costs one commit).
        for (const sid of msg.sids) link.enqueue(sid, async () => this.onOffline(link, sid))
        return
      case 'stats':
      case 'job-result':
      case 'result-held':
      case 'relay-update-progress': return link.enqueue(0, () => this.onRelayLevelMessage(link, msg))
      default: return link.enqueue(msg.sid, () => this.onAgentMessage(link, msg))
    }
  }

  private onOffline (link: RelayLink, sid: number): void {
    const s = link.sessions.get(sid)
    if (s !== undefined) this.agents.drop(link, s)
  }

  private async onRelayLevelMessage (link: RelayLink, msg: RelayLevelMessage<RelayLevelKind>): Promise<void> {
    const handler = this.relayHandlers.get(msg.t) as unknown as RelayLevelHandler<RelayLevelKind> | undefined
    if (handler === undefined) throw new RelaygateError('RG_ERR_PROTOCOL', `no handler for ${msg.t}`)
    await handler(link.relayId, msg, reply => link.send(reply))
  }

  private async onAgentMessage (link: RelayLink, msg: AgentUpWithSid): Promise<void> {
    const handler = this.handlers.get(msg.t) as unknown as RelayMessageHandler<AgentUpWithSid['t']> | undefined
    if (handler === undefined) throw new RelaygateError('RG_ERR_PROTOCOL', `no handler for ${msg.t}`)
    // A relay speaks only for agents that authenticated through it.
    const session = link.sessions.get(msg.sid)
    if (session === undefined || !session.online) {
      link.log.debug({ t: msg.t, sid: msg.sid }, 'message about an agent not online through this relay: ignored')
      return
    }
    const ref = (session as Session & { ref: AgentRef }).ref
    if (!ref.verifies(msg)) {
      await this.opts.security.record({
        code: 'RG_ERR_REPORT_FORGED', relayId: link.relayId, endpointId: ref.endpointId, edgeId: ref.edgeId, kind: msg.t,
        ref: 'jobId' in msg ? msg.jobId : ('tunnelId' in msg ? msg.tunnelId : ''),
        message: `a ${msg.t} report does not verify end to end: dropped`
      })
      return
    }
    await handler(ref, msg)
  }

  private onLinkClosed (link: RelayLink, code: number, reason: string): void {
    if (this.links.get(link.relayId) === link) {
      this.links.delete(link.relayId)
      this.closedBytes.in += link.mux.bytesIn
      this.closedBytes.out += link.mux.bytesOut
    }
    for (const s of [...link.sessions.values()]) this.agents.drop(link, s)
    this.opts.onUnlinked?.(link.relayId, link.fence)
    if (!this.closed) {
      this.opts.store.updateRelay(link.relayId, { lastSeen: Date.now() })
        .catch((err: Error) => link.log.warn({ err: err.message }, 'relay record not updated'))
    }
    link.log.info({ code, reason }, 'relay link closed')
  }
}
