import { HEADER_SIZE, MAX_U16, MAX_U32, FrameType, type Frame, type FrameTypeValue } from './frame.js'
import { RelaygateError } from './errors.js'

const EMPTY = Buffer.alloc(0)

/** Encodes one frame: header and payload in one buffer. Pure. */
export function encodeFrame (type: FrameTypeValue, flags: number, streamId: number, payload: Buffer = EMPTY): Buffer {
  if (!Number.isInteger(streamId) || streamId < 0 || streamId > MAX_U32) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `stream id out of range: ${streamId}`)
  }
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xff) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `flags out of range: ${flags}`)
  }
  const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length)
  encodeFrameInto(out, type, flags, streamId, payload)
  return out
}

/**
 * Encodes one frame into `target` from offset 0 and returns the bytes
 * written (header + payload). For senders that reuse one buffer per frame.
 */
export function encodeFrameInto (target: Buffer, type: FrameTypeValue, flags: number, streamId: number, payload: Buffer): number {
  const length = HEADER_SIZE + payload.length
  if (length > target.length) {
    throw new RelaygateError('RG_ERR_FRAME_TOO_LARGE', `frame of ${length} bytes does not fit a buffer of ${target.length}`)
  }
  encodeHeaderInto(target, type, flags, streamId, payload.length)
  payload.copy(target, HEADER_SIZE)
  return length
}

/** Writes a frame header for `length` payload bytes at the start of `target` (the payload is already behind it). */
export function encodeHeaderInto (target: Buffer, type: FrameTypeValue, flags: number, streamId: number, length: number): void {
  target[0] = type
  target[1] = flags
  target.writeUInt32BE(streamId, 2)
  target.writeUInt32BE(length, 6)
}

export function encode (frame: Frame): Buffer {
  return encodeFrame(frame.type, frame.flags, frame.streamId, frame.payload)
}

function u16 (value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U16) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `${what} out of range: ${value}`)
  }
}

/** Payload of HELLO: u16 version then JSON. */
export function encodeHello (version: number, body: object): Buffer {
  u16(version, 'version')
  const json = Buffer.from(JSON.stringify(body))
  const out = Buffer.allocUnsafe(2 + json.length)
  out.writeUInt16BE(version, 0)
  json.copy(out, 2)
  return out
}

/** Payload of ERROR, GOAWAY and RESET: u16 close code then UTF-8 text. */
export function encodeCodeReason (code: number, reason = ''): Buffer {
  u16(code, 'code')
  const text = Buffer.from(reason.slice(0, 1024))
  const out = Buffer.allocUnsafe(2 + text.length)
  out.writeUInt16BE(code, 0)
  text.copy(out, 2)
  return out
}

export function encodeJson (body: object): Buffer {
  return Buffer.from(JSON.stringify(body))
}

export function encodeCheckin (seq: number): Buffer {
  u16(seq, 'seq')
  const out = Buffer.allocUnsafe(2)
  out.writeUInt16BE(seq, 0)
  return out
}

export interface CheckinAnswer {
  /** Sequence number of the check-in answered, 0 when the relay pushes. */
  seq: number
  /** CheckinFlag bits. */
  flags: number
  /** When to check in next, in seconds. */
  intervalSeconds: number
}

export function encodeCheckinAnswer (answer: CheckinAnswer): Buffer {
  u16(answer.seq, 'seq')
  u16(answer.intervalSeconds, 'interval')
  if (!Number.isInteger(answer.flags) || answer.flags < 0 || answer.flags > 0xff) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `check-in flags out of range: ${answer.flags}`)
  }
  const out = Buffer.allocUnsafe(5)
  out.writeUInt16BE(answer.seq, 0)
  out[2] = answer.flags
  out.writeUInt16BE(answer.intervalSeconds, 3)
  return out
}

export function encodeWindow (delta: number): Buffer {
  if (!Number.isInteger(delta) || delta <= 0 || delta > MAX_U32) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `window delta out of range: ${delta}`)
  }
  const out = Buffer.allocUnsafe(4)
  out.writeUInt32BE(delta, 0)
  return out
}

/** Whole frames for the common messages. */
export const frames = {
  hello: (version: number, body: object) => encodeFrame(FrameType.HELLO, 0, 0, encodeHello(version, body)),
  control: (body: object) => encodeFrame(FrameType.CONTROL, 0, 0, encodeJson(body)),
  error: (code: number, message: string) => encodeFrame(FrameType.ERROR, 0, 0, encodeCodeReason(code, message)),
  checkin: (seq: number) => encodeFrame(FrameType.CHECKIN, 0, 0, encodeCheckin(seq)),
  checkinAnswer: (answer: CheckinAnswer) => encodeFrame(FrameType.CHECKIN_ANSWER, 0, 0, encodeCheckinAnswer(answer))
}
