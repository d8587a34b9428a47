import { randomFillSync } from 'node:crypto'
import type { WebSocket } from 'ws'
import type { Transport, TransportEvents } from './transport.js'

const maskPool = Buffer.alloc(8192)
let maskAt = maskPool.length

/**
 * The client's masking key for each message: random (from a pooled
 * randomFillSync, as `ws` does), never all zeros. `ws` skips masking for an
 * all-zero key and then keeps a reference to the caller's buffer; with a
 * non-zero key it always masks into a buffer of its own before send()
 * returns, which is what lets our transport declare copiesOnSend.
 */
export function generateMask (mask: Buffer): void {
  do {
    if (maskAt === maskPool.length) {
      randomFillSync(maskPool)
      maskAt = 0
    }
    maskPool.copy(mask, 0, maskAt, maskAt + 4)
    maskAt += 4
  } while ((mask[0] | mask[1] | mask[2] | mask[3]) === 0)
}

const dialed = new WeakSet<WebSocket>()

/** True for a socket opened with generateMask (a masking client: send() copies). */
export function copiesOnSend (ws: WebSocket): boolean {
  return dialed.has(ws)
}

/** Marks a client socket that masks with generateMask (common/dial.ts). */
export function markCopiesOnSend (ws: WebSocket): void {
  dialed.add(ws)
}

/** A `ws` WebSocket (client or server side) as a mux transport. */
export class WsTransport implements Transport {
  readonly remote: string
  readonly copiesOnSend: boolean
  private readonly ws: WebSocket
  private readonly highWaterMark: number
  private events: TransportEvents | null = null
  private above = false
  private readonly onSent = (): void => {
    if (this.above && this.ws.bufferedAmount < this.highWaterMark) {
      this.above = false
      this.events?.drain()
    }
  }

  constructor (ws: WebSocket, remote: string, highWaterMark = 64 * 1024) {
    this.ws = ws
    this.remote = remote
    this.highWaterMark = highWaterMark
    this.copiesOnSend = copiesOnSend(ws)
    // Errors surface as 'close' with a code; without a listener they would throw.
    ws.on('error', () => {})
  }

  attach (events: TransportEvents): void {
    this.events = events
    this.ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        this.close(4000, 'text messages are not part of the protocol')
        return
      }
      events.message(data)
    })
    this.ws.on('close', (code: number, reason: Buffer) => events.close(code, reason.toString()))
  }

  get bufferedAmount (): number {
    return this.ws.bufferedAmount
  }

  send (data: Buffer): boolean {
    if (this.ws.readyState !== 1) return false
    this.ws.send(data, { binary: true }, this.onSent)
    const ok = this.ws.bufferedAmount < this.highWaterMark
    if (!ok) this.above = true
    return ok
  }

  close (code: number, reason: string): void {
    if (this.ws.readyState === 2 || this.ws.readyState === 3) return
    const valid = code === 1000 || (code >= 3000 && code <= 4999)
    this.ws.close(valid ? code : 1011, Buffer.from(reason).subarray(0, 120).toString())
    // A peer that never answers the close handshake is dropped.
    setTimeout(() => this.ws.terminate(), 5000).unref()
  }

  terminate (): void {
    this.ws.terminate()
  }
}
