import type { Logger } from 'pino'
import { AGENT_MAX_PAYLOAD, MAX_U32, type Frame } from './frame.js'
import { RelaygateError } from './errors.js'
import type { MuxStream } from './stream.js'

/** A mux's options: what callers may set, the defaults, and the checks (mux.ts). */
export interface MuxOptions {
  /** The dialing side opens odd stream ids, the accepting side even ones. */
  role: 'dialer' | 'listener'
  /** Largest payload accepted from the peer. */
  maxPayload?: number
  /** Largest DATA payload we send. */
  chunkSize?: number
  /** Initial credit of every stream, each way. */
  initialWindow?: number
  /** Largest receive window a stream grows to (auto-tuning, stream.ts). */
  maxWindow?: number
  /** Receive window all streams of the link may grow by together, beyond their initial windows. */
  windowBudget?: number
  /**
   * Receive window a new stream gets at once beyond initialWindow, from the
   * link's budget (the peer hears it as credit right after the OPEN): a
   * transfer across a WAN starts nearer its bandwidth-delay product instead
   * of ramping up from initialWindow for several round trips. Unused, it
   * goes back at the review. 0: none.
   */
  openWindowBoost?: number
  /**
   * How often a grown receive window is reviewed: one that took in less
   * than a quarter of itself since the last review halves, an idle one goes
   * back to the initial window (window-tuning.ts).
   */
  windowReviewMs?: number
  /** Streams open at once (both directions together). */
  maxStreams?: number
  /** Stop handing data to the transport above this many buffered bytes. */
  highWaterMark?: number
  /** Above this many buffered bytes the peer is not reading: destroy at once. */
  maxBufferedBytes?: number
  /** A peer that stays above the high-water mark this long is disconnected. */
  drainTimeoutMs?: number
  /** Send a PING after this long without traffic from the peer; 0 turns pings off. */
  keepAliveMs?: number
  /**
   * Destroy the link after this long without any frame from the peer; 0 turns
   * it off. Defaults to twice `keepAliveMs` (so an unanswered ping ends the
   * link), or 0 when pings are off.
   */
  livenessTimeoutMs?: number
  /** How long a graceful close waits for open streams. */
  closeTimeoutMs?: number
  logger?: Logger
  /** Session-level frames other than PING, GOAWAY and stream frames. */
  onFrame?: (frame: Frame) => void
  /** The peer opened a stream. */
  onStream?: (stream: MuxStream) => void
  /** The peer announced a go-away. */
  onGoAway?: (code: number, reason: string) => void
  /** The link is gone; `error` is set unless it was a clean close. */
  onClose?: (info: { code: number, reason: string, error?: RelaygateError }) => void
}

const defaults = {
  maxPayload: AGENT_MAX_PAYLOAD,
  chunkSize: 60 * 1024,
  initialWindow: 512 * 1024,
  maxWindow: 16 * 1024 * 1024,
  windowBudget: 64 * 1024 * 1024,
  windowReviewMs: 1000,
  openWindowBoost: 0,
  maxStreams: 256,
  highWaterMark: 128 * 1024,
  maxBufferedBytes: 8 * 1024 * 1024,
  drainTimeoutMs: 30_000,
  keepAliveMs: 0,
  livenessTimeoutMs: 0,
  closeTimeoutMs: 5_000
}

export type ResolvedOptions = typeof defaults & MuxOptions

/**
 * Defaults, then the given options (an option given as `undefined` keeps its
 * default), then checks: a bad value throws RG_ERR_CONFIG naming the field.
 */
export function verifyMuxOptions (options: MuxOptions): ResolvedOptions {
  const opts: Record<string, unknown> = { ...defaults }
  for (const [key, value] of Object.entries(options)) if (value !== undefined) opts[key] = value
  const resolved = opts as unknown as ResolvedOptions
  if (options.livenessTimeoutMs === undefined) resolved.livenessTimeoutMs = 2 * resolved.keepAliveMs
  if (resolved.role !== 'dialer' && resolved.role !== 'listener') {
    throw new RelaygateError('RG_ERR_CONFIG', `mux option role must be 'dialer' or 'listener', got ${String(resolved.role)}`)
  }
  const check = (field: keyof typeof defaults, min: number, max = Number.MAX_SAFE_INTEGER): void => {
    const value = resolved[field]
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new RelaygateError('RG_ERR_CONFIG', `mux option ${field} must be an integer in ${min}..${max}, got ${String(value)}`)
    }
  }
  check('maxPayload', 1, MAX_U32)
  check('chunkSize', 1, MAX_U32)
  check('initialWindow', 1, MAX_U32)
  check('maxWindow', resolved.initialWindow, MAX_U32)
  check('windowBudget', 0)
  check('windowReviewMs', 1)
  check('openWindowBoost', 0)
  check('maxStreams', 1)
  check('highWaterMark', 1)
  check('maxBufferedBytes', resolved.highWaterMark)
  check('drainTimeoutMs', 1)
  check('keepAliveMs', 0)
  check('livenessTimeoutMs', 0)
  check('closeTimeoutMs', 1)
  return resolved
}
