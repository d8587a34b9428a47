import net from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { RelaygateError, type MuxStream } from '../protocol/index.js'
import { parseStreamMeta, AgentStreams, type UnsignedReport, type RelayToAgent } from '../protocol/messages.js'
import { deriveCredentialKey, deriveTunnelRoot, openCredential, tunnelProof } from '../protocol/tunnel-crypto.js'
import { splice } from '../protocol/splice.js'
import { resetConnection } from '../common/reset.js'
import { recordCipherLog } from '../protocol/record-crypto.js'
import { SealedStream, deriveTunnelStreamKey } from '../protocol/tunnel-stream.js'

/** Streams one tunnel may carry over its life (each nonce is remembered to refuse replays). */
const MAX_STREAMS_PER_TUNNEL = 100_000

export interface TunnelHost {
  readonly endpointId: string
  readonly edgeId: string
  readonly relayId: string | null
  /** Sends a control message up to the server (through the relay). */
  send: (msg: UnsignedReport) => void
  /** Sends a snapshot (awaited before an idle close). */
  snapshot: (reason: string) => Promise<void>
  readonly logger: Logger
}

/** The control messages of a tunnel's life, server -> agent. */
export type TunnelControl = Extract<RelayToAgent, { t: 'tunnel-offer' | 'tunnel-result' | 'tunnel-keepalive' | 'tunnel-close' }>

interface OpenTunnel {
  tunnelId: string
  target: string | null
  idleMs: number
  lastServerActivity: number
  streams: Set<Duplex>
  /** Key of this tunnel's end-to-end encrypted streams. */
  streamKey: Buffer
  /** Stream nonces seen in this tunnel (a repeat is a replay). */
  nonces: Set<string>
  idleTimer: NodeJS.Timeout
}

/** Connects to a tunnel target: http(s)://host:port, tcp://host:port or unix:/path. */
export function connectTarget (target: string): Duplex {
  if (target.startsWith('unix:')) return net.connect({ path: target.slice('unix:'.length) })
  const u = new URL(target)
  const host = u.hostname.replace(/^\[|\]$/g, '')
  if (u.protocol === 'https:') {
    const loopback = host === 'localhost' || host === '::1' || host.startsWith('127.')
    // A local HTTPS service (Docker with TLS, a dashboard) often has a self-signed certificate.
    return tls.connect({ host, port: u.port === '' ? 443 : Number(u.port), servername: net.isIP(host) === 0 ? host : undefined, rejectUnauthorized: !loopback }).setNoDelay(true)
  }
  const defaultPort = u.protocol === 'http:' ? 80 : 0
  // No Nagle: a request written in two pieces (head, then body) would wait for the first one's delayed ACK.
  return net.connect({ host, port: u.port === '' ? defaultPort : Number(u.port), noDelay: true })
}

/**
 * The agent's side of edge tunnels: opens the credential the server sealed
 * for this agent, proves it to take the tunnel, serves the streams that come
 * through it, and closes it (after sending a snapshot) when the server has
 * been silent for the idle timeout.
 */
export class TunnelEndpoint {
  private readonly host: TunnelHost
  private readonly key: Buffer
  private readonly tunnelTarget: string | undefined
  private readonly allowTcp: ReadonlySet<number>
  private pending: { tunnelId: string, target: string | null, idleMs: number, credential: string } | null = null
  private open: OpenTunnel | null = null
  private lastNeed = 0
  opened = 0

  constructor (host: TunnelHost, options: { secret: string, tunnelTarget?: string, allowTcp: number[] }) {
    this.host = host
    this.key = deriveCredentialKey(deriveTunnelRoot(options.secret), host.edgeId)
    this.tunnelTarget = options.tunnelTarget
    this.allowTcp = new Set(options.allowTcp)
  }

  get isOpen (): boolean {
    return this.open !== null
  }

  get tunnelId (): string | null {
    return this.open?.tunnelId ?? null
  }

  /** Handles the tunnel-* control messages. */
  onControl (msg: TunnelControl): void {
    switch (msg.t) {
      case 'tunnel-offer': return this.onOffer(msg)
      case 'tunnel-result': return this.onResult(msg)
      case 'tunnel-keepalive':
        if (this.open !== null && msg.tunnelId === this.open.tunnelId) this.open.lastServerActivity = Date.now()
        return
      case 'tunnel-close':
        if (this.open !== null && msg.tunnelId === this.open.tunnelId) this.shut(`closed by the server: ${msg.reason}`)
    }
  }

  /** A check-in answer says a tunnel is wanted: ask for an offer if we have none. */
  onFlag (): void {
    if (this.open !== null || this.pending !== null) return
    const now = Date.now()
    if (now - this.lastNeed < 5000) return
    this.lastNeed = now
    this.host.send({ t: 'tunnel-need' })
  }

  /** A stream opened by the server through the relay. */
  onStream (raw: MuxStream): void {
    // Bad metadata throws: the mux closes the link with the protocol-error code.
    const meta = parseStreamMeta(raw, AgentStreams)
    const t = this.open
    if (t === null || meta.tunnelId !== t.tunnelId) {
      raw.destroy(new RelaygateError('RG_ERR_STREAM_REFUSED', 'no such open tunnel'))
      return
    }
    const log = this.host.logger.child({ tunnelId: t.tunnelId, streamId: raw.id })
    // Each stream's keys come from its nonce: one seen before in this tunnel is a recorded stream played again.
    if (t.nonces.has(meta.nonce) || t.nonces.size >= MAX_STREAMS_PER_TUNNEL) {
      this.refuseStream(raw, t, log, 'RG_ERR_ORDER_REPLAYED', 'a tunnel stream nonce seen before in this tunnel: a replay')
      return
    }
    t.nonces.add(meta.nonce)
    const stream = new SealedStream(raw, t.streamKey, meta.nonce, 'agent')
    stream.once('error', err => {
      if ((err as RelaygateError).code === 'RG_ERR_TUNNEL_TAMPERED') this.reportTampering(t, log, 'RG_ERR_TUNNEL_TAMPERED', err.message)
    })
    t.lastServerActivity = Date.now()
    t.streams.add(stream)
    stream.once('close', () => t.streams.delete(stream))
    if (meta.kind === 'tcp') {
      const port = meta.port
      if (port === undefined || !this.allowTcp.has(port)) {
        log.warn({ port }, 'refused a TCP stream to a port not allowed')
        stream.destroy(new RelaygateError('RG_ERR_TCP_NOT_ALLOWED', `port ${String(port)} is not allowed (--allow-tcp)`))
        return
      }
      this.join(stream, net.connect({ host: '127.0.0.1', port, noDelay: true }), log, true)
      return
    }
    const target = this.tunnelTarget ?? t.target
    if (target === null || target === undefined) {
      stream.destroy(new RelaygateError('RG_ERR_NO_TARGET', 'no tunnel target (--tunnel-target)'))
      return
    }
    let socket: Duplex
    try {
      socket = connectTarget(target)
    } catch (err) {
      stream.destroy(new RelaygateError('RG_ERR_TARGET_UNREACHABLE', (err as Error).message))
      return
    }
    this.join(stream, socket, log, false)
  }

  /** The relay link is gone: the tunnel with it (the server offers a new one on return). */
  linkLost (): void {
    this.pending = null
    if (this.open !== null) this.shut('link lost', false)
  }

  close (): void {
    this.linkLost()
  }

  private refuseStream (raw: MuxStream, t: OpenTunnel, log: Logger, code: 'RG_ERR_ORDER_REPLAYED', why: string): void {
    raw.destroy(new RelaygateError('RG_ERR_TUNNEL_TAMPERED', why))
    this.reportTampering(t, log, code, why)
  }

  /** Tampering with a tunnel stream, told to the server (authenticated) so it shows there. */
  private reportTampering (t: OpenTunnel, log: Logger, code: 'RG_ERR_ORDER_REPLAYED' | 'RG_ERR_TUNNEL_TAMPERED', why: string): void {
    log.warn({ code }, `tunnel stream refused: ${why}`)
    this.host.send({ t: 'order-refused', kind: 'tunnel-stream', ref: t.tunnelId, code, message: why })
  }

  private join (stream: Duplex, socket: Duplex, log: Logger, statusByte: boolean): void {
    let connected = false
    const connectEvent = socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect'
    socket.once(connectEvent, () => {
      connected = true
      log.debug('tunnel stream connected to its target')
      if (statusByte) stream.write(Buffer.from([0]))
      splice(stream, socket, resetConnection)
      // Server traffic keeps the tunnel open. (Listening for 'data' only after
      // the pipe is in place: an earlier listener would take the bytes.)
      const t = this.open
      if (t !== null) stream.on('data', () => { t.lastServerActivity = Date.now() })
    })
    socket.once('error', err => {
      if (connected) return
      log.warn({ code: (err as NodeJS.ErrnoException).code }, 'tunnel target unreachable')
      stream.destroy(new RelaygateError('RG_ERR_TARGET_UNREACHABLE', (err as NodeJS.ErrnoException).code ?? err.message))
    })
    stream.once('close', () => { if (!connected) socket.destroy() })
  }

  private onOffer (msg: Extract<TunnelControl, { t: 'tunnel-offer' }>): void {
    if (this.pending?.tunnelId === msg.tunnelId) return
    if (this.open !== null) {
      if (this.open.tunnelId === msg.tunnelId) return
      this.shut('replaced by a new tunnel', false)
    }
    let credential: string
    try {
      credential = openCredential(this.key, this.host.endpointId, this.host.edgeId, msg.tunnelId, msg.blob).credential
    } catch (err) {
      this.host.logger.warn({ code: (err as RelaygateError).code }, 'tunnel offer does not open with our key')
      return
    }
    this.pending = { tunnelId: msg.tunnelId, target: msg.target, idleMs: msg.idleTimeoutSeconds * 1000, credential }
    const proof = tunnelProof(credential, { tunnelId: msg.tunnelId, endpointId: this.host.endpointId, edgeId: this.host.edgeId, relayId: this.host.relayId ?? '' })
    this.host.send({ t: 'tunnel-open', tunnelId: msg.tunnelId, proof })
  }

  private onResult (msg: Extract<TunnelControl, { t: 'tunnel-result' }>): void {
    const pending = this.pending
    if (pending === null || msg.tunnelId !== pending.tunnelId) return
    this.pending = null
    if (msg.ok !== true) {
      // Another agent of the cluster won, or the offer was retired.
      this.host.logger.info({ tunnelId: pending.tunnelId, code: msg.code }, 'tunnel taken elsewhere')
      return
    }
    const checkEvery = Math.max(250, Math.min(5000, pending.idleMs / 10))
    const t: OpenTunnel = {
      tunnelId: pending.tunnelId,
      target: pending.target,
      idleMs: pending.idleMs,
      streamKey: deriveTunnelStreamKey(pending.credential, pending.tunnelId),
      nonces: new Set(),
      lastServerActivity: Date.now(),
      streams: new Set(),
      idleTimer: setInterval(() => {
        if (Date.now() - t.lastServerActivity >= t.idleMs) void this.idleClose(t)
      }, checkEvery)
    }
    t.idleTimer.unref()
    this.open = t
    this.opened++
    this.host.logger.info({ tunnelId: t.tunnelId, idleSeconds: t.idleMs / 1000, ...recordCipherLog }, 'tunnel open')
  }

  private async idleClose (t: OpenTunnel): Promise<void> {
    if (this.open !== t) return
    clearInterval(t.idleTimer)
    this.host.logger.info({ tunnelId: t.tunnelId }, 'tunnel idle: sending a snapshot and closing')
    try {
      await this.host.snapshot('tunnel-close')
    } catch {}
    if (this.open !== t) return
    this.host.send({ t: 'tunnel-closed', tunnelId: t.tunnelId, reason: 'idle' })
    this.shut('idle', false)
  }

  private shut (reason: string, log = true): void {
    const t = this.open
    if (t === null) return
    this.open = null
    clearInterval(t.idleTimer)
    const err = new RelaygateError('RG_ERR_TUNNEL_CLOSED', reason)
    for (const s of [...t.streams]) s.destroy(err)
    if (log) this.host.logger.info({ tunnelId: t.tunnelId, reason }, 'tunnel closed')
  }
}
