import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  Mux, FrameType, AGENT_MAX_PAYLOAD, HEADER_SIZE, RelaygateError, FATAL_CLOSE_CODES, NEXT_PEER_CLOSE_CODES,
  decodeCheckinAnswer, decodeCodeReason, frames, toRelaygateError, codeForClose, isErrorCode, type CheckinAnswer, type Frame
} from '../protocol/index.js'
import {
  Hellos, helloFrame, readHello, controlFrame, readControl, RelayToAgent, OrderGate, deriveE2eKeys, newAgentNonce, reportMac,
  type E2eKeys, type UnsignedReport, type UnsignedJobResult, type AgentDown
} from '../protocol/messages.js'
import { deriveTunnelRoot } from '../protocol/tunnel-crypto.js'
import { WsTransport } from '../protocol/ws-transport.js'
import { dialWebSocket } from '../common/dial.js'
import { proxyFor } from '../common/proxy.js'
import { Backoff } from '../common/backoff.js'
import { computeProof, deriveAuthKey } from '../protocol/auth.js'
import { writeFileAtomic, writeReadyFile } from '../common/files.js'
import { VERSION } from '../common/version.js'
import type { RelayAddress } from '../protocol/token.js'
import { verifyAgentConfig, type AgentConfig, type VerifiedAgentConfig } from './config.js'
import { TunnelEndpoint } from './tunnel.js'
import { download, type RelayAccess } from './download.js'
import { takeSnapshot } from './snapshot.js'
import { JobRunner } from './jobs.js'
import { SelfUpdater } from '../common/updater.js'
import { Versions } from '../common/self-update.js'
import { isOneFile } from '../common/embedded.js'
import { CheckinFlag } from '../protocol/index.js'

export type AgentState = 'connecting' | 'authenticating' | 'online' | 'waiting' | 'stopped'

/** Reads the edge id kept in the data dir, or creates one (or keeps the given one). */
export function loadEdgeId (dataDir: string, given: string | undefined, logger: Logger): string {
  mkdirSync(dataDir, { recursive: true })
  const file = join(dataDir, 'edge-id')
  const stored = existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined
  if (given !== undefined) {
    if (stored !== undefined && stored !== given) logger.warn({ stored, given }, 'replacing the stored edge id with --edge-id')
    if (stored !== given) writeFileAtomic(file, given + '\n')
    return given
  }
  if (stored !== undefined && stored !== '') return stored
  const edgeId = randomUUID()
  writeFileAtomic(file, edgeId + '\n')
  logger.info({ edgeId }, 'generated an edge id')
  return edgeId
}

/**
 * An agent: dials one relay at a time (failing over through the list),
 * proves it holds the endpoint secret, and checks in at the interval the
 * server sets. Events: 'online' {relay}, 'answer' CheckinAnswer,
 * 'offline' {code, reason}, 'relay-error' {relay, error} (a relay could not
 * be reached; the agent moves on), 'fatal' RelaygateError (stopped for good),
 * 'restart' {reason} (a self-update switched versions: whoever runs the agent
 * closes it and starts it again; the CLI exits with RESTART_EXIT_CODE).
 */
export class RelaygateAgent extends EventEmitter {
  readonly config: VerifiedAgentConfig
  readonly edgeId: string
  readonly endpointId: string
  state: AgentState = 'connecting'
  intervalSeconds = 5
  relayUrl: string | null = null
  relayId: string | null = null
  /** Check-ins sent and answers received in this process's life. */
  checkins = 0
  answers = 0
  lastFlags = 0
  private readonly log: Logger
  private readonly authKey: Buffer
  private readonly backoff: Backoff
  private mux: Mux | null = null
  private relayIndex = 0
  private stopped = false
  private waitTimer: NodeJS.Timeout | null = null
  private waitResolve: (() => void) | null = null
  private checkinTimer: NodeJS.Timeout | null = null
  private deadlineTimer: NodeJS.Timeout | null = null
  private seq = 0
  private sentSeq = -1
  private sentAt = 0
  /** Round trip of the latest answered check-in (ms), as measured here. */
  lastRttMs: number | null = null
  private readyWritten = false
  private running: Promise<void> | null = null
  private snapshotTimer: NodeJS.Timeout | null = null
  private readonly startedAt = Date.now()
  readonly tunnel: TunnelEndpoint
  readonly jobs: JobRunner
  readonly updater: SelfUpdater
  /** The version this agent runs and reports. */
  readonly version: string
  private currentRelay: RelayAddress | null = null
  private downloadToken: string | null = null
  snapshotsSent = 0
  /** Keys shared end to end with the server (the relay has none of them). */
  private readonly e2e: E2eKeys
  private readonly orders: OrderGate
  /** Orders refused since start (forged or replayed): each is reported to the server. */
  ordersRefused = 0
  /** Accepted once in this process: from then on only a verified stop order ends the agent for good. */
  private everOnline = false
  /** The server's verified stop order, if one came. */
  private stopOrder: RelaygateError | null = null
  private snapshotEveryMs = 600_000
  /** The relay's latest ERROR frame (a refusal's whole message, when the close reason cuts it). */
  private lastRelayError: { code: number, reason: string } | null = null

  constructor (input: Partial<AgentConfig>, logger: Logger) {
    super()
    this.config = verifyAgentConfig(input)
    this.endpointId = this.config.token.endpointId
    this.edgeId = loadEdgeId(this.config.dataDir, this.config.edgeId, logger)
    this.log = logger.child({ endpointId: this.endpointId, edgeId: this.edgeId })
    this.authKey = deriveAuthKey(this.config.token.secret)
    this.backoff = new Backoff({ baseMs: 250, maxMs: 30_000, giveUpAfterMs: this.config.giveUpAfterMs })
    this.e2e = deriveE2eKeys(deriveTunnelRoot(this.config.token.secret), this.edgeId)
    this.orders = new OrderGate(this.e2e, { endpointId: this.endpointId, edgeId: this.edgeId })
    const self = this
    this.tunnel = new TunnelEndpoint({
      endpointId: this.endpointId,
      edgeId: this.edgeId,
      get relayId () { return self.relayId },
      logger: this.log,
      send: msg => this.report(msg),
      snapshot: reason => this.sendSnapshot(reason)
    }, { secret: this.config.token.secret, tunnelTarget: this.config.tunnelTarget, allowTcp: this.config.allowTcp })
    this.jobs = new JobRunner({
      logger: this.log,
      send: msg => this.report(msg),
      relay: () => this.relayAccess()
    }, { dataDir: this.config.dataDir, filesDir: this.config.filesDir!, allowExec: this.config.allowExec, ...(this.config.downloadRetries === undefined ? {} : { downloadRetries: this.config.downloadRetries }) })
    this.version = this.config.version ?? VERSION
    const versions = this.config.selfUpdate ?? new Versions(this.config.dataDir, { execPath: process.execPath, version: this.version, oneFile: isOneFile() })
    this.updater = new SelfUpdater({
      role: 'agent',
      logger: this.log,
      version: this.version,
      send: report => this.report({ t: 'update-progress', ...report }),
      // Through the relay's cache, as a job's artifact: N agents at a site cost the server one transfer.
      fetch: async (order, part, verify, progress) => await download({ jobId: order.updateId, sha256: order.sha256, size: order.size, deadline: order.deadline }, part, this.log, verify, {
        relay: () => this.relayAccess(),
        closed: () => this.stopped,
        progress,
        retries: this.config.downloadRetries ?? 8,
        progressTty: false
      }),
      restart: reason => { this.emit('restart', { reason }) }
    }, versions, this.config.dataDir)
  }

  /** The relay to download from now (its HTTP side and our download token), or null while offline. */
  private relayAccess (): RelayAccess | null {
    return this.currentRelay === null || this.downloadToken === null || this.state !== 'online'
      ? null
      : { url: this.currentRelay.url, fingerprints: this.currentRelay.fingerprints, downloadToken: this.downloadToken, proxy: proxyFor(this.currentRelay.url, this.config.proxy) }
  }

  /** Sends a report up to the server with its end-to-end MAC (dropped when offline). */
  private report (msg: UnsignedReport | ({ t: 'job-result' } & UnsignedJobResult)): void {
    const mux = this.mux
    if (mux === null || mux.closed) return
    const mac = reportMac(this.e2e, { endpointId: this.endpointId, edgeId: this.edgeId }, msg)
    mux.send(controlFrame({ ...msg, mac } as Parameters<typeof controlFrame>[0]))
  }

  /** Sends a snapshot of this machine up to the server. */
  async sendSnapshot (reason: string): Promise<void> {
    const snapshot = await takeSnapshot({ edgeId: this.edgeId, dataDir: this.config.dataDir, tunnelTarget: this.config.tunnelTarget, startedAt: this.startedAt, version: this.version, allowExec: this.config.allowExec, tags: this.config.tags })
    if (this.state !== 'online') return
    this.report({ t: 'snapshot', reason, snapshot, takenAt: Date.now() })
    this.snapshotsSent++
    this.emit('snapshot', { reason })
  }

  start (): this {
    if (this.running === null) this.running = this.run()
    return this
  }

  /** Resolves when the agent is online (accepted by a relay and the server). */
  whenOnline (timeoutMs = 30_000): Promise<void> {
    if (this.state === 'online') return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { cleanup(); reject(new RelaygateError('RG_ERR_LIVENESS', 'agent not online in time')) }, timeoutMs)
      const onOnline = (): void => { cleanup(); resolve() }
      const onFatal = (err: Error): void => { cleanup(); reject(err) }
      const cleanup = (): void => { clearTimeout(timer); this.off('online', onOnline); this.off('fatal', onFatal) }
      this.on('online', onOnline)
      this.on('fatal', onFatal)
    })
  }

  /**
   * Graceful stop: first waits (at most drainTimeoutMs) for running jobs to
   * finish and for the relay to acknowledge their results, while the agent
   * stays online; a job still running then is reported failed with
   * RG_ERR_GOING_AWAY. Then closes the link.
   */
  async close (): Promise<void> {
    if (!this.stopped && this.running !== null) await this.jobs.drain(this.config.drainTimeoutMs)
    this.stopped = true
    this.tunnel.close()
    this.updater.close()
    await this.jobs.close()
    if (this.snapshotTimer !== null) clearInterval(this.snapshotTimer)
    this.wake()
    const mux = this.mux
    if (mux !== null) await mux.close(1000, 'agent stopping')
    await this.running
    this.state = 'stopped'
  }

  async destroy (): Promise<void> {
    this.stopped = true
    this.tunnel.close()
    this.updater.close()
    void this.jobs.close()
    if (this.snapshotTimer !== null) clearInterval(this.snapshotTimer)
    this.wake()
    const mux = this.mux
    if (mux !== null) await mux.destroy()
    await this.running
    this.state = 'stopped'
  }

  /** For tests: drops the current link at once, as a network failure would. */
  dropLink (): void {
    this.mux?.transport.terminate()
  }

  private async run (): Promise<void> {
    const relays = this.config.relayList
    while (!this.stopped) {
      const relay = relays[this.relayIndex % relays.length]
      const result = await this.session(relay)
      if (this.stopped) break
      if (result.fatal !== undefined) {
        this.state = 'stopped'
        this.log.error({ code: result.fatal.code, message: result.fatal.message }, 'agent refused for good: stopping')
        this.emit('fatal', result.fatal)
        return
      }
      if (result.accepted) this.backoff.reset()
      if (!result.accepted || result.goingAway === true) this.relayIndex++ // fail over to the next relay
      const delay = this.backoff.next()
      if (delay === undefined) {
        const err = new RelaygateError('RG_ERR_NO_RELAY', `no relay accepted this agent for ${this.config.giveUpAfterMs} ms`)
        this.state = 'stopped'
        this.log.error({ code: err.code }, err.message)
        this.emit('fatal', err)
        return
      }
      this.state = 'waiting'
      this.log.debug({ delay }, 'reconnecting after a pause')
      await this.sleep(delay)
    }
    this.state = 'stopped'
  }

  private sleep (ms: number): Promise<void> {
    return new Promise(resolve => {
      this.waitResolve = resolve
      this.waitTimer = setTimeout(() => this.wake(), ms)
    })
  }

  private wake (): void {
    if (this.waitTimer !== null) clearTimeout(this.waitTimer)
    this.waitTimer = null
    const resolve = this.waitResolve
    this.waitResolve = null
    resolve?.()
  }

  /** One connection to one relay, until it ends. */
  private async session (relay: RelayAddress): Promise<{ accepted: boolean, fatal?: RelaygateError, goingAway?: boolean }> {
    this.state = 'connecting'
    const url = `${relay.url}/agent`
    let ws
    try {
      ws = await dialWebSocket(url, { fingerprints: relay.fingerprints, maxPayload: 4 * (AGENT_MAX_PAYLOAD + HEADER_SIZE), proxy: proxyFor(url, this.config.proxy) })
    } catch (err) {
      const coded = toRelaygateError(err, 'RG_ERR_NO_RELAY')
      this.log.warn({ relay: relay.url, code: coded.code, message: coded.message }, 'cannot reach relay')
      this.emit('relay-error', { relay: relay.url, error: coded })
      return { accepted: false }
    }
    if (this.stopped) {
      ws.terminate()
      return { accepted: false }
    }
    this.state = 'authenticating'
    let accepted = false
    return await new Promise(resolve => {
      const acceptTimer = setTimeout(() => {
        void mux.destroy(new RelaygateError('RG_ERR_LIVENESS', 'relay did not accept the agent in time'))
      }, this.config.acceptTimeoutMs)
      const mux: Mux = new Mux(new WsTransport(ws, relay.url), {
        role: 'dialer',
        maxPayload: AGENT_MAX_PAYLOAD,
        maxStreams: 256,
        logger: this.log,
        onStream: stream => this.tunnel.onStream(stream),
        // A throw closes the link with the error's close code (the mux catches and logs it).
        onFrame: frame => {
          if (this.onFrame(mux, relay, frame) && !accepted) {
            accepted = true
            clearTimeout(acceptTimer)
          }
        },
        onClose: ({ code, reason, error }) => {
          clearTimeout(acceptTimer)
          this.stopCheckins()
          this.tunnel.linkLost()
          if (this.snapshotTimer !== null) clearInterval(this.snapshotTimer)
          this.snapshotTimer = null
          this.mux = null
          const wasOnline = this.state === 'online'
          if (wasOnline) this.emit('offline', { code, reason })
          this.log.info({ relay: relay.url, code, reason }, 'relay link closed')
          if (this.stopOrder !== null) {
            resolve({ accepted, fatal: this.stopOrder })
          } else if (FATAL_CLOSE_CODES.has(code) && !this.everOnline) {
            // The whole message, when the relay sent it ahead of a close reason too short for it.
            const whole = this.lastRelayError !== null && this.lastRelayError.code === code && this.lastRelayError.reason.startsWith(reason) ? this.lastRelayError.reason : null
            const fatal = error ?? new RelaygateError(codeForClose(code) ?? 'RG_ERR_AUTH', reason)
            resolve({ accepted, fatal: whole === null ? fatal : new RelaygateError(fatal.code, whole) })
          } else {
            // Once accepted, a refusal must come from the server (a verified stop order):
            // a relay closing with a refusal code may be lying, so try again (with backoff).
            if (FATAL_CLOSE_CODES.has(code)) this.log.warn({ code: codeForClose(code), relay: relay.url }, 'relay closed with a refusal the server did not confirm: trying again')
            // The relay is shutting down (it sent a go-away first) or is not pinned: move on to the next one.
            resolve({ accepted, goingAway: NEXT_PEER_CLOSE_CODES.has(code) })
          }
        }
      })
      this.mux = mux
      mux.send(helloFrame({ role: 'agent', endpointId: this.endpointId, edgeId: this.edgeId, agentVersion: this.version }))
    })
  }

  /** Handles a frame; returns true when it made the agent online. A throw closes the link (protocol error). */
  private onFrame (mux: Mux, relay: RelayAddress, frame: Frame): boolean {
    switch (frame.type) {
      case FrameType.HELLO:
        readHello(frame, Hellos.fromRelayToAgent)
        return false
      case FrameType.CONTROL: return this.onControl(mux, relay, readControl(frame, RelayToAgent))
      case FrameType.CHECKIN_ANSWER:
        this.onAnswer(mux, decodeCheckinAnswer(frame.payload))
        return false
      case FrameType.ERROR: {
        const { code, reason } = decodeCodeReason(frame.payload)
        this.lastRelayError = { code, reason }
        this.log.warn({ code: codeForClose(code) ?? code, reason }, 'relay reported an error')
        return false
      }
      default:
        throw new RelaygateError('RG_ERR_PROTOCOL', `unexpected frame 0x${frame.type.toString(16)} from the relay`)
    }
  }

  private onControl (mux: Mux, relay: RelayAddress, msg: RelayToAgent): boolean {
    switch (msg.t) {
      case 'challenge': {
        // A fresh nonce per round: the server binds this session's orders to it.
        const agentNonce = newAgentNonce()
        this.orders.addNonce(agentNonce)
        const proof = computeProof(this.authKey, { nonce: msg.nonce, endpointId: this.endpointId, edgeId: this.edgeId, relayId: msg.relayId })
        mux.send(controlFrame({ t: 'proof', proof, agentNonce }))
        return false
      }
      case 'welcome': return this.onWelcome(mux, relay, msg)
      case 'job-result-ack':
      case 'job-result-nack':
        if (this.state === 'online') this.jobs.onControl(msg)
        return false
      default:
        if (this.state === 'online' && this.verified(msg)) this.onOrder(mux, msg)
        return false
    }
  }

  /** An order from the server, verified end to end. */
  private onOrder (mux: Mux, msg: AgentDown): void {
    switch (msg.t) {
      case 'job': return this.jobs.onControl(msg)
      case 'update': return this.updater.onOrder(msg)
      case 'agent-settings':
        this.snapshotEveryMs = msg.snapshotIntervalSeconds * 1000
        return this.scheduleSnapshots()
      case 'stop':
        this.stopOrder = new RelaygateError(isErrorCode(msg.code) ? msg.code : 'RG_ERR_ENDPOINT_DELETED', msg.message)
        this.log.error({ code: this.stopOrder.code }, 'the server stopped this agent for good')
        void mux.close(1000, 'stopped by the server')
        return
      default: return this.tunnel.onControl(msg)
    }
  }

  /**
   * True for an order that verifies end to end. Anything else (forged by the
   * relay or the network, or replayed) is refused, and the refusal is reported
   * to the server, authenticated, so it shows on the server.
   */
  private verified (msg: AgentDown): boolean {
    const verdict = this.orders.check(msg)
    if (verdict === 'ok') return true
    const code = verdict === 'forged' ? 'RG_ERR_ORDER_FORGED' : 'RG_ERR_ORDER_REPLAYED'
    const ref = 'jobId' in msg ? msg.jobId : ('tunnelId' in msg ? msg.tunnelId : ('updateId' in msg ? msg.updateId : ''))
    this.ordersRefused++
    this.log.warn({ code, kind: msg.t, ref }, 'refused an order that did not come from the server as sent')
    this.emit('order-refused', { code, kind: msg.t, ref })
    this.report({ t: 'order-refused', kind: msg.t, ref, code, message: verdict === 'forged' ? 'the order does not verify end to end' : 'the order was already received' })
    return false
  }

  private scheduleSnapshots (): void {
    if (this.snapshotTimer !== null) clearInterval(this.snapshotTimer)
    this.snapshotTimer = setInterval(() => { void this.sendSnapshot('interval').catch(() => {}) }, this.snapshotEveryMs)
    this.snapshotTimer.unref()
  }

  private onWelcome (mux: Mux, relay: RelayAddress, msg: Extract<RelayToAgent, { t: 'welcome' }>): boolean {
    this.intervalSeconds = msg.intervalSeconds
    this.relayId = msg.relayId
    this.downloadToken = msg.downloadToken
    this.currentRelay = relay
    if (this.state === 'online') return false // re-authenticated after the relay re-linked
    this.state = 'online'
    this.relayUrl = relay.url
    this.log.info({ relay: relay.url, relayId: this.relayId, intervalSeconds: this.intervalSeconds }, 'agent online')
    if (!this.readyWritten) {
      this.readyWritten = true
      writeReadyFile(this.config.readyFile, { edgeId: this.edgeId, endpointId: this.endpointId, relay: relay.url, pid: process.pid })
    }
    this.scheduleCheckin(mux)
    this.emit('online', { relay: relay.url })
    this.jobs.onOnline()
    this.updater.onOnline()
    this.everOnline = true
    this.scheduleSnapshots()
    void this.sendSnapshot('connect').catch(err => this.log.warn({ err: (err as Error).message }, 'snapshot failed'))
    return true
  }

  private onAnswer (mux: Mux, answer: CheckinAnswer): void {
    this.answers++
    if (answer.seq !== 0 && answer.seq === this.sentSeq) {
      this.lastRttMs = performance.now() - this.sentAt
      this.emit('rtt', this.lastRttMs)
    }
    if (this.deadlineTimer !== null) clearTimeout(this.deadlineTimer)
    this.deadlineTimer = null
    const changed = answer.intervalSeconds > 0 && answer.intervalSeconds !== this.intervalSeconds
    if (changed) {
      this.log.info({ from: this.intervalSeconds, to: answer.intervalSeconds }, 'check-in interval changed')
      this.intervalSeconds = answer.intervalSeconds
      this.scheduleCheckin(mux)
    }
    this.lastFlags = answer.flags
    if ((answer.flags & CheckinFlag.TUNNEL) !== 0) this.tunnel.onFlag()
    this.emit('answer', answer)
  }

  /**
   * The next check-in, one interval from now give or take 10 % at random.
   * Without the jitter, agents whose timers fired together after a stall
   * (same event-loop turn, same start time) stay in step for good, and each
   * stall makes the bursts bigger: 15,000 agents on one relay ended up
   * checking in in bursts of hundreds (bench P2: p99 round trip 57 ms).
   */
  private scheduleCheckin (mux: Mux): void {
    if (this.checkinTimer !== null) clearTimeout(this.checkinTimer)
    this.checkinTimer = setTimeout(() => {
      this.checkinTimer = null
      if (mux.closed || this.stopped) return
      this.seq = (this.seq + 1) & 0xffff
      this.checkins++
      this.sentSeq = this.seq
      this.sentAt = performance.now()
      mux.send(frames.checkin(this.seq))
      // A link that answers nothing for two intervals is dead, whatever TCP thinks.
      if (this.deadlineTimer === null) {
        const limit = 2 * this.intervalSeconds * 1000
        this.deadlineTimer = setTimeout(() => {
          this.deadlineTimer = null
          this.log.warn({ limitMs: limit }, 'no check-in answer within two intervals: reconnecting')
          void mux.destroy(new RelaygateError('RG_ERR_LIVENESS', 'no check-in answer within two intervals'))
        }, limit)
      }
      this.scheduleCheckin(mux)
    }, this.intervalSeconds * 1000 * (0.9 + 0.2 * Math.random()))
  }

  private stopCheckins (): void {
    if (this.checkinTimer !== null) clearTimeout(this.checkinTimer)
    if (this.deadlineTimer !== null) clearTimeout(this.deadlineTimer)
    this.checkinTimer = null
    this.deadlineTimer = null
  }
}

export function buildAgent (config: Partial<AgentConfig>, logger: Logger): RelaygateAgent {
  return new RelaygateAgent(config, logger).start()
}
