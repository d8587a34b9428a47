/**
 * HTTP/1.1 response framing, as far as a proxy needs it (RFC 9112): the
 * status line and header fields of a response head, and where its body
 * ends (a length, chunks, or the connection's end). Pure: bytes in, parts
 * out; the tunnel proxy (http-splice.ts) does the I/O.
 */
import { RelaygateError } from '../protocol/errors.js'

export const MAX_HEAD_BYTES = 64 * 1024
const MAX_FIELDS = 200
const MAX_CHUNK_LINE = 4096

export interface ResponseHead {
  status: number
  reason: string
  /** name, value, name, value … as received (names as the target wrote them). */
  rawHeaders: string[]
  /** Bytes of the head, the blank line included. */
  length: number
}

function malformed (why: string): RelaygateError {
  return new RelaygateError('RG_ERR_BAD_GATEWAY', `the tunnel target's response: ${why}`)
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// Field values: visible ASCII, obs-text, spaces and tabs (no CR, LF or NUL).
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

/**
 * The response head at the start of `buf`, or null while its blank line
 * has not arrived. Throws RG_ERR_BAD_GATEWAY for what no HTTP/1.x server
 * sends, or a head over MAX_HEAD_BYTES.
 */
export function parseResponseHead (buf: Buffer): ResponseHead | null {
  const end = buf.indexOf('\r\n\r\n')
  if (end < 0) {
    if (buf.length > MAX_HEAD_BYTES) throw malformed(`a head over ${MAX_HEAD_BYTES} bytes`)
    return null
  }
  if (end + 4 > MAX_HEAD_BYTES) throw malformed(`a head over ${MAX_HEAD_BYTES} bytes`)
  const lines = buf.toString('latin1', 0, end).split('\r\n')
  const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0])
  if (status === null) throw malformed('not an HTTP/1.x status line')
  if (lines.length - 1 > MAX_FIELDS) throw malformed(`more than ${MAX_FIELDS} header fields`)
  const rawHeaders: string[] = []
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    const name = colon > 0 ? line.slice(0, colon) : ''
    if (!TOKEN.test(name)) throw malformed('a header field without a valid name (or a folded line)')
    const value = line.slice(colon + 1).trim()
    if (!VALUE.test(value)) throw malformed(`a control character in ${name}`)
    rawHeaders.push(name, value)
  }
  return { status: Number(status[1]), reason: status[2] ?? '', rawHeaders, length: end + 4 }
}

/** The values of header `name` (lower case), in order. */
export function headerValues (rawHeaders: string[], name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === name) out.push(rawHeaders[i + 1])
  return out
}

/** Names the Connection header lists, and the fields that are always hop-by-hop. */
export function hopByHop (connection: string[]): Set<string> {
  const names = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'])
  for (const value of connection) for (const name of value.split(',')) if (name.trim() !== '') names.add(name.trim().toLowerCase())
  return names
}

export type BodyFraming = { kind: 'none' } | { kind: 'length', length: number } | { kind: 'chunked' } | { kind: 'close' }

/** Where the body of a response to `method` with this head ends (RFC 9112 §6.3). */
export function bodyFraming (method: string, head: ResponseHead): BodyFraming {
  if (method === 'HEAD' || head.status === 204 || head.status === 304 || head.status < 200) return { kind: 'none' }
  const codings = headerValues(head.rawHeaders, 'transfer-encoding').flatMap(v => v.split(',')).map(v => v.trim().toLowerCase()).filter(v => v !== '')
  if (codings.length > 0) return codings.at(-1) === 'chunked' ? { kind: 'chunked' } : { kind: 'close' }
  const lengths = new Set(headerValues(head.rawHeaders, 'content-length').flatMap(v => v.split(',')).map(v => v.trim()))
  if (lengths.size === 0) return { kind: 'close' }
  const [only] = lengths
  if (lengths.size > 1 || !/^\d{1,15}$/.test(only)) throw malformed('a content-length that is not one number')
  return { kind: 'length', length: Number(only) }
}

/**
 * Takes the body's bytes out of what arrives: `take(chunk)` returns the body
 * parts in it (slices, no copies) and, once the body is complete, `done`
 * with what followed it (a target that sent more than one response for
 * one request; the stream is then not reused).
 */
export class BodyReader {
  private readonly framing: BodyFraming
  private remaining: number
  /** chunked: 'size' (reading a size line), 'data', 'crlf' (after data), 'trailer' (after the last chunk). */
  private state: 'size' | 'data' | 'crlf' | 'trailer' = 'size'
  private line = ''
  done = false

  constructor (framing: BodyFraming) {
    this.framing = framing
    this.remaining = framing.kind === 'length' ? framing.length : 0
    if (framing.kind === 'none' || (framing.kind === 'length' && framing.length === 0)) this.done = true
  }

  take (chunk: Buffer): { parts: Buffer[], rest: Buffer | null } {
    if (this.done) return { parts: [], rest: chunk.length > 0 ? chunk : null }
    switch (this.framing.kind) {
      case 'close':
        return { parts: [chunk], rest: null }
      case 'length': {
        const part = chunk.subarray(0, this.remaining)
        this.remaining -= part.length
        if (this.remaining === 0) this.done = true
        const rest = chunk.subarray(part.length)
        return { parts: part.length > 0 ? [part] : [], rest: rest.length > 0 ? rest : null }
      }
      default:
        return this.takeChunked(chunk)
    }
  }

  /** The connection ended: true if that completes the body (close-delimited), false if it cut it short. */
  endOfStream (): boolean {
    if (this.framing.kind === 'close') this.done = true
    return this.done
  }

  private takeChunked (chunk: Buffer): { parts: Buffer[], rest: Buffer | null } {
    const parts: Buffer[] = []
    let at = 0
    while (at < chunk.length && !this.done) {
      if (this.state === 'data') {
        const part = chunk.subarray(at, at + this.remaining)
        parts.push(part)
        at += part.length
        this.remaining -= part.length
        if (this.remaining === 0) this.state = 'crlf'
        continue
      }
      // A line: a chunk size (with extensions), the CRLF after data, or a trailer field.
      const lf = chunk.indexOf(10, at)
      const piece = chunk.toString('latin1', at, lf < 0 ? chunk.length : lf + 1)
      at += piece.length
      this.line += piece
      if (this.line.length > MAX_CHUNK_LINE) throw malformed('a chunk line over 4 KiB')
      if (lf < 0) break
      const line = this.line.replace(/\r?\n$/, '')
      this.line = ''
      if (this.state === 'crlf') {
        if (line !== '') throw malformed('chunk data longer than its size')
        this.state = 'size'
      } else if (this.state === 'size') {
        const size = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line)
        if (size === null) throw malformed('a chunk size that is not hexadecimal')
        this.remaining = parseInt(size[1], 16)
        this.state = this.remaining === 0 ? 'trailer' : 'data'
      } else if (line === '') {
        this.done = true
      }
    }
    const rest = chunk.subarray(at)
    return { parts: parts.filter(p => p.length > 0), rest: this.done && rest.length > 0 ? rest : null }
  }
}
