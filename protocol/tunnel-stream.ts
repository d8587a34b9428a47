/**
 * End-to-end encryption of tunnel streams between the server and the agent:
 * the relay forwards ciphertext (with its per-stream flow control) and can
 * read, alter, reorder, replay or cut nothing without it being detected.
 *
 * Keys: the tunnel's one-time credential (sealed for the agent, never seen
 * by the relay) gives a tunnel key (HKDF); each stream's keys come from it
 * and a random nonce the server puts in the stream's OPEN metadata, one per
 * direction. The agent refuses a stream nonce it has seen in the tunnel, so
 * a recorded stream cannot be played to it again.
 *
 * Records, AES-128-GCM (as TLS 1.3 prefers; 1.6 GB/s per core here, against
 * 1.2 for AES-256-GCM: the cipher is most of what encryption costs a tunnel):
 *
 *   +--------------+------+------------------------+---------+
 *   | u32 length   | kind | ciphertext (length)    | tag 16  |
 *   +--------------+------+------------------------+---------+
 *
 * kind 0 is data, 1 the end of the direction (an authenticated FIN: a stream
 * the relay cuts short is an error, not an end). The IV is the record's
 * sequence number; the 5 header bytes are authenticated with it.
 */
import { Duplex } from 'node:stream'
import { hkdfSync, randomBytes } from 'node:crypto'
import { RelaygateError } from './errors.js'
import { allocFramed } from './frame-room.js'
import { recordCrypto, recordKey, type RecordCrypto, type RecordKey } from './record-crypto.js'

const HEADER = 5
const TAG = 16
/**
 * Largest plaintext per record: a record fills one of the mux's 60 KiB DATA
 * frames, so the receiver decrypts each frame as it arrives, without
 * joining pieces (records of 256 KiB halved P4's throughput). Writes queued
 * together are sealed together up to this size (_writev).
 */
export const MAX_RECORD = 60 * 1024 - HEADER - TAG
const KIND_DATA = 0
const KIND_END = 1

/** The key of a tunnel's streams, from its one-time credential (base64url). */
export function deriveTunnelStreamKey (credential: string, tunnelId: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(credential, 'base64url'), Buffer.from(tunnelId, 'utf8'), 'relaygate tunnel streams v1', 32))
}

/** A fresh stream nonce (the server puts it in the OPEN metadata). */
export function newStreamNonce (): string {
  return randomBytes(16).toString('base64url')
}

export type StreamSide = 'server' | 'agent'

function directionKey (tunnelKey: Buffer, nonce: string, from: StreamSide): RecordKey {
  return recordKey(Buffer.from(hkdfSync('sha256', tunnelKey, Buffer.from(nonce, 'utf8'), `relaygate stream from ${from} v1`, 16)))
}

function tampered (why: string): RelaygateError {
  return new RelaygateError('RG_ERR_TUNNEL_TAMPERED', why)
}

/**
 * A Duplex of plaintext over an inner stream of records. Backpressure passes
 * through both ways: a write completes when the inner stream takes the
 * record, and reading pauses the inner stream while the consumer is full.
 */
export class SealedStream extends Duplex {
  private readonly inner: Duplex
  private readonly sendKey: RecordKey
  private readonly recvKey: RecordKey
  private readonly crypto: RecordCrypto
  /** Record sequence numbers, the IVs (exact below 2^53: 2^53 records of a byte are 9 PB). */
  private sendSeq = 0
  private recvSeq = 0
  private pending: Buffer[] = []
  private pendingBytes = 0
  private ended = false
  /**
   * Plaintext written but short of a full record, sealed at the end of this
   * turn of the event loop unless more comes first: a socket read is 64 KiB,
   * a record at most MAX_RECORD, and without this every read cost a second
   * record of 4 KiB (a cipher, a frame and a socket write of its own).
   */
  private tail: Buffer[] = []
  private tailBytes = 0
  private tailTimer: NodeJS.Immediate | null = null
  /** Plaintext bytes sealed and sent, and opened and received (the audit log's bytes each way). */
  bytesSent = 0
  bytesReceived = 0

  /** `crypto`: the process's way (record-crypto.ts) unless a test picks one. */
  constructor (inner: Duplex, tunnelKey: Buffer, nonce: string, side: StreamSide, crypto: RecordCrypto = recordCrypto) {
    // Buffers as deep as a mux stream's window (512 KiB): a shallower one paused the flow at every record (P4 halved).
    super({ allowHalfOpen: true, readableHighWaterMark: 512 * 1024, writableHighWaterMark: 512 * 1024 })
    this.inner = inner
    this.crypto = crypto
    this.sendKey = directionKey(tunnelKey, nonce, side)
    this.recvKey = directionKey(tunnelKey, nonce, side === 'server' ? 'agent' : 'server')
    inner.on('data', (chunk: Buffer) => this.onData(chunk))
    inner.on('end', () => { if (!this.ended) this.destroy(tampered('the stream ended without its authenticated end')) })
    inner.on('error', err => this.destroy(err))
    inner.on('close', () => { if (!this.ended && !this.destroyed) this.destroy(tampered('the stream closed without its authenticated end')) })
  }

  override _write (chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.sealAll([chunk], cb)
  }

  override _writev (chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.sealAll(chunks.map(c => c.chunk), cb)
  }

  /**
   * Seals the tail and the chunks as full records; what is left becomes the
   * tail. Done once the inner stream took them (no drain pending).
   */
  private sealAll (chunks: Buffer[], cb: (err?: Error | null) => void): void {
    let batch = this.tail
    let size = this.tailBytes
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length;) {
        const part = chunk.subarray(at, at + MAX_RECORD - size)
        batch.push(part)
        size += part.length
        at += part.length
        if (size === MAX_RECORD) {
          this.inner.write(this.seal(KIND_DATA, batch, size))
          batch = []
          size = 0
        }
      }
    }
    this.tail = batch
    this.tailBytes = size
    if (size > 0) this.tailTimer ??= setImmediate(() => { this.tailTimer = null; this.sealTail() })
    if (!this.inner.writableNeedDrain) cb()
    else this.inner.once('drain', () => cb())
  }

  private sealTail (): void {
    if (this.tailBytes === 0 || this.inner.destroyed) return
    const record = this.seal(KIND_DATA, this.tail, this.tailBytes)
    this.tail = []
    this.tailBytes = 0
    this.inner.write(record)
  }

  override _final (cb: (err?: Error | null) => void): void {
    if (this.tailTimer !== null) clearImmediate(this.tailTimer)
    this.tailTimer = null
    this.sealTail()
    this.inner.end(this.seal(KIND_END, [], 0), () => cb())
  }

  override _read (): void {
    this.inner.resume()
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.tailTimer !== null) clearImmediate(this.tailTimer)
    this.tailTimer = null
    if (!this.inner.destroyed) this.inner.destroy(err ?? undefined)
    cb(err)
  }

  /**
   * One record of `size` plaintext bytes from `parts`, encrypted into a
   * buffer the mux can frame in place (allocFramed): with the addon the
   * cipher's output is the only copy of the bytes on the way out.
   */
  private seal (kind: number, parts: Buffer[], size: number): Buffer {
    const out = allocFramed(HEADER + size + TAG)
    this.bytesSent += size
    out.writeUInt32BE(size, 0)
    out[4] = kind
    this.crypto.seal(this.sendKey, this.sendSeq++, out, HEADER, parts)
    return out
  }

  private onData (chunk: Buffer): void {
    this.pending.push(chunk)
    this.pendingBytes += chunk.length
    try {
      this.drainRecords()
    } catch (err) {
      this.destroy(err as Error)
    }
  }

  private drainRecords (): void {
    while (this.pendingBytes >= HEADER) {
      const head = this.peek(HEADER)
      const length = head.readUInt32BE(0)
      if (length > MAX_RECORD || head[4] > KIND_END) throw tampered('a record header that no sender writes')
      if (this.pendingBytes < HEADER + length + TAG) return
      const record = this.takeBytes(HEADER + length + TAG)
      if (this.ended) throw tampered('data after the authenticated end')
      const plain = this.open(record, length)
      this.bytesReceived += length
      if (record[4] === KIND_END) {
        this.ended = true
        this.push(null)
        return
      }
      if (plain.length > 0 && !this.push(plain)) this.inner.pause()
    }
  }

  private open (record: Buffer, length: number): Buffer {
    const plain = this.crypto.open(this.recvKey, this.recvSeq++, record, HEADER, length)
    if (plain === null) throw tampered('a record did not authenticate (altered, reordered, replayed or from another stream)')
    return plain
  }

  private peek (n: number): Buffer {
    if (this.pending[0].length >= n) return this.pending[0].subarray(0, n)
    return Buffer.concat(this.pending).subarray(0, n)
  }

  private takeBytes (n: number): Buffer {
    if (this.pending[0].length === n) {
      this.pendingBytes -= n
      return this.pending.shift()!
    }
    if (this.pending[0].length > n) {
      const out = this.pending[0].subarray(0, n)
      this.pending[0] = this.pending[0].subarray(n)
      this.pendingBytes -= n
      return out
    }
    const all = Buffer.concat(this.pending)
    const out = all.subarray(0, n)
    this.pending = all.length > n ? [all.subarray(n)] : []
    this.pendingBytes -= n
    return out
  }
}
