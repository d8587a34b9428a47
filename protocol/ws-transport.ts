import type { WebSocket } from 'ws'
import type { Transport, TransportEvents } from './transport.js'

/**
 * The masking key of every message our own dialers send: all zeros, which
 * `ws` takes as "mask nothing" on both ends (no pass over the bytes when
 * sending, none when receiving; uWebSockets.js unmasks with a zero key at
 * no cost). Masking (RFC 6455 §10.3) keeps a browser script from choosing
 * the bytes an intermediary sees; our dialers are relays, agents and
 * servers, never browsers, and tunnel payloads are encrypted anyway.
 * A browser (the dashboard) still masks as it must.
 */
export function zeroMask (mask: Buffer): void {
  mask.fill(0)
}

/** A `ws` WebSocket (client or server side) as a mux transport. */
export class WsTransport implements Transport {
  readonly remote: string
  /** `ws` sends without copying (unmasked, or masked with a zero key): it keeps the buffer until written. */
  readonly copiesOnSend = false
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
