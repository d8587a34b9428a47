import { HEADER_SIZE } from './frame.js'

/**
 * Buffers with room for a DATA frame's header in front of them, so the mux
 * can frame them in place instead of copying them into a frame of their own
 * (issue 15: the tunnel's sealed records, 60 KiB each). Each buffer has an
 * ArrayBuffer of its own; the room is used at most once.
 */
const roomy = new WeakSet<ArrayBufferLike>()

/** An uninitialised buffer of `size` bytes with a frame header's room in front. */
export function allocFramed (size: number): Buffer {
  const whole = Buffer.allocUnsafeSlow(HEADER_SIZE + size)
  roomy.add(whole.buffer)
  return whole.subarray(HEADER_SIZE)
}

/**
 * True (once) when `chunk` starts a buffer from allocFramed whose room is
 * still unused: the caller may then write a header into the HEADER_SIZE
 * bytes before it. A later part of the same buffer starts further in and
 * never qualifies.
 */
export function claimFrameRoom (chunk: Buffer): boolean {
  if (chunk.byteOffset !== HEADER_SIZE || !roomy.has(chunk.buffer)) return false
  roomy.delete(chunk.buffer)
  return true
}
