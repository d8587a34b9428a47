/**
 * What the multiplexer needs from a message transport (a WebSocket from
 * `ws`, a uWebSockets.js socket, or an in-memory pair in tests).
 */
export interface TransportEvents {
  /**
   * One whole message. The mux keeps references into `data` (stream payloads
   * are handed to readers without a copy), so the transport must not reuse
   * or free it afterwards, unless it says so with `ephemeral`: then `data`
   * is valid only during the call (uWebSockets.js's ArrayBuffer) and the mux
   * copies whatever it keeps.
   */
  message: (data: Buffer, ephemeral?: boolean) => void
  /**
   * The transport's buffer went below its high-water mark after send()
   * returned false. The mux stops sending stream data while bufferedAmount is
   * at or above its own high-water mark and resumes on this event (or, if the
   * event never comes, when its drain timer finds the buffer low again).
   */
  drain: () => void
  close: (code: number, reason: string) => void
}

export interface Transport {
  /** Queues one message. Returns false when the buffer is above the high-water mark. */
  send: (data: Buffer) => boolean
  /**
   * True when send() has copied `data` by the time it returns (so the caller
   * may overwrite the buffer at once). The mux then encodes stream data into
   * one reused buffer instead of allocating one per frame.
   */
  readonly copiesOnSend?: boolean
  /** Bytes queued and not yet handed to the kernel. */
  readonly bufferedAmount: number
  /** Closes with a WebSocket close code (1000 or 4000-4999). */
  close: (code: number, reason: string) => void
  /** Drops the connection at once. */
  terminate: () => void
  /** The mux attaches itself exactly once. */
  attach: (events: TransportEvents) => void
  /** Remote address for logs. */
  readonly remote: string
}
