import type { MuxStream } from './stream.js'

/** The first 4 bytes of a round-trip probe's PING payload ("BDP?"); keep-alive PINGs carry a time. */
const PROBE_MARK = 0x4244503f
/**
 * A probe measures only once this much has arrived since the last one: a
 * window grows when a stream receives half of it within a round trip, which
 * light request/response traffic never does (a probe per request and its
 * answer doubled the messages of a small request).
 */
const PROBE_AFTER = 64 * 1024

export interface WindowTuningOptions {
  /** Receive window all streams of the link may grow by together, beyond their initial windows. */
  windowBudget: number
  /** How often a grown window is reviewed (reviewUnused). */
  windowReviewMs: number
}

/**
 * One link's share of receive-window auto-tuning (the rules for one stream
 * are in MuxStream): the round-trip probe, the budget the streams grow
 * from, and the review that takes unused growth back.
 *
 * Probe: while data arrives, one PING at a time with a probe payload; the
 * bytes each stream received until its answer are that stream's sample
 * (MuxStream.roundTripSample), which may grow its window from the budget.
 *
 * Review: a stream that grew and then went quiet would keep its growth
 * until it closed — a kept-alive HTTP connection idle in a pool, an
 * interactive session after a download — and a few of them would hold the
 * whole budget, so no later bulk stream on the link could grow past its
 * initial window. So every `windowReviewMs` each grown stream is looked at:
 * one that took in less than a quarter of its window since the last look
 * gives half of it back (MuxStream.shrinkUnused), an idle one all its
 * growth. A stream keeps a window of at least four times what it moves per
 * review period, which covers its bandwidth-delay product at any round-trip
 * time up to three periods. (TCP does the like for an idle or
 * application-limited sender: RFC 7661.)
 */
export class WindowTuner {
  private readonly opts: WindowTuningOptions
  private readonly sendProbe: (payload: Buffer) => void
  /** Receive window the streams may still grow by (windowBudget less what they took). */
  private free: number
  /** The probe in flight: its PING payload and the bytes each stream received since. */
  private probe: { payload: Buffer, counts: Map<MuxStream, number> } | null = null
  private probeSeq = 0
  /** Bytes received since the last probe ended: a probe starts only after PROBE_AFTER of them. */
  private sinceProbe = 0
  /** Streams grown past their initial window: bytes received since their last review, and when that was. */
  private readonly grown = new Map<MuxStream, { bytes: number, since: number }>()
  private lastReview = 0

  constructor (options: WindowTuningOptions, sendProbe: (payload: Buffer) => void) {
    this.opts = options
    this.sendProbe = sendProbe
    this.free = options.windowBudget
  }

  get budgetFree (): number {
    return this.free
  }

  /** `bytes` arrived for `stream` at `now` (ms). */
  received (stream: MuxStream, bytes: number, now: number): void {
    const use = this.grown.get(stream)
    if (use !== undefined) use.bytes += bytes
    // Reviewed before a probe is considered: the budget a quiet stream gives back is what lets this one grow.
    if (this.grown.size > 0 && now - this.lastReview >= this.opts.windowReviewMs / 4) this.reviewUnused(now)
    if (this.probe !== null) {
      this.probe.counts.set(stream, (this.probe.counts.get(stream) ?? 0) + bytes)
      return
    }
    this.sinceProbe += bytes
    if (this.free <= 0 || this.sinceProbe < PROBE_AFTER) return
    this.sinceProbe = 0
    const payload = Buffer.alloc(8)
    payload.writeUInt32BE(PROBE_MARK, 0)
    payload.writeUInt32BE(++this.probeSeq >>> 0, 4)
    this.probe = { payload, counts: new Map() }
    this.sendProbe(payload)
  }

  /** A PONG: true when it answered our probe (each stream gets its sample), false for any other. */
  answer (payload: Buffer): boolean {
    const probe = this.probe
    if (probe === null || !payload.equals(probe.payload)) return false
    this.probe = null
    for (const [stream, bytes] of probe.counts) stream.roundTripSample(bytes)
    return true
  }

  /** Up to `want` more bytes of window for `stream` from the budget: how many it may have. */
  grow (stream: MuxStream, want: number, now: number): number {
    const grant = Math.max(0, Math.min(want, this.free))
    this.free -= grant
    if (grant > 0 && !this.grown.has(stream)) this.grown.set(stream, { bytes: 0, since: now })
    return grant
  }

  /** Window given back to the budget. */
  release (bytes: number): void {
    this.free = Math.min(this.opts.windowBudget, this.free + bytes)
  }

  /** The stream is gone (its growth came back through release()). */
  closed (stream: MuxStream): void {
    this.grown.delete(stream)
  }

  /** Each grown stream whose review period has passed: less than a quarter of its window taken in since, and it gives some back. */
  private reviewUnused (now: number): void {
    this.lastReview = now
    for (const [stream, use] of this.grown) {
      if (now - use.since < this.opts.windowReviewMs) continue
      if (use.bytes < stream.receiveWindow / 4) stream.shrinkUnused(use.bytes === 0)
      if (!stream.isGrown) {
        this.grown.delete(stream)
        continue
      }
      use.bytes = 0
      use.since = now
    }
  }
}
