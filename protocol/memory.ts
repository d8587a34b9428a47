import type { Transport, TransportEvents } from './transport.js'

/**
 * Two connected in-memory transports, for unit tests and for measuring the
 * mux without sockets. Messages are delivered asynchronously; a side whose
 * reader is paused keeps its messages queued and reports them as buffered
 * on the sending side (like a socket whose peer stopped reading).
 */
export class MemoryTransport implements Transport {
  peer!: MemoryTransport
  readonly remote: string
  /**
   * send() copies the message before it returns (as uWebSockets.js does);
   * false: the very buffer sent is delivered (as `ws` with a zero mask keeps
   * a reference), so a sender that reuses a buffer corrupts its own data.
   */
  copiesOnSend = true
  /**
   * Deliver messages to this side as uWebSockets.js does: `ephemeral`, in a
   * buffer that is overwritten once the handler returns (tests that the mux
   * copies what it keeps).
   */
  ephemeral = false
  /** Each message reaches the peer this long after it was sent, in order (a path with that one-way delay). */
  delayMs = 0
  private scratch: Buffer | null = null
  private events: TransportEvents | null = null
  private inbox: Buffer[] = []
  private inboxBytes = 0
  private paused = false
  private scheduled = false
  private closed = false
  readonly highWaterMark: number

  constructor (name: string, highWaterMark = 64 * 1024) {
    this.remote = name
    this.highWaterMark = highWaterMark
  }

  static pair (highWaterMark?: number): [MemoryTransport, MemoryTransport] {
    const a = new MemoryTransport('memory-a', highWaterMark)
    const b = new MemoryTransport('memory-b', highWaterMark)
    a.peer = b
    b.peer = a
    return [a, b]
  }

  attach (events: TransportEvents): void {
    this.events = events
  }

  get bufferedAmount (): number {
    return this.peer.inboxBytes
  }

  send (data: Buffer): boolean {
    if (this.closed) return false
    const copy = this.copiesOnSend ? Buffer.from(data) : data
    if (this.delayMs > 0) setTimeout(() => { if (!this.peer.closed) this.peer.deliver(copy) }, this.delayMs)
    else this.peer.deliver(copy)
    return this.bufferedAmount < this.highWaterMark
  }

  /** Stops delivering messages to this side (the reader stops). */
  pause (): void {
    this.paused = true
  }

  resume (): void {
    this.paused = false
    this.schedule()
  }

  close (code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    setImmediate(() => {
      this.events?.close(code, reason)
      this.peer.remoteClosed(code, reason)
    })
  }

  terminate (): void {
    this.close(1006, 'terminated')
  }

  private remoteClosed (code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.events?.close(code, reason)
  }

  private deliver (data: Buffer): void {
    this.inbox.push(data)
    this.inboxBytes += data.length
    this.schedule()
  }

  private schedule (): void {
    if (this.scheduled || this.paused) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      const wasAbove = this.inboxBytes >= this.peer.highWaterMark
      while (!this.paused && this.inbox.length > 0 && !this.closed) {
        const msg = this.inbox.shift()!
        this.inboxBytes -= msg.length
        if (this.ephemeral) {
          if (this.scratch === null || this.scratch.length < msg.length) this.scratch = Buffer.alloc(Math.max(msg.length, 64 * 1024))
          msg.copy(this.scratch)
          this.events?.message(this.scratch.subarray(0, msg.length), true)
          this.scratch.fill(0xa5, 0, msg.length)
        } else {
          this.events?.message(msg)
        }
      }
      if (wasAbove && this.inboxBytes < this.peer.highWaterMark) this.peer.events?.drain()
    })
  }
}
