import { createReadStream, createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import { RelaygateError, type MuxStream } from '../protocol/index.js'
import { readArtifactHeader } from '../protocol/messages.js'
import type { Cluster } from './cluster.js'
import type { BlobPeers } from './artifacts.js'
import { HashingMeter } from '../common/sha256.js'

/** A copy must be acknowledged within this (ms): a replica that stopped reading does not hold an upload forever. */
const COPY_TIMEOUT_MS = 10 * 60 * 1000

/**
 * Artifacts in a cluster without shared storage: each replica keeps blobs
 * in its data dir; an upload is copied to other live replicas over the peer
 * links until `copies` hold it; a replica that lacks a blob pulls it from
 * one that has it (sha256 verified).
 */
export function clusterBlobPeers (cluster: Cluster, copies: number | undefined, logger: Logger): BlobPeers {
  const others = async (): Promise<string[]> => (await cluster.liveReplicas()).map(r => r.id).filter(id => id !== cluster.replicaId)

  const push = async (replicaId: string, sha256: string, file: string, size: number): Promise<void> => {
    const stream = await cluster.openStream(replicaId, { t: 'blob-put', sha256, size })
    const answer = firstByte(stream)
    const timer = setTimeout(() => stream.destroy(new RelaygateError('RG_ERR_PEER_UNAVAILABLE', `replica ${replicaId} did not store the copy in time`)), COPY_TIMEOUT_MS)
    try {
      await pipeline(createReadStream(file), stream, { end: true }).catch(err => { throw err })
      if (await answer !== 0) throw new RelaygateError('RG_ERR_DIGEST_MISMATCH', `replica ${replicaId} refused the copy`)
    } finally {
      clearTimeout(timer)
      stream.destroy()
    }
  }

  const pullFrom = async (replicaId: string, sha256: string, into: string): Promise<void> => {
    const stream = await cluster.openStream(replicaId, { t: 'blob', sha256, offset: 0 })
    try {
      const { size } = await readArtifactHeader(stream)
      const meter = new HashingMeter(size, () => new RelaygateError('RG_ERR_DIGEST_MISMATCH', `replica ${replicaId} sent more than ${size} bytes`))
      await pipeline(stream, meter, createWriteStream(into))
      if (meter.bytes !== size || meter.digest() !== sha256) throw new RelaygateError('RG_ERR_DIGEST_MISMATCH', `replica ${replicaId} sent bytes that are not ${sha256}`)
    } finally {
      stream.destroy()
    }
  }

  return {
    copiesWanted: async () => copies ?? Math.min(2, 1 + (await others()).length),
    replicate: async (sha256, file, size, wanted) => {
      let stored = 0
      for (const id of await others()) {
        if (stored >= wanted) break
        try {
          await push(id, sha256, file, size)
          stored++
        } catch (err) {
          logger.warn({ sha256, replica: id, err: (err as Error).message }, 'artifact not copied to a replica; trying another')
        }
      }
      return stored
    },
    pull: async (sha256, into) => {
      for (const id of await others()) {
        try {
          await pullFrom(id, sha256, into)
          return true
        } catch (err) {
          logger.debug({ sha256, replica: id, err: (err as Error).message }, 'artifact not pulled from this replica')
        }
      }
      return false
    },
    dropped: sha256 => cluster.announce({ kind: 'artifact-deleted', sha256 })
  }
}

/** The one byte a receiving replica answers (the stream ends after it). */
function firstByte (stream: MuxStream): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = false
    stream.on('data', (chunk: Buffer) => {
      if (!done && chunk.length > 0) { done = true; resolve(chunk[0]) }
    })
    stream.once('error', err => { if (!done) { done = true; reject(err) } })
    stream.once('close', () => { if (!done) { done = true; reject(new RelaygateError('RG_ERR_PEER_UNAVAILABLE', 'the replica closed the copy without an answer')) } })
  })
}
