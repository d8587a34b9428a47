import { ErrorCode } from '../protocol/index.js'
import type uWS from 'uWebSockets.js'
import type { Transport, TransportEvents } from '../protocol/transport.js'

export interface AgentSocketData {
  transport?: UwsTransport
}

/** A uWebSockets.js socket as a mux transport. The socket is invalid after close. */
export class UwsTransport implements Transport {
  readonly remote: string
  /** uWS copies (or writes) a message before send() returns. */
  readonly copiesOnSend = true
  private readonly ws: uWS.WebSocket<AgentSocketData>
  private readonly highWaterMark: number
  private events: TransportEvents | null = null
  closed = false

  constructor (ws: uWS.WebSocket<AgentSocketData>, highWaterMark = 64 * 1024) {
    this.ws = ws
    this.highWaterMark = highWaterMark
    this.remote = Buffer.from(ws.getRemoteAddressAsText()).toString()
  }

  attach (events: TransportEvents): void {
    this.events = events
  }

  get bufferedAmount (): number {
    return this.closed ? 0 : this.ws.getBufferedAmount()
  }

  send (data: Buffer): boolean {
    if (this.closed) return false
    const status = this.ws.send(data, true, false)
    return status === 1 && this.ws.getBufferedAmount() < this.highWaterMark
  }

  close (code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    try {
      this.ws.end(code, Buffer.from(reason).subarray(0, 120))
    } catch {}
  }

  terminate (): void {
    if (this.closed) return
    this.closed = true
    try {
      this.ws.close()
    } catch {}
  }

  // ---- called by the uWS app's handlers ----

  onMessage (message: ArrayBuffer): void {
    // The ArrayBuffer is only valid during the callback: the mux copies what it keeps.
    this.events?.message(Buffer.from(message), true)
  }

  onDrain (): void {
    if (this.ws.getBufferedAmount() < this.highWaterMark) this.events?.drain()
  }

  onClose (code: number, message: ArrayBuffer): void {
    this.closed = true
    const reason = Buffer.from(message).toString()
    // uWS cuts a message above maxPayloadLength before reading it (memory
    // stays bounded) and closes without a close frame: the peer sees 1006;
    // our side records the coded reason.
    if (code === 1006 && reason === 'Received too big message') {
      this.events?.close(ErrorCode.RG_ERR_FRAME_TOO_LARGE.close, 'a WebSocket message above the limit, cut before it was read')
      return
    }
    this.events?.close(code, reason)
  }
}
