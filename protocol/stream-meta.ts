/**
 * Stream kinds: the OPEN metadata of each (JSON, one schema per direction)
 * and the bytes a stream starts with where it has a header.
 *
 *   server -> relay  {t:'tunnel', sid, tunnelId, kind:'http'|'tcp', port?, nonce}   a tunnel stream for one agent
 *   relay -> agent   {t:'tunnel', tunnelId, kind, port?, nonce}                     the same, without the sid
 *                    (its bytes are end-to-end encrypted records: tunnel-stream.ts)
 *   relay -> server  {t:'artifact', sha256, offset}   a cache fill; the server answers with the
 *                    16-byte artifact header (u64 size, u64 offset it serves from), then the bytes
 *   replica -> replica {t:'http'}           an admin's HTTP connection forwarded one hop to the replica
 *                                           that holds the endpoint's relay (bytes: HTTP/1.1 as received)
 *                      {t:'blob', sha256, offset}  an artifact blob the asking replica lacks (answered as
 *                                           an artifact stream: the 16-byte header, then the bytes)
 *                      {t:'blob-put', sha256, size}  a copy of an uploaded blob; the receiver answers
 *                                           one byte (0 = stored and verified) once it is on its disk
 */
import { Type, Id, B64, Sha256Hex, Size, message, messageSet, withSid, type Static } from './schema.js'
import { RelaygateError } from './errors.js'
import { decodeJson } from './decode.js'
import { encodeJson } from './encode.js'
import type { MuxStream } from './stream.js'

const Port = Type.Integer({ minimum: 1, maximum: 65535 })
export const TunnelStream = message('tunnel', {
  tunnelId: Id,
  kind: Type.Union([Type.Literal('http'), Type.Literal('tcp')]),
  port: Type.Optional(Port),
  /** The stream's nonce: its end-to-end keys come from it and the tunnel's credential (tunnel-stream.ts). */
  nonce: B64(32)
})
export type TunnelStreamMeta = Static<typeof TunnelStream>
export const ArtifactStream = message('artifact', { sha256: Sha256Hex, offset: Size })

/** Streams the server opens on a relay link. */
export const ServerStreams = messageSet('server stream metadata', [withSid(TunnelStream)])
export type ServerStreamMeta = ReturnType<typeof ServerStreams.parse>
/** Streams a relay opens on its server link. */
export const RelayStreams = messageSet('relay stream metadata', [ArtifactStream])
export type RelayStreamMeta = ReturnType<typeof RelayStreams.parse>
/** Streams one server replica opens on its peer link to another. */
export const PeerStreams = messageSet('peer stream metadata', [
  message('http', {}),
  message('blob', { sha256: Sha256Hex, offset: Size }),
  message('blob-put', { sha256: Sha256Hex, size: Size })
])
export type PeerStreamMeta = ReturnType<typeof PeerStreams.parse>
/** Streams a relay opens on an agent link. */
export const AgentStreams = messageSet('relay stream metadata', [TunnelStream])
export type AgentStreamMeta = ReturnType<typeof AgentStreams.parse>

/** Decodes and validates a stream's metadata: throws RG_ERR_PROTOCOL (the peer is closed for it). */
export function parseStreamMeta<T> (stream: MuxStream, set: { parse: (value: unknown) => T }): T {
  return set.parse(decodeJson(stream.meta))
}

/** Metadata bytes for an OPEN frame (typed by the caller's schema). */
export function encodeStreamMeta (meta: ServerStreamMeta | RelayStreamMeta | AgentStreamMeta | PeerStreamMeta): Buffer {
  return encodeJson(meta)
}

export const ARTIFACT_HEADER_SIZE = 16

/** The header of an artifact stream to a relay: total size (u64) then the offset served from (u64). */
export function encodeArtifactHeader (size: number, offset: number): Buffer {
  const b = Buffer.alloc(ARTIFACT_HEADER_SIZE)
  b.writeBigUInt64BE(BigInt(size), 0)
  b.writeBigUInt64BE(BigInt(offset), 8)
  return b
}

export function decodeArtifactHeader (header: Buffer): { size: number, offset: number } {
  if (header.length !== ARTIFACT_HEADER_SIZE) throw new RelaygateError('RG_ERR_PROTOCOL', `artifact header must be ${ARTIFACT_HEADER_SIZE} bytes, got ${header.length}`)
  const size = header.readBigUInt64BE(0)
  const offset = header.readBigUInt64BE(8)
  if (size > BigInt(Number.MAX_SAFE_INTEGER) || offset > size) throw new RelaygateError('RG_ERR_PROTOCOL', `artifact header out of range (size ${size}, offset ${offset})`)
  return { size: Number(size), offset: Number(offset) }
}

/** Reads the artifact header from the start of a stream, leaving the bytes after it in the stream. */
export async function readArtifactHeader (stream: MuxStream): Promise<{ size: number, offset: number }> {
  return decodeArtifactHeader(await readExactly(stream, ARTIFACT_HEADER_SIZE))
}

/** Reads exactly `n` bytes from the start of a stream, leaving the rest in it. */
async function readExactly (stream: MuxStream, n: number): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let have = 0
    const onReadable = (): void => {
      let chunk: Buffer | null
      while (have < n && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk)
        have += chunk.length
      }
      if (have < n) return
      cleanup()
      const all = Buffer.concat(chunks)
      if (all.length > n) stream.unshift(all.subarray(n))
      resolve(all.subarray(0, n))
    }
    const onError = (err: Error): void => { cleanup(); reject(err) }
    const onEnd = (): void => { cleanup(); reject(new RelaygateError('RG_ERR_PROTOCOL', 'stream ended before its header')) }
    const cleanup = (): void => {
      stream.off('readable', onReadable)
      stream.off('error', onError)
      stream.off('end', onEnd)
    }
    stream.on('readable', onReadable)
    stream.on('error', onError)
    stream.on('end', onEnd)
  })
}
