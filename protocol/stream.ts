import { Duplex } from 'node:stream'
import { RelaygateError } from './errors.js'

const noop = (): void => {}

/** What a stream needs from its mux; the mux implements it. */
export interface StreamHost {
  streamReady: (stream: MuxStream) => void
  streamFin: (stream: MuxStream) => void
  streamReset: (stream: MuxStream, err: RelaygateError) => void
  streamCredit: (stream: MuxStream, delta: number) => void
  sendDataNow: (stream: MuxStream, payload: Buffer, room?: boolean) => boolean
  streamClosed: (stream: MuxStream) => void
  /** Up to `want` more bytes of receive window from the link's budget for this stream: how many it may have. */
  growWindow: (stream: MuxStream, want: number) => number
  /** Receive window given back to the link's budget. */
  releaseWindow: (bytes: number) => void
  /** Bytes arrived for this stream (for the mux's round-trip probe). */
  dataReceived: (stream: MuxStream, bytes: number) => void
}

/**
 * One flow-controlled stream of a mux, as a Node Duplex.
 *
 * Sending: writes wait for credit (the peer's window); the mux pulls chunks
 * from ready streams in turn, so a stalled stream never blocks another.
 * Receiving: the peer may send at most `window` bytes we have not consumed;
 * credit goes back (WINDOW frames) as the reader consumes.
 *
 * The receive window sizes itself to the path (auto-tuning, as gRPC's BDP
 * estimation and QUIC implementations do): the mux measures how many bytes
 * each stream received during one round trip (a PING and its answer); a
 * stream that received most of its window in that time while our reader
 * kept up is limited by the window, not by the reader, so the window
 * doubles, up to `maxWindow` and within the link's budget. At a round-trip
 * time of 150 ms a fixed 512 KiB window caps a stream at 3.4 MB/s; a window
 * that grows to the bandwidth-delay product does not. A reader that falls
 * behind halves it again (its memory goes back to the budget), and a reader
 * that stops gets no more credit at all: a stalled stream still stalls only
 * itself. A stream that stops using a grown window (idle, or moving far less
 * than it) gives it back at the link's review (window-tuning.ts).
 */
export class MuxStream extends Duplex {
  readonly id: number
  /** Metadata given by the opener. */
  readonly meta: Buffer
  /** Bytes we may still send. */
  sendWindow: number
  private readonly host: StreamHost
  /** Receive window now: between the initial window and maxWindow. */
  private window: number
  private readonly initialWindow: number
  private readonly maxWindow: number
  /** Bytes the peer may still send before we grant more. */
  private recvAvail: number
  private out: Buffer | null = null
  private outCb: ((err?: Error | null) => void) | null = null
  private remoteFin = false
  private localFin = false
  private reset = false
  private grantScheduled = false
  /** Where incoming data may go straight to (forwardTo). */
  private forward: MuxStream | null = null
  /** Bytes received that went straight on (forwardTo). */
  forwardedBytes = 0

  constructor (host: StreamHost, id: number, meta: Buffer, window: number, maxWindow = window) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 })
    this.host = host
    this.id = id
    this.meta = meta
    this.window = window
    this.initialWindow = window
    this.maxWindow = Math.max(window, maxWindow)
    this.sendWindow = window
    this.recvAvail = window
    this.once('close', () => {
      host.releaseWindow(this.window - this.initialWindow)
      host.streamClosed(this)
    })
    // A reset from the network must never crash the process: without this,
    // an 'error' on a stream nobody listens to yet would be thrown. Users
    // still see errors through their own listeners (and pipe/pipeline).
    this.on('error', noop)
  }

  /** Bytes waiting to be sent (at most one write's worth). */
  get pendingBytes (): number {
    return this.out === null ? 0 : this.out.length
  }

  /** Called by the mux: takes up to `max` bytes of pending output within the window. */
  takeChunk (max: number): Buffer | null {
    if (this.out === null || this.sendWindow <= 0) return null
    const n = Math.min(max, this.sendWindow, this.out.length)
    const chunk = this.out.subarray(0, n)
    this.sendWindow -= n
    if (n === this.out.length) {
      const cb = this.outCb
      this.out = null
      this.outCb = null
      if (cb !== null) process.nextTick(cb)
    } else {
      this.out = this.out.subarray(n)
    }
    return chunk
  }

  /**
   * Cut-through for a relay joining two streams (spliceStreams): data that
   * arrives while nothing is queued on either side is framed onto `to`'s
   * link at once, instead of passing through both streams' buffers. The
   * bytes then bypass this stream's 'data' events, so only the splice may
   * read it; the pipe carries whatever cannot go at once, and the end.
   */
  forwardTo (to: MuxStream): void {
    this.forward = to
  }

  /**
   * Sends `data` now if it overtakes nothing (no write queued, not ended)
   * and the peer's credit covers it; false leaves everything as it was.
   */
  sendNow (data: Buffer, room = false): boolean {
    if (this.destroyed || this.writableEnded || this.out !== null || this.writableLength > 0 || this.sendWindow < data.length) return false
    if (!this.host.sendDataNow(this, data, room)) return false
    this.sendWindow -= data.length
    return true
  }

  /**
   * Called by the mux with data from the peer: true when it went straight
   * on (see forwardTo) and is accounted as read; false to deliver it the
   * usual way. `data` may be valid only during the call; with `room`, it
   * stays valid and the HEADER_SIZE bytes before it may be overwritten.
   */
  tryForward (data: Buffer, room = false): boolean {
    const to = this.forward
    if (to === null || this.remoteFin || this.destroyed || this.readableLength > 0 || data.length === 0) return false
    if (data.length > this.recvAvail) {
      throw new RelaygateError('RG_ERR_FLOW_CONTROL', `stream ${this.id}: ${data.length} bytes with ${this.recvAvail} of credit`)
    }
    if (!to.sendNow(data, room)) return false
    this.forwardedBytes += data.length
    this.recvAvail -= data.length
    this.host.dataReceived(this, data.length)
    this.maybeGrant(false)
    return true
  }

  /** Called by the mux when the peer grants credit. */
  addCredit (delta: number): void {
    this.sendWindow += delta
    if (this.sendWindow > 0xffffffff) {
      throw new RelaygateError('RG_ERR_FLOW_CONTROL', `stream ${this.id} window overflow`)
    }
    if (this.out !== null) this.host.streamReady(this)
  }

  /** Called by the mux with bytes from the peer. */
  receive (data: Buffer, fin: boolean): void {
    if (this.remoteFin) throw new RelaygateError('RG_ERR_PROTOCOL', `data after FIN on stream ${this.id}`)
    if (data.length > this.recvAvail) {
      throw new RelaygateError('RG_ERR_FLOW_CONTROL', `stream ${this.id}: ${data.length} bytes with ${this.recvAvail} of credit`)
    }
    if (!fin && this.tryForward(data)) return
    this.recvAvail -= data.length
    if (data.length > 0) this.host.dataReceived(this, data.length)
    if (data.length > 0 && !this.destroyed) this.push(data)
    if (fin) {
      this.remoteFin = true
      if (!this.destroyed) this.push(null)
    }
    this.maybeGrant(false)
  }

  /** Called by the mux when the peer reset the stream. */
  remoteReset (err: RelaygateError): void {
    this.reset = true
    this.destroy(err)
  }

  /** The receive window now (auto-tuned; see the class comment). */
  get receiveWindow (): number {
    return this.window
  }

  /** Whether the receive window is above the initial one (it holds some of the link's budget). */
  get isGrown (): boolean {
    return this.window > this.initialWindow
  }

  /**
   * Called by the mux when this grown window took in less than a quarter of
   * itself in a review period (window-tuning.ts): it halves, not below the
   * initial window, or goes back to it (`idle`: nothing came; or the peer
   * ended its side). The bytes go back to the link's budget. As when a
   * lagging reader's window halves, the peer keeps the credit it holds and
   * gets no more until the stream is under the smaller window.
   */
  shrinkUnused (idle: boolean): void {
    if (this.destroyed || this.window <= this.initialWindow) return
    // After the peer's FIN nothing more can come: the window is moot.
    this.shrinkWindow(idle || this.remoteFin)
  }

  /**
   * The window halves (`all`: goes back to the initial one), never below the
   * initial window; the bytes go back to the link's budget. The peer keeps
   * the credit it holds and gets no more until the stream is under the
   * smaller window (maybeGrant).
   */
  private shrinkWindow (all: boolean): void {
    const extra = this.window - this.initialWindow
    const shrink = all ? extra : Math.min(Math.floor(this.window / 2), extra)
    this.window -= shrink
    this.host.releaseWindow(shrink)
  }

  /**
   * Returns consumed bytes to the peer as credit: at a quarter of a window,
   * or (`eager`, after a read) whatever was consumed once the peer holds
   * less than three quarters of a window of credit, so a reader that drained
   * the buffer never waits on credit it has not asked for. A light
   * request/response stream (the peer's credit stays high) sends no WINDOW
   * frame at all until a quarter of a window was consumed.
   *
   * Why a quarter: credit comes back one grant's worth after the bytes it
   * covers arrived, so a window W carries at most W less a grant per round
   * trip. With grants at half a window a stream kept its window full yet
   * moved W/2 per round trip (16 MiB at 150 ms: 47–54 MB/s, P10); at a
   * quarter it moves 3W/4, for one WINDOW frame per quarter window.
   */
  private maybeGrant (eager: boolean): void {
    if (this.remoteFin || this.destroyed) return
    const consumed = this.window - this.recvAvail - this.readableLength
    if (consumed <= 0) return
    if ((eager && this.recvAvail < this.window * 3 / 4) || consumed >= this.window / 4) {
      this.recvAvail += consumed
      this.host.streamCredit(this, consumed)
    }
  }

  /**
   * Called by the mux with the bytes this stream received during one round
   * trip: half a window or more (a window-limited stream moves W less a
   * grant per round trip, maybeGrant), with our reader keeping up, means
   * the window limits the stream; it doubles and the peer gets the extra
   * credit now. A reader that stayed behind for the whole round trip halves it.
   */
  roundTripSample (bytes: number): void {
    if (this.remoteFin || this.destroyed) return
    if (this.readableLength > this.window / 2 && bytes < this.window / 4 && this.window > this.initialWindow) {
      // The reader is behind for a whole round trip (not a burst): the window halves.
      this.shrinkWindow(false)
      return
    }
    if (this.window >= this.maxWindow || bytes < this.window / 2 || this.readableLength > this.window / 4) return
    // Three quarters of a window or more in one round trip: the window holds the stream back by a wide margin, so it quadruples (a fresh
    // stream reaches 16 MiB from 512 KiB in three round trips, not five); half of it: it doubles.
    this.enlargeWindow(this.window * (bytes >= this.window * 3 / 4 ? 3 : 1))
  }

  /**
   * Up to `want` more receive window at once, from the link's budget and
   * within maxWindow; the peer gets the credit now. Returns the bytes added.
   * (A new stream's boost, Mux openWindowBoost; a round-trip sample's growth.)
   */
  enlargeWindow (want: number): number {
    if (this.remoteFin || this.destroyed) return 0
    const grow = this.host.growWindow(this, Math.min(want, this.maxWindow - this.window))
    if (grow <= 0) return 0
    this.window += grow
    this.recvAvail += grow
    this.host.streamCredit(this, grow)
    return grow
  }

  /**
   * Readable.read() calls _read *before* it takes the bytes out of the
   * buffer, and calls it again only after a push(). Counting the consumed
   * bytes here would see none, grant nothing, and a reader that drained a
   * full window would wait forever. So the grant is counted once the
   * current read (or the flowing loop) is done.
   */
  override _read (): void {
    if (this.grantScheduled) return
    this.grantScheduled = true
    process.nextTick(() => {
      this.grantScheduled = false
      this.maybeGrant(true)
    })
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (chunk.length === 0) {
      cb()
      return
    }
    this.out = chunk
    this.outCb = cb
    this.host.streamReady(this)
  }

  override _final (cb: (err?: Error | null) => void): void {
    this.localFin = true
    this.host.streamFin(this)
    cb()
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    const cleanlyDone = this.localFin && this.remoteFin
    if (!this.reset && !cleanlyDone) {
      this.reset = true
      const coded = err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_STREAM_RESET', err?.message ?? 'stream destroyed')
      this.host.streamReset(this, coded)
    }
    this.out = null
    this.outCb = null
    cb(err)
  }
}
