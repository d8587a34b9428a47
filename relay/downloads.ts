import type uWS from 'uWebSockets.js'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { ArtifactCache } from '../cache/index.js'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { SHA256_HEX } from '../common/sha256.js'

/** Parses `Range: bytes=N-` (the only form agents send, to resume). */
export function parseRange (header: string, size: number): { start: number } | 'invalid' | null {
  if (header === '') return null
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim())
  if (m === null) return 'invalid'
  const start = Number(m[1])
  if (m[2] !== '' && Number(m[2]) !== size - 1) return 'invalid'
  if (start >= size && size > 0) return 'invalid'
  return { start }
}

function sendError (res: uWS.HttpResponse, err: RelaygateError): void {
  res.cork(() => {
    res.writeStatus(`${err.status} ${err.code}`).writeHeader('content-type', 'application/json')
      .end(JSON.stringify({ error: { code: err.code, message: err.message } }))
  })
}

/**
 * `GET /artifacts/<sha256>` for agents: authorised by the download token the
 * relay gave the agent over its link, served from the cache (or following a
 * fill), with Range/If-Range for resuming, and uWS backpressure respected.
 */
export function serveArtifact (res: uWS.HttpResponse, req: uWS.HttpRequest, options: {
  cache: ArtifactCache
  authorize: (token: string) => boolean
  logger: Logger
  /** Serve this artifact instead of the one the path names (/install/<name>). */
  sha256?: string
}): void {
  const sha256 = options.sha256 ?? req.getParameter(0) ?? ''
  const auth = req.getHeader('authorization')
  const rangeHeader = req.getHeader('range')
  const ifRange = req.getHeader('if-range')
  // An agent whose last download did not verify asks for the bytes to be hashed as they are served.
  const verify = req.getQuery('verify') === '1'
  let aborted = false
  let stream: Readable | null = null
  let recycle: (chunk: Buffer) => void = () => {}
  res.onAborted(() => {
    aborted = true
    stream?.destroy()
  })
  const token = /^Bearer\s+(\S+)$/i.exec(auth)?.[1] ?? ''
  if (!options.authorize(token)) {
    sendError(res, new RelaygateError('RG_ERR_UNAUTHORIZED', 'send Authorization: Bearer <download token from the relay link>'))
    return
  }
  if (!SHA256_HEX.test(sha256)) {
    sendError(res, new RelaygateError('RG_ERR_BAD_REQUEST', 'artifacts are named by their sha256'))
    return
  }
  // If-Range with our ETag (the digest itself): the Range holds; anything else: whole file.
  const etag = `"${sha256}"`
  const rangeAllowed = ifRange === '' || ifRange === etag
  void (async () => {
    let start = 0
    let size: number
    try {
      const wanted = rangeAllowed ? /^bytes=(\d+)-/.exec(rangeHeader)?.[1] : undefined
      const got = await options.cache.get(sha256, wanted === undefined ? 0 : Number(wanted), { verify })
      size = got.size
      stream = got.stream
      recycle = got.recycle
      if (rangeAllowed) {
        const range = parseRange(rangeHeader, size)
        if (range === 'invalid') {
          stream.destroy()
          if (aborted) return
          res.cork(() => res.writeStatus('416 Range Not Satisfiable').writeHeader('content-range', `bytes */${size}`).end())
          return
        }
        if (range !== null) start = range.start
      }
    } catch (err) {
      if (!aborted) sendError(res, toRelaygateError(err))
      return
    }
    if (aborted) {
      stream.destroy()
      return
    }
    const total = size - start
    res.cork(() => {
      if (start > 0) res.writeStatus('206 Partial Content').writeHeader('content-range', `bytes ${start}-${size - 1}/${size}`)
      else res.writeStatus('200 OK')
      res.writeHeader('content-type', 'application/octet-stream').writeHeader('etag', etag).writeHeader('accept-ranges', 'bytes')
    })
    if (total === 0) {
      stream.destroy()
      res.cork(() => res.end())
      return
    }
    const body = stream
    let pending: { chunk: Buffer, offset: number } | null = null
    body.on('data', (chunk: Buffer) => {
      if (aborted) return
      const offset = res.getWriteOffset()
      let ok = false
      let done = false
      res.cork(() => { [ok, done] = res.tryEnd(chunk, total) })
      if (done || ok) {
        // uWS has taken (copied or sent) every byte: the read buffer can be read into again.
        recycle(chunk)
        return
      }
      // Backpressure: hold this chunk's rest, pause, resume when uWS can write again.
      pending = { chunk, offset }
      body.pause()
      res.onWritable(at => {
        if (pending === null) return true
        let ok2 = false
        let done2 = false
        // Not in res.cork(): inside onWritable that made tryEnd report a failure after
        // filling only the cork buffer, with no kernel backpressure, so no writable
        // event ever came and the download hung until uWS's idle timeout.
        ;[ok2, done2] = res.tryEnd(pending!.chunk.subarray(at - pending!.offset), total)
        if (done2 || ok2) {
          recycle(pending!.chunk)
          pending = null
          body.resume()
        }
        return ok2
      })
    })
    body.on('error', err => {
      options.logger.warn({ sha256, err: (err as Error).message }, 'artifact stream failed mid-way')
      if (!aborted) {
        aborted = true
        res.close()
      }
    })
  })()
}
