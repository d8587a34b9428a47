/**
 * What the multiplexer needs from a message transport (a WebSocket from
 * `ws`, a uWebSockets.js socket, or an in-memory pair in tests).
 */
export interface TransportEvents {
  message: (data: Buffer) => void
  /** The transport's buffer went below its high-water mark. */
  drain: () => void
  close: (code: number, reason: string) => void
}

export interface Transport {
  /** Queues one message. Returns false when the buffer is above the high-water mark. */
  send: (data: Buffer) => boolean
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
