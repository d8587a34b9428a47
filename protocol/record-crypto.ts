/**
 * AES-128-GCM for tunnel records, two ways that make the same bytes.
 *
 * node:crypto allocates per call an output buffer, then a second one of the
 * exact length (zero-filled) and copies into it; sealing then copies again
 * into the frame. That was 10–14 % of the server's and the agent's CPU per
 * gigabyte, and a 1 KiB record cost 8–12 µs. The addon in native/ (built by
 * `npm install` where a C compiler is; it links the OpenSSL node itself
 * exports) encrypts straight into the frame and decrypts into one buffer
 * it does not zero: a 60 KiB record sealed in 21–23 µs instead of 41–52, a
 * 1 KiB one in 2–3.
 *
 * Without the addon (not built, a single-file build, or
 * RELAYGATE_NATIVE_RECORDS=off) node:crypto does the same work; records are
 * identical either way, so the two ends need not agree on it.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const CIPHER = 'aes-128-gcm'
const TAG = 16

/** A direction's key, both ways it is used. */
export interface RecordKey {
  /** 16 bytes, for the addon. */
  raw: Buffer
  /** For node:crypto: a cipher per record made from a KeyObject costs 5 µs, from a Buffer 7. */
  object: KeyObject
}

export function recordKey (raw: Buffer): RecordKey {
  return { raw, object: createSecretKey(raw) }
}

export interface RecordCrypto {
  readonly name: 'native' | 'node:crypto'
  /**
   * Encrypts `parts` into `out` after its first `aadLength`
   * bytes (authenticated, not encrypted), the tag after them. The IV is the
   * sequence number.
   */
  seal: (key: RecordKey, seq: number, out: Buffer, aadLength: number, parts: Buffer[]) => void
  /**
   * The plaintext of `record` (`aadLength` header bytes, `length` of
   * ciphertext, the tag) in a buffer of its own, or null when it does not
   * authenticate.
   */
  open: (key: RecordKey, seq: number, record: Buffer, aadLength: number, length: number) => Buffer | null
}

function iv (seq: number): Buffer {
  const b = Buffer.alloc(12)
  b.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 4)
  b.writeUInt32BE(seq % 0x1_0000_0000, 8)
  return b
}

export const nodeRecordCrypto: RecordCrypto = {
  name: 'node:crypto',
  seal (key, seq, out, aadLength, parts) {
    const cipher = createCipheriv(CIPHER, key.object, iv(seq))
    cipher.setAAD(out.subarray(0, aadLength))
    let at = aadLength
    for (const part of parts) at += cipher.update(part).copy(out, at)
    cipher.final()
    cipher.getAuthTag().copy(out, at)
  },
  open (key, seq, record, aadLength, length) {
    const decipher = createDecipheriv(CIPHER, key.object, iv(seq))
    decipher.setAAD(record.subarray(0, aadLength))
    decipher.setAuthTag(record.subarray(aadLength + length, aadLength + length + TAG))
    try {
      const plain = decipher.update(record.subarray(aadLength, aadLength + length))
      decipher.final()
      return plain
    } catch {
      return null
    }
  }
}

interface Addon {
  seal: (key: Buffer, seq: number, out: Buffer, aadLength: number, parts: Buffer[]) => number
  open: (key: Buffer, seq: number, record: Buffer, aadLength: number, out: Buffer) => boolean
}

export function nativeRecordCrypto (addon: Addon): RecordCrypto {
  return {
    name: 'native',
    seal (key, seq, out, aadLength, parts) {
      addon.seal(key.raw, seq, out, aadLength, parts)
    },
    open (key, seq, record, aadLength, length) {
      const out = Buffer.allocUnsafe(length)
      return addon.open(key.raw, seq, record, aadLength, out) ? out : null
    }
  }
}

/** The addon, or why not (also when RELAYGATE_NATIVE_RECORDS=off). */
export function loadRecordAddon (): { addon: Addon } | { why: string } {
  if (process.env.RELAYGATE_NATIVE_RECORDS === 'off') return { why: 'RELAYGATE_NATIVE_RECORDS=off' }
  try {
    // From protocol/ (tests, ts) or dist/protocol/ (the package).
    for (const up of ['../', '../../']) {
      const path = fileURLToPath(new URL(`${up}native/build/Release/relaygate_records.node`, import.meta.url))
      if (existsSync(path)) return { addon: createRequire(import.meta.url)(path) as Addon }
    }
    return { why: 'not built (npm install builds it where a C compiler is; the single-file builds have none)' }
  } catch (err) {
    return { why: (err as Error).message }
  }
}

const loaded = loadRecordAddon()

/** What this process seals and opens records with. */
export const recordCrypto: RecordCrypto = 'addon' in loaded ? nativeRecordCrypto(loaded.addon) : nodeRecordCrypto

/** For a process's log lines: the way records are sealed, and why not natively. */
export const recordCipherLog: { recordCipher: RecordCrypto['name'], recordCipherWhy?: string } =
  'why' in loaded ? { recordCipher: recordCrypto.name, recordCipherWhy: loaded.why } : { recordCipher: recordCrypto.name }
