import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import { WebSocketServer, type WebSocket } from 'ws'
import type { Logger } from 'pino'
import {
  Mux, DEFAULT_MAX_PAYLOAD, HEADER_SIZE, RelaygateError, toRelaygateError, type Frame, type MuxStream
} from '../protocol/index.js'
import { Hellos, helloFrame, readHello, encodeStreamMeta, parseStreamMeta, PeerStreams, type PeerStreamMeta } from '../protocol/messages.js'
import { PEER_EXPORTER_LABEL, PEER_EXPORTER_LENGTH, PEER_EXPORTER_CONTEXT, peerProof, verifyPeerProof } from '../protocol/peer-auth.js'
import { WsTransport } from '../protocol/ws-transport.js'
import { dialWebSocket, toWsUrl } from '../common/dial.js'
import { newId } from './ids.js'
import type { PgStore } from './pg-store.js'
import type { ReplicaRecord, PresenceChange, LivePresence, RelayLocation } from './cluster-store.js'
import { WriteBehind } from './write-behind.js'
import type { EventTopic } from './events.js'
import type { TunnelInfo } from './tunnels.js'

/**
 * One server replica among several on one PostgreSQL (`--cluster-secret-file`).
 *
 * - Registry: each replica registers (id, peer URL, certificate fingerprint,
 *   version) with a lease it renews every RENEW_MS; a lapsed lease is dead.
 * - Changes another replica must act on travel as NOTIFY on one channel;
 *   the replica holding the concerned relay's link pushes the delta down it.
 * - Peer links: one multiplexed WebSocket between two replicas, over TLS
 *   pinned to the registry's fingerprint, opened only toward peer URLs from
 *   the registry, each side proving the cluster secret bound to the TLS
 *   session (protocol/peer-auth.ts). Streams on it carry an admin's HTTP
 *   connection one hop to the replica that holds the endpoint's relay, and
 *   artifact blobs.
 * - Presence: which agents are online through which relay link, written
 *   behind under the link's fence (cluster-store.ts).
 */
export type ClusterMessage =
  | { kind: 'settings' }
  | { kind: 'endpoint-deleted', endpointId: string }
  | { kind: 'endpoint-rekeyed', endpointId: string }
  | { kind: 'relay-revoked', relayId: string }
  | { kind: 'job', jobId: string }
  | { kind: 'changed', topic: EventTopic }
  | { kind: 'admin-tokens' }
  | { kind: 'artifact-deleted', sha256: string }
  | { kind: 'tunnel-wanted', endpointId: string }
  | { kind: 'prestage', sha256: string, relays: string[] }
  | { kind: 'tunnel-taken', endpointId: string }

type Kind = ClusterMessage['kind']
type Envelope = ClusterMessage & { from: string }

const CHANNEL = 'relaygate'
/** A lease lasts LEASE_MS and is renewed every RENEW_MS: two renewals may fail before siblings count the replica dead. */
export const LEASE_MS = 6000
const RENEW_MS = 2000
/** Presence rows of links that are gone are swept this often (by every replica; cheap and idempotent). */
const SWEEP_MS = 60_000
/** A dashboard topic is announced at most once per this (a reconnect storm is 15,000 presence changes). */
const CHANGED_COALESCE_MS = 250
/** A peer's hello must arrive within this. */
const HELLO_TIMEOUT_MS = 10_000

export interface ClusterOptions {
  store: PgStore
  /** The cluster secret (from --cluster-secret-file or RELAYGATE_CLUSTER_SECRET). */
  secret: Buffer
  version: string
  logger: Logger
  leaseMs?: number
  renewMs?: number
  /** Liveness of peer links. */
  keepAliveMs?: number
}

export type PeerStreamHandler = (meta: PeerStreamMeta, stream: MuxStream, fromReplica: string) => void

interface PeerLink { replicaId: string, mux: Mux }

export class Cluster {
  readonly replicaId = newId('s')
  readonly store: PgStore
  peerUrl = ''
  fingerprint = ''
  private readonly opts: Required<Omit<ClusterOptions, 'store'>>
  private readonly log: Logger
  private readonly handlers = new Map<Kind, Array<(msg: never) => void>>()
  private readonly resyncs: Array<() => void> = []
  private readonly links = new Map<string, PeerLink>()
  private readonly dialing = new Map<string, Promise<PeerLink>>()
  private readonly pendingMuxes = new Set<Mux>()
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: DEFAULT_MAX_PAYLOAD + HEADER_SIZE, perMessageDeflate: false })
  private readonly fences = new Map<string, number>()
  private readonly presenceWrites: WriteBehind<PresenceChange>
  private readonly tunnelWrites: WriteBehind<{ endpointId: string, info: TunnelInfo | null }>
  private readonly figureWrites: WriteBehind<{ relayId: string, fence: number, figures: object }>
  private readonly changedTopics = new Set<EventTopic>()
  private changedTimer: NodeJS.Timeout | null = null
  private renewTimer: NodeJS.Timeout | null = null
  private sweepTimer: NodeJS.Timeout | null = null
  private unlisten: (() => Promise<void>) | null = null
  private streamHandler: PeerStreamHandler = (_meta, stream) => stream.destroy(new RelaygateError('RG_ERR_STREAM_REFUSED', 'not ready'))
  private closed = false
  private leaseUntil = 0

  constructor (options: ClusterOptions) {
    this.store = options.store
    this.opts = { leaseMs: LEASE_MS, renewMs: RENEW_MS, keepAliveMs: 15_000, ...options }
    this.log = options.logger.child({ replicaId: this.replicaId })
    this.presenceWrites = new WriteBehind<PresenceChange>({
      what: 'cluster presence',
      logger: this.log,
      key: c => `${c.endpointId}\n${c.edgeId}\n${c.relayId}`,
      merge: (prev, next) => next.fence >= prev.fence ? next : prev,
      write: async batch => await this.store.cluster.writePresence(batch)
    })
    // The latest figures of each relay, and the latest state of each tunnel (requested, open, closed may come within one flush).
    this.figureWrites = this.latestWriter('relay figures', f => f.relayId, async f => await this.store.cluster.setRelayFigures(f.relayId, f.fence, f.figures))
    this.tunnelWrites = this.latestWriter('cluster tunnels', t => t.endpointId, async t => await this.store.cluster.setTunnel(t.endpointId, this.replicaId, t.info, Date.now()))
  }

  /** Writes behind where only the latest value per key counts, one row at a time. */
  private latestWriter<T> (what: string, key: (item: T) => string, writeOne: (item: T) => Promise<void>): WriteBehind<T> {
    return new WriteBehind<T>({
      what,
      logger: this.log,
      key,
      merge: (_prev, next) => next,
      write: async batch => { for (const item of batch) await writeOne(item) }
    })
  }

  /** Registers this replica (once its listeners are up: the peer URL and fingerprint are known) and starts listening. */
  async start (peerUrl: string, fingerprint: string): Promise<void> {
    this.peerUrl = peerUrl
    this.fingerprint = fingerprint
    await this.register()
    this.unlisten = await this.store.listen(CHANNEL, payload => this.onNotification(payload), () => {
      this.log.info('notifications resumed; reading the state again')
      for (const fn of this.resyncs) fn()
    })
    this.renewTimer = setInterval(() => { void this.renew() }, this.opts.renewMs)
    this.renewTimer.unref()
    this.sweepTimer = setInterval(() => {
      this.store.cluster.sweepPresence().catch((err: Error) => this.log.warn({ err: err.message }, 'presence not swept'))
    }, SWEEP_MS)
    this.sweepTimer.unref()
    this.log.info({ peerUrl, fingerprint }, 'replica registered')
  }

  private async register (): Promise<void> {
    this.leaseUntil = Date.now() + this.opts.leaseMs
    await this.store.cluster.registerReplica({
      id: this.replicaId, peerUrl: this.peerUrl, fingerprint: this.fingerprint, version: this.opts.version, startedAt: Date.now(), leaseUntil: this.leaseUntil
    })
  }

  private async renew (): Promise<void> {
    if (this.closed) return
    try {
      const until = Date.now() + this.opts.leaseMs
      if (await this.store.cluster.renewReplica(this.replicaId, until)) this.leaseUntil = until
      else await this.register()
    } catch (err) {
      const lapsed = Date.now() > this.leaseUntil
      this.log.warn({ err: (err as Error).message, lapsed }, lapsed ? 'lease lapsed: siblings count this replica dead until the database answers' : 'lease not renewed')
    }
  }

  /** Handles messages of one kind from the other replicas. */
  on<K extends Kind> (kind: K, handler: (msg: Extract<ClusterMessage, { kind: K }>) => void): void {
    const list = this.handlers.get(kind) ?? []
    list.push(handler as (msg: never) => void)
    this.handlers.set(kind, list)
  }

  /** Runs after notifications were lost (the listening connection dropped): read what may have changed. */
  onResync (fn: () => void): void {
    this.resyncs.push(fn)
  }

  /** Announces a change to the other replicas (after it was written). */
  announce (msg: ClusterMessage): void {
    if (this.closed) return
    this.store.notify(CHANNEL, JSON.stringify({ ...msg, from: this.replicaId })).catch((err: Error) => {
      this.log.warn({ kind: msg.kind, err: err.message }, 'change not announced to the other replicas')
    })
  }

  /** A dashboard topic changed here: the other replicas' dashboards hear it too (coalesced). */
  changed (topic: EventTopic): void {
    this.changedTopics.add(topic)
    this.changedTimer ??= setTimeout(() => {
      this.changedTimer = null
      for (const t of this.changedTopics) this.announce({ kind: 'changed', topic: t })
      this.changedTopics.clear()
    }, CHANGED_COALESCE_MS)
  }

  private onNotification (payload: string): void {
    let msg: Envelope
    try {
      msg = JSON.parse(payload) as Envelope
    } catch {
      this.log.warn('a notification that is not JSON; ignored')
      return
    }
    if (msg.from === this.replicaId) return
    for (const handler of this.handlers.get(msg.kind) ?? []) {
      try {
        handler(msg as never)
      } catch (err) {
        this.log.warn({ kind: msg.kind, err: (err as Error).message }, 'a cluster message failed')
      }
    }
  }

  async liveReplicas (): Promise<ReplicaRecord[]> {
    return await this.store.cluster.liveReplicas(Date.now())
  }

  // --- where relays and agents are -------------------------------------------

  /** This replica now holds the relay's link: recorded with a new fence before the relay hears it is linked. */
  async claimRelay (relayId: string): Promise<number> {
    const fence = await this.store.cluster.claimRelay(relayId, this.replicaId, Date.now())
    if (fence === null) throw new RelaygateError('RG_ERR_REPLACED', `a newer link of relay ${relayId} was recorded meanwhile`)
    this.fences.set(relayId, fence)
    return fence
  }

  /** The link of that fence closed (a later link of the same relay, here or elsewhere, keeps its own). */
  releaseRelay (relayId: string, fence: number): void {
    if (this.fences.get(relayId) === fence) this.fences.delete(relayId)
    this.store.cluster.releaseRelay(relayId, fence).catch((err: Error) => this.log.warn({ relayId, err: err.message }, 'relay link not released'))
  }

  /** A relay linked here reported its figures: shown by every replica (written behind, the latest per relay). */
  relayFigures (relayId: string, figures: object): void {
    const fence = this.fences.get(relayId)
    if (fence !== undefined) this.figureWrites.add({ relayId, fence, figures })
  }

  presenceChanged (endpointId: string, edgeId: string, relayId: string, online: boolean): void {
    const fence = this.fences.get(relayId)
    if (fence === undefined) return
    this.presenceWrites.add({ endpointId, edgeId, relayId, fence, online, at: Date.now() })
  }

  /** The agents online at other replicas for these endpoints. */
  async remotePresence (endpointIds: string[]): Promise<Map<string, LivePresence[]>> {
    const out = new Map<string, LivePresence[]>()
    if (endpointIds.length === 0) return out
    for (const p of await this.store.cluster.livePresence(endpointIds, Date.now())) {
      if (p.replicaId === this.replicaId) continue
      const list = out.get(p.endpointId)
      if (list === undefined) out.set(p.endpointId, [p])
      else list.push(p)
    }
    return out
  }

  /** Tunnels held by other replicas, by endpoint (as their replicas describe them). */
  async remoteTunnels (endpointIds: string[]): Promise<Map<string, TunnelInfo>> {
    const out = new Map<string, TunnelInfo>()
    if (endpointIds.length === 0) return out
    for (const [id, t] of await this.store.cluster.liveTunnels(endpointIds, Date.now())) {
      if (t.replicaId !== this.replicaId) out.set(id, t.info as unknown as TunnelInfo)
    }
    return out
  }

  /** Records (or clears) this replica's tunnel to an endpoint, for the other replicas' views. */
  tunnelChanged (endpointId: string, info: TunnelInfo | null): void {
    this.tunnelWrites.add({ endpointId, info })
  }

  /** Relays linked to other replicas. */
  async remoteRelays (): Promise<Map<string, RelayLocation>> {
    const all = await this.store.cluster.relayLocations(Date.now())
    return new Map(all.filter(l => l.replicaId !== this.replicaId).map(l => [l.relayId, l]))
  }

  // --- peer links --------------------------------------------------------------

  /** Handles streams siblings open to this replica. */
  onPeerStream (handler: PeerStreamHandler): void {
    this.streamHandler = handler
  }

  /** A sibling dialing `/peer` (on the HTTPS listener only: the proof needs the TLS session). */
  handleUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const tls = req.socket as TLSSocket
    if (this.closed || typeof tls.exportKeyingMaterial !== 'function') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
      return
    }
    const keying = tls.exportKeyingMaterial(PEER_EXPORTER_LENGTH, PEER_EXPORTER_LABEL, PEER_EXPORTER_CONTEXT)
    this.wss.handleUpgrade(req, socket, head, ws => this.accept(ws, keying, `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`))
  }

  private accept (ws: WebSocket, keying: Buffer, remote: string): void {
    const log = this.log.child({ peerRemote: remote })
    let link: PeerLink | null = null
    const mux: Mux = this.newMux(ws, remote, 'listener', log, {
      onStream: stream => this.onStream(link, stream),
      onFrame: frame => {
        if (link !== null) throw new RelaygateError('RG_ERR_PROTOCOL', 'peer links carry streams only')
        void this.onDialerHello(mux, frame, keying).then(l => { link = l }, err => { void mux.destroy(toRelaygateError(err)) })
      },
      onClose: () => { if (link !== null) this.dropLink(link) }
    })
    setTimeout(() => { if (link === null) void mux.destroy(new RelaygateError('RG_ERR_PROTOCOL', 'no hello in time')) }, HELLO_TIMEOUT_MS).unref()
  }

  private async onDialerHello (mux: Mux, frame: Frame, keying: Buffer): Promise<PeerLink> {
    const hello = readHello(frame, Hellos.fromReplica)
    if (!verifyPeerProof(this.opts.secret, keying, 'dialer', hello.replicaId, hello.proof)) {
      throw new RelaygateError('RG_ERR_UNAUTHORIZED', 'wrong cluster secret')
    }
    if (await this.store.cluster.getReplica(hello.replicaId, Date.now()) === undefined) {
      throw new RelaygateError('RG_ERR_UNAUTHORIZED', `replica ${hello.replicaId} is not registered (or its lease lapsed)`)
    }
    if (mux.closed) throw new RelaygateError('RG_ERR_GOING_AWAY', 'closed during its hello')
    mux.send(helloFrame({ role: 'replica', replicaId: this.replicaId, proof: peerProof(this.opts.secret, keying, 'listener', this.replicaId), version: this.opts.version }))
    const link = { replicaId: hello.replicaId, mux }
    this.links.set(hello.replicaId, link)
    this.log.info({ peer: hello.replicaId }, 'peer linked (it dialed)')
    return link
  }

  /** The link to a sibling: the one there is, else dialed (its peer URL and pin from the registry). */
  async link (replicaId: string): Promise<PeerLink> {
    const known = this.links.get(replicaId)
    if (known !== undefined && !known.mux.closed) return known
    const dialing = this.dialing.get(replicaId)
    if (dialing !== undefined) return await dialing
    const p = this.dial(replicaId).finally(() => this.dialing.delete(replicaId))
    this.dialing.set(replicaId, p)
    return await p
  }

  private async dial (replicaId: string): Promise<PeerLink> {
    if (this.closed) throw new RelaygateError('RG_ERR_CLOSED', 'replica shutting down')
    const peer = await this.store.cluster.getReplica(replicaId, Date.now())
    if (peer === undefined) throw new RelaygateError('RG_ERR_PEER_UNAVAILABLE', `replica ${replicaId} is not alive`)
    const url = `${toWsUrl(peer.peerUrl)}/peer`
    let keying: Buffer | null = null
    let ws: WebSocket
    try {
      ws = await dialWebSocket(url, {
        fingerprints: [peer.fingerprint],
        maxPayload: DEFAULT_MAX_PAYLOAD + HEADER_SIZE,
        timeoutMs: 5000,
        onSecure: socket => { keying = socket.exportKeyingMaterial(PEER_EXPORTER_LENGTH, PEER_EXPORTER_LABEL, PEER_EXPORTER_CONTEXT) }
      })
    } catch (err) {
      throw new RelaygateError('RG_ERR_PEER_UNAVAILABLE', `cannot reach replica ${replicaId} at ${peer.peerUrl}: ${(err as Error).message}`)
    }
    if (keying === null) {
      ws.terminate()
      throw new RelaygateError('RG_ERR_CONFIG', `replica ${replicaId} registered a peer URL without TLS: ${peer.peerUrl}`)
    }
    const material: Buffer = keying
    const log = this.log.child({ peer: replicaId })
    return await new Promise<PeerLink>((resolve, reject) => {
      let link: PeerLink | null = null
      const mux: Mux = this.newMux(ws, url, 'dialer', log, {
        onStream: stream => this.onStream(link, stream),
        onFrame: frame => {
          if (link !== null) throw new RelaygateError('RG_ERR_PROTOCOL', 'peer links carry streams only')
          const hello = readHello(frame, Hellos.fromReplica)
          if (hello.replicaId !== replicaId || !verifyPeerProof(this.opts.secret, material, 'listener', hello.replicaId, hello.proof)) {
            throw new RelaygateError('RG_ERR_UNAUTHORIZED', `replica at ${peer.peerUrl} did not prove the cluster secret`)
          }
          link = { replicaId, mux }
          this.links.set(replicaId, link)
          log.info('peer linked (dialed)')
          resolve(link)
        },
        onClose: ({ error, reason }) => {
          if (link !== null) this.dropLink(link)
          else reject(new RelaygateError('RG_ERR_PEER_UNAVAILABLE', `replica ${replicaId}: ${error?.message ?? reason}`))
        }
      })
      mux.send(helloFrame({ role: 'replica', replicaId: this.replicaId, proof: peerProof(this.opts.secret, material, 'dialer', this.replicaId), version: this.opts.version }))
    })
  }

  private newMux (ws: WebSocket, remote: string, role: 'dialer' | 'listener', log: Logger, handlers: {
    onStream: (stream: MuxStream) => void
    onFrame: (frame: Frame) => void
    onClose: (info: { code: number, reason: string, error?: RelaygateError }) => void
  }): Mux {
    const mux: Mux = new Mux(new WsTransport(ws, remote), {
      role,
      maxPayload: DEFAULT_MAX_PAYLOAD,
      keepAliveMs: this.opts.keepAliveMs,
      livenessTimeoutMs: 3 * this.opts.keepAliveMs,
      logger: log,
      maxStreams: 4096,
      onStream: handlers.onStream,
      onFrame: handlers.onFrame,
      onClose: info => {
        this.pendingMuxes.delete(mux)
        handlers.onClose(info)
      }
    })
    this.pendingMuxes.add(mux)
    return mux
  }

  private onStream (link: PeerLink | null, stream: MuxStream): void {
    if (link === null) {
      stream.destroy(new RelaygateError('RG_ERR_STREAM_REFUSED', 'hello first'))
      return
    }
    this.streamHandler(parseStreamMeta(stream, PeerStreams), stream, link.replicaId)
  }

  private dropLink (link: PeerLink): void {
    if (this.links.get(link.replicaId) === link) this.links.delete(link.replicaId)
    this.log.info({ peer: link.replicaId }, 'peer link closed')
  }

  /** Opens a stream to a sibling (dialing it first if needed). */
  async openStream (replicaId: string, meta: PeerStreamMeta): Promise<MuxStream> {
    const link = await this.link(replicaId)
    return link.mux.openStream(encodeStreamMeta(meta))
  }

  /** Leaves the cluster: the lease ends now (siblings stop forwarding here), presence written, links closed. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.renewTimer !== null) clearInterval(this.renewTimer)
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer)
    if (this.changedTimer !== null) clearTimeout(this.changedTimer)
    await this.presenceWrites.close()
    await this.tunnelWrites.close()
    await this.figureWrites.close()
    await this.store.cluster.retireReplica(this.replicaId).catch((err: Error) => this.log.warn({ err: err.message }, 'lease not ended'))
    await this.unlisten?.()
    await Promise.allSettled([...this.pendingMuxes].map(m => m.destroy(new RelaygateError('RG_ERR_GOING_AWAY', 'replica shutting down'))))
    for (const client of this.wss.clients) client.terminate()
    await new Promise<void>(resolve => this.wss.close(() => resolve()))
  }
}
