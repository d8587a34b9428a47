/**
 * Frame layout (big-endian), the same on every link:
 *
 *   0       1       2               6               10
 *   +-------+-------+---------------+---------------+----------------+
 *   | type  | flags |   stream id   |    length     |  payload ...   |
 *   +-------+-------+---------------+---------------+----------------+
 *
 * Stream id 0 is the session itself. Streams opened by the dialing side use
 * odd ids, streams opened by the accepting side even ids (as in yamux).
 */
export const HEADER_SIZE = 10

/** Protocol version carried by every hello. Peers with another major refuse. */
export const PROTOCOL_VERSION = 1

export const FrameType = {
  /** u16 version, then UTF-8 JSON. First frame in each direction. */
  HELLO: 0x01,
  /** UTF-8 JSON: rare control messages (auth, deltas, settings, kicks). */
  CONTROL: 0x02,
  /** u16 close code, then UTF-8 message. Sent before closing on an error. */
  ERROR: 0x03,
  /** 8 opaque bytes; flag ACK marks the answer (pong). */
  PING: 0x04,
  /** u16 close code, then UTF-8 reason: no new streams, finish the rest. */
  GOAWAY: 0x05,
  /** Agent check-in: u16 sequence number. */
  CHECKIN: 0x06,
  /** Answer to a check-in (or pushed): u16 seq, u8 flags, u16 interval seconds. */
  CHECKIN_ANSWER: 0x07,
  /** Open a stream; payload is the opener's metadata (opaque to the mux). */
  OPEN: 0x10,
  /** Stream bytes; flag FIN half-closes the sender's side. */
  DATA: 0x11,
  /** u32 credit granted to the peer for this stream. */
  WINDOW: 0x12,
  /** u16 close code, then UTF-8 reason: abort the stream. */
  RESET: 0x13
} as const
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType]

const knownTypes = new Set<number>(Object.values(FrameType))
export function isFrameType (value: number): value is FrameTypeValue {
  return knownTypes.has(value)
}

export const FrameFlag = {
  /** DATA: the sender will send no more bytes on this stream. */
  FIN: 0x01,
  /** PING: this is the answer. */
  ACK: 0x01
} as const

/** Bits of the flags byte of a check-in answer. */
export const CheckinFlag = {
  /** The server wants a tunnel: open one with the credentials it sends. */
  TUNNEL: 0x01,
  /** Work is waiting for this endpoint (jobs). */
  WORK: 0x02
} as const

export interface Frame {
  type: FrameTypeValue
  flags: number
  streamId: number
  payload: Buffer
}

export const MAX_STREAM_ID = 0xffffffff
export const MAX_U16 = 0xffff
export const MAX_U32 = 0xffffffff

/** Defaults for payload limits; each link may choose its own. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024
export const AGENT_MAX_PAYLOAD = 64 * 1024
