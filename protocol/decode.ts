import { HEADER_SIZE, DEFAULT_MAX_PAYLOAD, isFrameType, type Frame } from './frame.js'
import { RelaygateError } from './errors.js'
import type { CheckinAnswer } from './encode.js'

/**
 * Incremental frame decoder. Feed it any chunk; it returns the frames that
 * are complete. The length in a header is checked against the limit before
 * any of the payload is buffered, so a peer cannot make us hold more than
 * one maximal frame.
 */
export class FrameDecoder {
  readonly maxPayload: number
  private chunks: Buffer[] = []
  private buffered = 0

  constructor (maxPayload = DEFAULT_MAX_PAYLOAD) {
    this.maxPayload = maxPayload
  }

  /** Bytes held for an incomplete frame. */
  get pending (): number {
    return this.buffered
  }

  push (chunk: Uint8Array): Frame[] {
    if (chunk.length === 0) return []
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)
    this.chunks.push(buf)
    this.buffered += buf.length
    const out: Frame[] = []
    for (;;) {
      if (this.buffered < HEADER_SIZE) break
      const header = this.peek(HEADER_SIZE)
      const type = header[0]
      if (!isFrameType(type)) {
        throw new RelaygateError('RG_ERR_PROTOCOL', `unknown frame type 0x${type.toString(16)}`)
      }
      const length = header.readUInt32BE(6)
      if (length > this.maxPayload) {
        throw new RelaygateError('RG_ERR_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the limit of ${this.maxPayload}`)
      }
      if (this.buffered < HEADER_SIZE + length) break
      const whole = this.take(HEADER_SIZE + length)
      out.push({
        type,
        flags: whole[1],
        streamId: whole.readUInt32BE(2),
        payload: whole.subarray(HEADER_SIZE)
      })
    }
    return out
  }

  /** Call at end of input: bytes left over mean a truncated frame. */
  end (): void {
    if (this.buffered !== 0) {
      const held = this.buffered
      this.chunks = []
      this.buffered = 0
      throw new RelaygateError('RG_ERR_PROTOCOL', `input ended inside a frame (${held} bytes held)`)
    }
  }

  private peek (n: number): Buffer {
    const first = this.chunks[0]
    if (first.length >= n) return first.subarray(0, n)
    const joined = Buffer.concat(this.chunks)
    this.chunks = [joined]
    return joined.subarray(0, n)
  }

  private take (n: number): Buffer {
    let first = this.chunks[0]
    if (first.length < n) {
      first = Buffer.concat(this.chunks)
      this.chunks = [first]
    }
    const out = first.subarray(0, n)
    if (first.length === n) this.chunks.shift()
    else this.chunks[0] = first.subarray(n)
    this.buffered -= n
    return out
  }
}

/** Decodes a whole buffer that must hold complete frames only. */
export function decodeAll (buf: Uint8Array, maxPayload = DEFAULT_MAX_PAYLOAD): Frame[] {
  const decoder = new FrameDecoder(maxPayload)
  const frames = decoder.push(buf)
  decoder.end()
  return frames
}

function need (payload: Buffer, n: number, what: string): void {
  if (payload.length < n) throw new RelaygateError('RG_ERR_PROTOCOL', `${what} payload too short (${payload.length} < ${n})`)
}

function parseJsonObject (text: string, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new RelaygateError('RG_ERR_PROTOCOL', `${what} is not valid JSON`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `${what} is not a JSON object`)
  }
  return value as Record<string, unknown>
}

export function decodeHello (payload: Buffer): { version: number, body: Record<string, unknown> } {
  need(payload, 2, 'hello')
  return { version: payload.readUInt16BE(0), body: parseJsonObject(payload.toString('utf8', 2), 'hello') }
}

export function decodeJson (payload: Buffer): Record<string, unknown> {
  return parseJsonObject(payload.toString('utf8'), 'control message')
}

export function decodeCodeReason (payload: Buffer): { code: number, reason: string } {
  need(payload, 2, 'code')
  return { code: payload.readUInt16BE(0), reason: payload.toString('utf8', 2) }
}

export function decodeCheckin (payload: Buffer): { seq: number } {
  if (payload.length !== 2) throw new RelaygateError('RG_ERR_PROTOCOL', `check-in payload must be 2 bytes, got ${payload.length}`)
  return { seq: payload.readUInt16BE(0) }
}

export function decodeCheckinAnswer (payload: Buffer): CheckinAnswer {
  if (payload.length !== 5) throw new RelaygateError('RG_ERR_PROTOCOL', `check-in answer payload must be 5 bytes, got ${payload.length}`)
  return { seq: payload.readUInt16BE(0), flags: payload[2], intervalSeconds: payload.readUInt16BE(3) }
}

export function decodeWindow (payload: Buffer): number {
  if (payload.length !== 4) throw new RelaygateError('RG_ERR_PROTOCOL', `window payload must be 4 bytes, got ${payload.length}`)
  const delta = payload.readUInt32BE(0)
  if (delta === 0) throw new RelaygateError('RG_ERR_PROTOCOL', 'window delta of 0')
  return delta
}
