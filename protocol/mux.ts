import { FrameType, FrameFlag, HEADER_SIZE, type Frame } from './frame.js'
import { encodeFrame, encodeFrameInto, encodeHeaderInto, encodeCodeReason, encodeWindow } from './encode.js'
import { claimFrameRoom } from './frame-room.js'
import { FrameDecoder, decodeCodeReason, decodeWindow } from './decode.js'
import { RelaygateError, codeForClose, toRelaygateError } from './errors.js'
import { MuxStream, type StreamHost } from './stream.js'
import type { Transport } from './transport.js'
import { verifyMuxOptions, type MuxOptions, type ResolvedOptions } from './mux-options.js'
import { WindowTuner } from './window-tuning.js'

export { verifyMuxOptions, type MuxOptions } from './mux-options.js'

/**
 * Frames over one transport: session-level messages go straight out
 * (never behind bulk data); stream data goes out in chunks, round-robin over
 * the streams that have both data and credit, while the transport's buffer is
 * below the high-water mark.
 */
export class Mux implements StreamHost {
  readonly transport: Transport
  private readonly opts: ResolvedOptions
  private readonly decoder: FrameDecoder
  private readonly streams = new Map<number, MuxStream>()
  private ready: MuxStream[] = []
  private readonly readySet = new Set<MuxStream>()
  private nextId: number
  /** Receive-window auto-tuning: the round-trip probe, the budget, the review of unused growth. */
  private readonly tuning: WindowTuner
  private localGoAway = false
  private remoteGoAway = false
  private closedInfo: { code: number, reason: string, error?: RelaygateError } | null = null
  private closePromise: Promise<void> | null = null
  private resolveClosed!: () => void
  private readonly closedPromise: Promise<void>
  private lastReceived = Date.now()
  /** Runs while the transport's buffer is above the high-water mark. */
  private drainTimer: NodeJS.Timeout | null = null
  /** The transport's last send() said it is above its own high-water mark: it will emit drain. */
  private transportFull = false
  /** Re-checks the buffer when ours is full but the transport's is not (it will not emit drain). */
  private pollTimer: NodeJS.Timeout | null = null
  /** Reused for DATA frames when the transport copies on send (allocated on first use). */
  private scratch: Buffer | null = null
  private keepAliveTimer: NodeJS.Timeout | null = null
  private pinging = false
  bytesIn = 0
  bytesOut = 0

  constructor (transport: Transport, options: MuxOptions) {
    this.transport = transport
    this.opts = verifyMuxOptions(options)
    this.tuning = new WindowTuner(this.opts, payload => this.sendFrame(FrameType.PING, 0, payload))
    this.decoder = new FrameDecoder(this.opts.maxPayload)
    this.nextId = this.opts.role === 'dialer' ? 1 : 2
    this.closedPromise = new Promise(resolve => { this.resolveClosed = resolve })
    transport.attach({
      message: (data, ephemeral) => this.onMessage(data, ephemeral === true),
      drain: () => {
        // The peer read something: whatever the buffer holds now, it is not stuck.
        this.transportFull = false
        this.clearDrainTimer()
        this.pump()
      },
      close: (code, reason) => this.onTransportClose(code, reason)
    })
    const { keepAliveMs, livenessTimeoutMs } = this.opts
    if (keepAliveMs > 0 || livenessTimeoutMs > 0) {
      const tick = Math.max(50, Math.min(keepAliveMs || livenessTimeoutMs, livenessTimeoutMs || keepAliveMs) / 2)
      this.keepAliveTimer = setInterval(() => this.checkLiveness(), tick)
      this.keepAliveTimer.unref()
    }
  }

  get closed (): boolean {
    return this.closedInfo !== null
  }

  get streamCount (): number {
    return this.streams.size
  }

  /** Resolves once the transport is gone. */
  whenClosed (): Promise<void> {
    return this.closedPromise
  }

  /** Sends a whole session-level frame now, ahead of any queued stream data. */
  send (frame: Buffer): void {
    if (this.closedInfo !== null) return
    this.bytesOut += frame.length
    if (!this.transport.send(frame)) this.transportFull = true
    this.checkBuffered()
  }

  sendFrame (type: Frame['type'], flags: number, payload?: Buffer): void {
    this.send(encodeFrame(type, flags, 0, payload))
  }

  /** Opens a stream to the peer; `meta` tells the peer what it is for. */
  openStream (meta: Buffer): MuxStream {
    if (this.closedInfo !== null) throw new RelaygateError('RG_ERR_CLOSED', 'link is closed')
    if (this.remoteGoAway || this.localGoAway) throw new RelaygateError('RG_ERR_GOING_AWAY', 'link is going away')
    if (this.streams.size >= this.opts.maxStreams) throw new RelaygateError('RG_ERR_TOO_MANY_STREAMS', `at most ${this.opts.maxStreams} streams`)
    const id = this.nextId
    if (id > 0xffffffff) throw new RelaygateError('RG_ERR_TOO_MANY_STREAMS', 'stream ids exhausted')
    this.nextId += 2
    const stream = new MuxStream(this, id, meta, this.opts.initialWindow, this.opts.maxWindow)
    this.streams.set(id, stream)
    this.send(encodeFrame(FrameType.OPEN, 0, id, meta))
    if (this.opts.openWindowBoost > 0) stream.enlargeWindow(this.opts.openWindowBoost)
    return stream
  }

  /** Tells the peer we take no new streams. */
  goAway (code = 1000, reason = 'going away'): void {
    if (this.localGoAway || this.closedInfo !== null) return
    this.localGoAway = true
    this.send(encodeFrame(FrameType.GOAWAY, 0, 0, encodeCodeReason(code, reason)))
  }

  /** Graceful: go-away, let open streams finish (bounded), then close. */
  close (code = 1000, reason = 'closing'): Promise<void> {
    if (this.closePromise !== null) return this.closePromise
    this.closePromise = (async () => {
      if (this.closedInfo !== null) return
      this.goAway(code === 1000 ? 1000 : code, reason)
      if (this.streams.size > 0) {
        let timer: NodeJS.Timeout | undefined
        const allDone = new Promise<void>(resolve => {
          const check = (): void => { if (this.streams.size === 0 || this.closedInfo !== null) resolve() }
          for (const s of this.streams.values()) s.once('close', check)
          timer = setTimeout(resolve, this.opts.closeTimeoutMs)
        })
        try { await allDone } finally { clearTimeout(timer) }
      }
      if (this.closedInfo === null) this.transport.close(code, reason.slice(0, 120))
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([this.closedPromise, new Promise(resolve => { timer = setTimeout(resolve, this.opts.closeTimeoutMs) })])
      } finally {
        clearTimeout(timer)
      }
      if (this.closedInfo === null) {
        this.transport.terminate()
        this.onTransportClose(1006, 'close timed out')
      }
    })()
    return this.closePromise
  }

  /** Immediate: drops every stream and the transport. Closes with the error's close code. */
  destroy (err?: unknown): Promise<void> {
    if (this.closedInfo === null) {
      const coded = err === undefined ? undefined : toRelaygateError(err)
      const code = coded !== undefined && coded.closeCode !== 0 ? coded.closeCode : (coded === undefined ? 1000 : 4019)
      const reason = coded?.message ?? 'closed'
      try {
        this.transport.close(code, reason.slice(0, 120))
      } catch {
        this.transport.terminate()
      }
      // The transport may have reported the close synchronously already.
      if (this.closedInfo === null) this.finish(code, reason, coded)
    }
    return this.closedPromise
  }

  // ---- StreamHost ----

  streamReady (stream: MuxStream): void {
    if (!this.readySet.has(stream)) {
      this.readySet.add(stream)
      this.ready.push(stream)
    }
    this.pump()
  }

  streamFin (stream: MuxStream): void {
    this.send(encodeFrame(FrameType.DATA, FrameFlag.FIN, stream.id))
  }

  streamReset (stream: MuxStream, err: RelaygateError): void {
    this.send(encodeFrame(FrameType.RESET, 0, stream.id, encodeCodeReason(err.closeCode || 4017, err.message)))
  }

  streamCredit (stream: MuxStream, delta: number): void {
    this.send(encodeFrame(FrameType.WINDOW, 0, stream.id, encodeWindow(delta)))
  }

  /**
   * Frames `payload` for `stream` at once when nothing waits for the
   * transport (no stream queued, buffer below the high-water mark); false
   * otherwise. The stream has checked its own queue and credit.
   */
  sendDataNow (stream: MuxStream, payload: Buffer, room = false): boolean {
    if (this.closedInfo !== null || this.ready.length > 0 || this.transport.bufferedAmount >= this.opts.highWaterMark) return false
    const { chunkSize } = this.opts
    if (payload.length <= chunkSize) {
      this.sendData(stream.id, payload, room)
    } else {
      for (let off = 0; off < payload.length; off += chunkSize) this.sendData(stream.id, payload.subarray(off, off + chunkSize))
    }
    this.checkBuffered()
    return true
  }

  /** Bytes arrived for a stream (window auto-tuning: the round-trip probe, the review of unused growth). */
  dataReceived (stream: MuxStream, bytes: number): void {
    if (this.closedInfo !== null) return
    this.tuning.received(stream, bytes, this.lastReceived)
  }

  growWindow (stream: MuxStream, want: number): number {
    return this.tuning.grow(stream, want, Date.now())
  }

  releaseWindow (bytes: number): void {
    this.tuning.release(bytes)
  }

  /** Receive window the streams of this link may still grow by. */
  get windowBudgetFree (): number {
    return this.tuning.budgetFree
  }

  streamClosed (stream: MuxStream): void {
    this.streams.delete(stream.id)
    this.tuning.closed(stream)
    if (this.readySet.delete(stream)) this.ready = this.ready.filter(s => s !== stream)
  }

  // ---- internals ----

  /**
   * One DATA frame, without FIN, to the transport. With `room` (or a chunk
   * from allocFramed), the HEADER_SIZE bytes before the chunk are ours: the
   * header goes there and the frame is sent without a copy.
   */
  private sendData (id: number, chunk: Buffer, room = false): void {
    let frame: Buffer
    if (room || claimFrameRoom(chunk)) {
      frame = Buffer.from(chunk.buffer, chunk.byteOffset - HEADER_SIZE, HEADER_SIZE + chunk.length)
      encodeHeaderInto(frame, FrameType.DATA, 0, id, chunk.length)
    } else if (this.transport.copiesOnSend === true) {
      // One buffer for every DATA frame: the transport copies it in send().
      // Per-frame buffers made the relay and the agent run a full GC every
      // few megabytes of tunnel traffic (V8 counts them as external memory).
      this.scratch ??= Buffer.allocUnsafe(HEADER_SIZE + this.opts.chunkSize)
      frame = this.scratch.subarray(0, encodeFrameInto(this.scratch, FrameType.DATA, 0, id, chunk))
    } else {
      frame = encodeFrame(FrameType.DATA, 0, id, chunk)
    }
    this.bytesOut += frame.length
    if (!this.transport.send(frame)) this.transportFull = true
  }

  private pump (): void {
    if (this.closedInfo !== null) return
    // Note a buffer that went down since the last look (this stops the drain timer).
    this.checkBuffered()
    if (this.closedInfo !== null) return
    const { highWaterMark, chunkSize } = this.opts
    while (this.ready.length > 0 && this.transport.bufferedAmount < highWaterMark) {
      const stream = this.ready.shift()!
      this.readySet.delete(stream)
      if (stream.destroyed) continue
      const chunk = stream.takeChunk(chunkSize)
      if (chunk === null) continue
      this.sendData(stream.id, chunk)
      if (stream.pendingBytes > 0 && stream.sendWindow > 0) {
        this.readySet.add(stream)
        this.ready.push(stream)
      }
    }
    // Our high-water mark stopped us below the transport's: no drain will come.
    if (this.ready.length > 0 && !this.transportFull && this.pollTimer === null) {
      this.pollTimer = setTimeout(() => { this.pollTimer = null; this.pump() }, 1)
    }
    this.checkBuffered()
  }

  /**
   * Above maxBufferedBytes: destroy now. Above the high-water mark: start the
   * drain timer (if not running); below it: stop the timer.
   */
  private checkBuffered (): void {
    if (this.closedInfo !== null) return
    const buffered = this.transport.bufferedAmount
    if (buffered > this.opts.maxBufferedBytes) {
      void this.destroy(new RelaygateError('RG_ERR_DRAIN_TIMEOUT', `peer not reading: ${buffered} bytes buffered`))
      return
    }
    if (buffered < this.opts.highWaterMark) {
      this.clearDrainTimer()
    } else if (this.drainTimer === null) {
      this.drainTimer = setTimeout(() => this.onDrainTimer(), this.opts.drainTimeoutMs)
      this.drainTimer.unref()
    }
  }

  private clearDrainTimer (): void {
    if (this.drainTimer !== null) clearTimeout(this.drainTimer)
    this.drainTimer = null
  }

  private onDrainTimer (): void {
    this.drainTimer = null
    if (this.closedInfo !== null) return
    const buffered = this.transport.bufferedAmount
    if (buffered >= this.opts.highWaterMark) {
      void this.destroy(new RelaygateError('RG_ERR_DRAIN_TIMEOUT', `peer did not read for ${this.opts.drainTimeoutMs} ms (${buffered} bytes buffered)`))
      return
    }
    // The buffer went down without a drain event: carry on sending.
    this.pump()
  }

  private checkLiveness (): void {
    if (this.closedInfo !== null) return
    const now = Date.now()
    const { keepAliveMs, livenessTimeoutMs } = this.opts
    const idle = now - this.lastReceived
    if (livenessTimeoutMs > 0 && idle > livenessTimeoutMs) {
      void this.destroy(new RelaygateError('RG_ERR_LIVENESS', `no frame from peer for ${idle} ms`))
      return
    }
    if (keepAliveMs > 0 && idle >= keepAliveMs && !this.pinging) {
      this.pinging = true
      const payload = Buffer.alloc(8)
      payload.writeDoubleBE(now, 0)
      this.sendFrame(FrameType.PING, 0, payload)
    }
  }

  private onMessage (data: Buffer, ephemeral: boolean): void {
    if (this.closedInfo !== null) return
    this.bytesIn += data.length
    this.lastReceived = Date.now()
    this.pinging = false
    try {
      // A message we may keep has its own frame header in front of its
      // payload: a cut-through reuses that room for the next link's header.
      if (this.forwardAtOnce(data, !ephemeral)) return
      if (ephemeral) data = Buffer.copyBytesFrom(data)
      for (const frame of this.decoder.push(data)) {
        this.dispatch(frame)
        if (this.closedInfo !== null) return
      }
      // Every sender puts whole frames in a message: a message that ends
      // inside one is truncated (waiting for the rest let a peer hold the
      // link until a timeout).
      if (this.decoder.pending !== 0) throw new RelaygateError('RG_ERR_PROTOCOL', `a message ended inside a frame (${this.decoder.pending} bytes of it)`)
    } catch (err) {
      const coded = toRelaygateError(err, 'RG_ERR_PROTOCOL')
      this.opts.logger?.warn({ err: { code: coded.code, message: coded.message }, remote: this.transport.remote }, 'closing link on bad input')
      void this.destroy(coded)
    }
  }

  private dispatch (frame: Frame): void {
    switch (frame.type) {
      case FrameType.PING:
        if (frame.payload.length !== 8) throw new RelaygateError('RG_ERR_PROTOCOL', 'ping payload must be 8 bytes')
        if ((frame.flags & FrameFlag.ACK) === 0) this.sendFrame(FrameType.PING, FrameFlag.ACK, frame.payload)
        else this.tuning.answer(frame.payload)
        return
      case FrameType.GOAWAY: {
        const { code, reason } = decodeCodeReason(frame.payload)
        this.remoteGoAway = true
        this.opts.onGoAway?.(code, reason)
        return
      }
      case FrameType.OPEN:
        this.onOpen(frame)
        return
      case FrameType.DATA: {
        const stream = this.streams.get(frame.streamId)
        if (stream === undefined) {
          if (!this.isKnownId(frame.streamId)) throw new RelaygateError('RG_ERR_PROTOCOL', `data for stream ${frame.streamId} never opened`)
          return // late data for a stream we reset: drop it
        }
        stream.receive(frame.payload, (frame.flags & FrameFlag.FIN) !== 0)
        return
      }
      case FrameType.WINDOW: {
        const delta = decodeWindow(frame.payload)
        this.streams.get(frame.streamId)?.addCredit(delta)
        return
      }
      case FrameType.RESET: {
        const { code, reason } = decodeCodeReason(frame.payload)
        const stream = this.streams.get(frame.streamId)
        if (stream !== undefined) stream.remoteReset(new RelaygateError(codeForClose(code) ?? 'RG_ERR_STREAM_RESET', reason || undefined))
        return
      }
      default:
        if (frame.streamId !== 0) throw new RelaygateError('RG_ERR_PROTOCOL', `session frame 0x${frame.type.toString(16)} on stream ${frame.streamId}`)
        this.opts.onFrame?.(frame)
    }
  }

  /**
   * A message that is exactly one DATA frame (no FIN) for a stream with a
   * cut-through (MuxStream.forwardTo) goes straight to the other link when
   * it can, without a copy of its own. False: decode it the usual way.
   * `owned`: the message is ours to keep, so its header bytes may be reused.
   */
  private forwardAtOnce (data: Buffer, owned: boolean): boolean {
    if (this.decoder.pending !== 0 || data.length <= HEADER_SIZE || data[0] !== FrameType.DATA || data[1] !== 0) return false
    const length = data.readUInt32BE(6)
    if (length !== data.length - HEADER_SIZE || length > this.opts.maxPayload) return false
    const stream = this.streams.get(data.readUInt32BE(2))
    return stream !== undefined && stream.tryForward(data.subarray(HEADER_SIZE), owned)
  }

  /** Whether an id is one that was (or could have been) in use: below the next id of its parity. */
  private isKnownId (id: number): boolean {
    const ours = (id % 2 === 1) === (this.opts.role === 'dialer')
    return ours ? id < this.nextId : id <= this.highestRemoteId
  }

  private highestRemoteId = 0

  private onOpen (frame: Frame): void {
    const id = frame.streamId
    const remoteParity = this.opts.role === 'dialer' ? 0 : 1
    if (id === 0 || id % 2 !== remoteParity) throw new RelaygateError('RG_ERR_PROTOCOL', `peer opened stream ${id} with the wrong parity`)
    if (id <= this.highestRemoteId) throw new RelaygateError('RG_ERR_PROTOCOL', `peer reused stream id ${id}`)
    this.highestRemoteId = id
    const refuse = (code: RelaygateError): void => {
      this.send(encodeFrame(FrameType.RESET, 0, id, encodeCodeReason(code.closeCode, code.message)))
    }
    if (this.localGoAway) return refuse(new RelaygateError('RG_ERR_GOING_AWAY'))
    if (this.opts.onStream === undefined) return refuse(new RelaygateError('RG_ERR_STREAM_REFUSED', 'this peer accepts no streams'))
    if (this.streams.size >= this.opts.maxStreams) {
      return refuse(new RelaygateError('RG_ERR_TOO_MANY_STREAMS', `at most ${this.opts.maxStreams} streams`))
    }
    const stream = new MuxStream(this, id, Buffer.from(frame.payload), this.opts.initialWindow, this.opts.maxWindow)
    this.streams.set(id, stream)
    if (this.opts.openWindowBoost > 0) stream.enlargeWindow(this.opts.openWindowBoost)
    this.opts.onStream(stream)
  }

  private onTransportClose (code: number, reason: string): void {
    if (this.closedInfo !== null) return
    const name = codeForClose(code)
    const error = name !== undefined
      ? new RelaygateError(name, reason || undefined)
      : (code === 1000 || code === 1001 ? undefined : new RelaygateError('RG_ERR_LIVENESS', `link lost (${code}${reason ? ': ' + reason : ''})`))
    this.finish(code, reason, error)
  }

  private finish (code: number, reason: string, error?: RelaygateError): void {
    this.closedInfo = { code, reason, error }
    if (this.keepAliveTimer !== null) clearInterval(this.keepAliveTimer)
    this.keepAliveTimer = null
    this.clearDrainTimer()
    if (this.pollTimer !== null) clearTimeout(this.pollTimer)
    this.pollTimer = null
    const streamErr = error ?? new RelaygateError('RG_ERR_STREAM_RESET', 'link closed')
    for (const stream of [...this.streams.values()]) stream.remoteReset(streamErr)
    this.streams.clear()
    this.ready = []
    this.readySet.clear()
    try {
      this.opts.onClose?.(this.closedInfo)
    } finally {
      this.resolveClosed()
    }
  }
}
