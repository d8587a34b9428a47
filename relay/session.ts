import type { Logger } from 'pino'
import {
  Mux, FrameType, AGENT_MAX_PAYLOAD, RelaygateError, ErrorCode, decodeCheckin, frames, type Frame, type Transport
} from '../protocol/index.js'
import {
  Hellos, helloFrame, readHello, controlFrame, readControl, AgentToRelay, isAgentUp,
  type AgentUp, type AgentDown, type JobResultBody, type RelayToAgent
} from '../protocol/messages.js'
import { VERSION } from '../common/version.js'

/** Where an agent session is: it says hello, authenticates (through the server), then is ready. */
export const SessionState = {
  HELLO: 'hello',
  AUTHENTICATING: 'authenticating',
  READY: 'ready',
  CLOSED: 'closed'
} as const
export type SessionStateName = (typeof SessionState)[keyof typeof SessionState]

/**
 * Where the current authentication round is. A ready session authenticates
 * again after the relay re-links (the server trusts only what it verified
 * itself) and keeps being served meanwhile.
 */
export const AuthStep = {
  /** No round in progress. */
  NONE: 'none',
  /** auth-begin sent (or queued until the server link is up): waiting for the server's challenge. */
  BEGUN: 'begun',
  /** Challenge passed to the agent: waiting for its proof. */
  PROVING: 'proving',
  /** Proof passed to the server: waiting for its verdict. */
  VERIFYING: 'verifying'
} as const
export type AuthStepName = (typeof AuthStep)[keyof typeof AuthStep]

/** What a session needs from the relay around it. */
export interface SessionHost {
  /** The check-in interval agents are told (seconds). */
  readonly intervalSeconds: number
  /** Check-in flags of an endpoint, from the table the server keeps current. */
  flagsOf: (endpointId: string) => number
  /** Starts (or restarts) authentication with the server. */
  beginAuth: (s: AgentSession) => void
  /** Passes the agent's proof (and its nonce for this round's orders) to the server; false when the link is down. */
  sendProof: (s: AgentSession, proof: string, agentNonce: string) => boolean
  /** Passes an agent message up to the server. */
  forwardUp: (s: AgentSession, msg: AgentUp) => void
  /** Stores a job result durably, then acknowledges it to the agent. */
  storeResult: (s: AgentSession, result: JobResultBody) => void
  onClosed: (s: AgentSession, code: number) => void
  /** Counters for /metrics. */
  count: (what: 'checkins' | 'pushes') => void
}

export interface SessionLimits {
  checkinBurst: number
  checkinRatePerSecond: number
  /** Push raised flags at once (false: the agent learns at its next check-in). */
  pushFlags: boolean
}

/** Check-ins allowed per agent: a token bucket (burst, then a steady rate). */
export class CheckinBucket {
  private tokens: number
  private lastRefill: number
  /** Check-ins refused in a row; far too many closes the link. */
  overLimit = 0

  constructor (private readonly burst: number, private readonly ratePerSecond: number, now = Date.now()) {
    this.tokens = burst
    this.lastRefill = now
  }

  take (now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + (now - this.lastRefill) / 1000 * this.ratePerSecond)
    this.lastRefill = now
    if (this.tokens < 1) {
      this.overLimit++
      return false
    }
    this.tokens -= 1
    return true
  }

  /** True once an agent ignored "slow down" for far too long. */
  get abusive (): boolean {
    return this.overLimit > this.burst * 4
  }
}

/**
 * One connected agent as the relay sees it: its mux over any transport
 * (uWebSockets.js in production, the in-memory pair in unit tests), its
 * authentication round and its check-in bucket. Bad input closes only this
 * agent's link, with the protocol-error close code.
 */
export class AgentSession {
  readonly sid: number
  readonly mux: Mux
  readonly log: Logger
  readonly createdAt = Date.now()
  /** The peer's address, as the transport reports it. */
  readonly remote: string
  state: SessionStateName = SessionState.HELLO
  authStep: AuthStepName = AuthStep.NONE
  endpointId = ''
  edgeId = ''
  /** Bearer token for GET /artifacts, given to the agent in its welcome. */
  downloadToken = ''
  authStartedAt = Date.now()
  lastCheckin = Date.now()
  /** With pushFlags off: a tunnel offer waiting for the agent's next check-in. */
  private heldOffer: AgentDown | null = null
  private readonly bucket: CheckinBucket
  private readonly host: SessionHost
  private readonly limits: SessionLimits

  constructor (sid: number, transport: Transport, host: SessionHost, limits: SessionLimits, log: Logger) {
    this.sid = sid
    this.remote = transport.remote
    this.host = host
    this.limits = limits
    this.log = log
    this.bucket = new CheckinBucket(limits.checkinBurst, limits.checkinRatePerSecond)
    // A throw from onFrame closes this link with the error's close code (the mux catches it).
    this.mux = new Mux(transport, {
      role: 'listener',
      maxPayload: AGENT_MAX_PAYLOAD,
      maxStreams: 256,
      maxBufferedBytes: 1024 * 1024,
      // One agent's tunnel streams: windows grow to 4 MiB, by 8 MiB at most over the link (thousands of links per relay).
      maxWindow: 4 * 1024 * 1024,
      windowBudget: 8 * 1024 * 1024,
      logger: log,
      onFrame: frame => this.onFrame(frame),
      onClose: ({ code }) => this.onClose(code)
    })
  }

  get ready (): boolean {
    return this.state === SessionState.READY
  }

  send (msg: RelayToAgent): void {
    this.mux.send(controlFrame(msg))
  }

  /** Pushes a check-in answer now (a flag was raised) instead of at the next check-in. */
  push (flags: number): boolean {
    if (!this.limits.pushFlags || !this.ready) return false
    this.host.count('pushes')
    this.mux.send(frames.checkinAnswer({ seq: 0, flags, intervalSeconds: this.host.intervalSeconds }))
    return true
  }

  /** A server message for this agent. In polling mode a tunnel offer waits for the next check-in. */
  deliver (msg: AgentDown): void {
    if (!this.ready) return
    this.log.trace({ forward: msg }, 'server -> agent')
    if (!this.limits.pushFlags && msg.t === 'tunnel-offer') this.heldOffer = msg
    else this.send(msg)
  }

  /** The server's challenge for this agent. */
  challenge (nonce: string, relayId: string): void {
    this.authStep = AuthStep.PROVING
    this.send({ t: 'challenge', nonce, relayId })
  }

  /** A new authentication round (first, or again after the relay re-linked). */
  restartAuth (): void {
    this.authStep = AuthStep.BEGUN
    this.authStartedAt = Date.now()
  }

  /** The server accepted the proof: the agent is (still) ready. Returns true the first time. */
  accepted (welcome: Extract<RelayToAgent, { t: 'welcome' }>): boolean {
    const first = this.state !== SessionState.READY
    this.authStep = AuthStep.NONE
    this.state = SessionState.READY
    this.lastCheckin = Date.now()
    this.send(welcome)
    return first
  }

  /** Ends the link with a coded error (refused, kicked, timed out). */
  fail (err: RelaygateError): void {
    // A close reason holds 120 characters; a longer message (what to do next) goes first, whole, as an ERROR frame.
    if (err.message.length > 120 && !this.mux.closed) this.mux.send(frames.error(err.closeCode, err.message.slice(0, 1000)))
    void this.mux.destroy(err)
  }

  private onFrame (frame: Frame): void {
    switch (frame.type) {
      case FrameType.HELLO: return this.onHello(frame)
      case FrameType.CONTROL: return this.onControl(frame)
      case FrameType.CHECKIN: return this.onCheckin(frame)
      default: throw new RelaygateError('RG_ERR_PROTOCOL', `unexpected frame 0x${frame.type.toString(16)} from an agent`)
    }
  }

  private onHello (frame: Frame): void {
    if (this.state !== SessionState.HELLO) throw new RelaygateError('RG_ERR_PROTOCOL', 'second hello')
    const hello = readHello(frame, Hellos.fromAgent)
    this.endpointId = hello.endpointId
    this.edgeId = hello.edgeId
    this.state = SessionState.AUTHENTICATING
    this.mux.send(helloFrame({ role: 'relay', version: VERSION }))
    this.host.beginAuth(this)
  }

  private onControl (frame: Frame): void {
    if (this.state === SessionState.HELLO) throw new RelaygateError('RG_ERR_PROTOCOL', 'hello first')
    const msg = readControl(frame, AgentToRelay)
    if (msg.t === 'proof') return this.onProof(msg.proof, msg.agentNonce)
    if (!this.ready) throw new RelaygateError('RG_ERR_PROTOCOL', `${msg.t} before authentication`)
    if (msg.t === 'job-result') {
      const { t: _t, ...result } = msg
      return this.host.storeResult(this, result)
    }
    if (isAgentUp(msg)) {
      this.log.trace({ forward: msg }, 'agent -> server')
      this.host.forwardUp(this, msg)
    }
  }

  private onProof (proof: string, agentNonce: string): void {
    if (this.authStep !== AuthStep.PROVING) throw new RelaygateError('RG_ERR_PROTOCOL', 'proof without a challenge')
    this.authStep = AuthStep.VERIFYING
    if (!this.host.sendProof(this, proof, agentNonce)) this.host.beginAuth(this)
  }

  private onCheckin (frame: Frame): void {
    if (!this.ready) throw new RelaygateError('RG_ERR_PROTOCOL', 'check-in before authentication')
    const { seq } = decodeCheckin(frame.payload)
    const now = Date.now()
    if (!this.bucket.take(now)) {
      if (this.bucket.abusive) throw new RelaygateError('RG_ERR_RATE_LIMIT', 'check-ins far above the allowed rate')
      this.mux.send(frames.error(ErrorCode.RG_ERR_RATE_LIMIT.close, 'check-in rate limit: slow down'))
      return
    }
    this.lastCheckin = now
    this.host.count('checkins')
    this.mux.send(frames.checkinAnswer({ seq, flags: this.host.flagsOf(this.endpointId), intervalSeconds: this.host.intervalSeconds }))
    if (this.heldOffer !== null) {
      this.send(this.heldOffer)
      this.heldOffer = null
    }
  }

  private onClose (code: number): void {
    const was = this.state
    this.state = SessionState.CLOSED
    if (code === ErrorCode.RG_ERR_FRAME_TOO_LARGE.close) this.log.warn({ endpointId: this.endpointId, code: 'RG_ERR_FRAME_TOO_LARGE' }, 'agent cut: a WebSocket message above the limit')
    else if (was === SessionState.READY) this.log.info({ endpointId: this.endpointId, code }, 'agent disconnected')
    this.host.onClosed(this, code)
  }

  /** True when this session said hello (the server may know it). */
  get introduced (): boolean {
    return this.endpointId !== ''
  }
}
