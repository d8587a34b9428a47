/**
 * The server's HTTP proxy through a tunnel, with an HTTP/1.1 client of its
 * own over tunnel streams. Node's client (under http-proxy) copied every
 * body chunk its parser handed up (`Parser::on_body` makes a new Buffer) and
 * passed it through an IncomingMessage and a pipe: 15 % of the server's CPU
 * per GB of a download, and the proxy's downloads ran 20 % slower than the
 * same bytes through a raw TCP session. Here the response head is parsed
 * (http-framing.ts) and the body's bytes go from the tunnel stream to the
 * admin's response as they arrive, as slices. Node's ServerResponse still
 * frames the response for the admin's client (chunked, keep-alive, HEAD).
 *
 * Streams are kept alive per tunnel (tunnel-stream-pool.ts) as node's agent did;
 * a request on a kept-alive stream the target closed meanwhile is sent
 * again on a new one when it has no body. WebSocket upgrades still go
 * through http-proxy.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { BodyReader, bodyFraming, headerValues, hopByHop, parseResponseHead, type BodyFraming, type ResponseHead } from './http-framing.js'
import { sendError } from './http-util.js'
import type { Lease, TunnelStreamPool } from './tunnel-stream-pool.js'

/** The request as the target gets it: hop-by-hop fields out, the target's Host, and the body framed as it came. */
function requestHead (req: IncomingMessage, host: string, chunked: boolean): string {
  const connection = req.headers.connection
  const hop = hopByHop(connection === undefined ? [] : [connection])
  let head = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\nhost: ${host}\r\n`
  for (const [name, value] of Object.entries(req.headers)) {
    // Node's server answered Expect itself (100 Continue), and re-frames a chunked body.
    if (value === undefined || hop.has(name) || name === 'host' || name === 'expect') continue
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`
  }
  if (chunked) head += 'transfer-encoding: chunked\r\n'
  return head + 'connection: keep-alive\r\n\r\n'
}

/** The target's header fields for the admin's client: hop-by-hop out; Content-Length out when a transfer coding frames the body. */
function responseHeaders (head: ResponseHead, framing: BodyFraming): string[] {
  const hop = hopByHop(headerValues(head.rawHeaders, 'connection'))
  const coded = headerValues(head.rawHeaders, 'transfer-encoding').length > 0
  const out: string[] = []
  for (let i = 0; i < head.rawHeaders.length; i += 2) {
    const name = head.rawHeaders[i].toLowerCase()
    if (hop.has(name) || (name === 'content-length' && (coded || framing.kind === 'close'))) continue
    out.push(head.rawHeaders[i], head.rawHeaders[i + 1])
  }
  return out
}

/**
 * How long a kept-alive stream may wait for the next request: a second less
 * than the target says it waits (`Keep-Alive: timeout=5` from node's
 * servers), so that a request is not sent just as the target closes.
 */
function idleMsFor (head: ResponseHead): number | undefined {
  for (const value of headerValues(head.rawHeaders, 'keep-alive')) {
    const timeout = /(?:^|[,;\s])timeout\s*=\s*(\d{1,6})/i.exec(value)
    if (timeout !== null) return Number(timeout[1]) * 1000 - 1000
  }
  return undefined
}

/** Whether the target keeps the connection open after this response. */
function keptAlive (head: ResponseHead): boolean {
  return !headerValues(head.rawHeaders, 'connection').some(v => v.split(',').some(t => t.trim().toLowerCase() === 'close'))
}

/**
 * Proxies `req` through one of `pool`'s streams to the target (whose Host
 * header is `host`) and answers `res`. Resolves when both are done with.
 * Errors before the response head: a coded JSON error (502 unless the
 * tunnel says otherwise); after it: the response is cut short.
 */
export function spliceRequest (req: IncomingMessage, res: ServerResponse, pool: TunnelStreamPool, host: string): Promise<void> {
  const method = req.method ?? 'GET'
  const hasLength = req.headers['content-length'] !== undefined
  const chunked = !hasLength && req.headers['transfer-encoding'] !== undefined
  const bodyless = !hasLength && !chunked
  return new Promise<void>(resolve => {
    const attempt = ({ stream, reused }: Lease): void => {
      let pending: Buffer | null = null
      let head: ResponseHead | null = null
      let body: BodyReader | null = null
      let requestSent = bodyless
      let finished = false
      let waitingForDrain = false

      const release = (): void => {
        finished = true
        stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose)
        req.off('data', onRequestData).off('end', onRequestEnd)
        res.off('close', onClientGone)
        stream.resume()
      }
      const fail = (err: unknown): void => {
        if (finished) return
        release()
        pool.release(stream, false)
        const coded = toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED')
        if (!res.headersSent) sendError(res, coded.code === 'RG_ERR_INTERNAL' ? new RelaygateError('RG_ERR_TUNNEL_CLOSED', coded.message) : coded)
        else res.destroy()
        resolve()
      }
      const complete = (reusable: boolean): void => {
        release()
        res.end()
        pool.release(stream, reusable && requestSent, head === null ? undefined : idleMsFor(head))
        resolve()
      }
      const onClientGone = (): void => {
        if (finished) return
        release()
        pool.release(stream, false)
        resolve()
      }
      const onData = (chunk: Buffer): void => {
        try {
          if (head === null) {
            pending = pending === null ? chunk : Buffer.concat([pending, chunk])
            let parsed = parseResponseHead(pending)
            // 1xx: informational, not for the admin (Node's server answered Expect itself).
            while (parsed !== null && parsed.status < 200) {
              if (parsed.status === 101) throw new RelaygateError('RG_ERR_BAD_GATEWAY', 'the tunnel target switched protocols on a request that asked for no upgrade')
              pending = pending.subarray(parsed.length)
              parsed = parseResponseHead(pending)
            }
            if (parsed === null) return
            head = parsed
            const framing = bodyFraming(method, head)
            body = new BodyReader(framing)
            res.writeHead(head.status, head.reason, responseHeaders(head, framing))
            chunk = pending.subarray(head.length)
            pending = null
          }
          const { parts, rest } = body!.take(chunk)
          let full = false
          for (const part of parts) if (!res.write(part)) full = true
          if (body!.done) {
            complete(rest === null && keptAlive(head))
          } else if (full && !waitingForDrain) {
            waitingForDrain = true
            stream.pause()
            res.once('drain', () => { waitingForDrain = false; if (!finished) stream.resume() })
          }
        } catch (err) {
          fail(err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_BAD_GATEWAY', `the tunnel target's response: ${(err as Error).message}`))
        }
      }
      const onEnd = (): void => {
        if (finished) return
        if (head === null) {
          // A kept-alive stream the target closed meanwhile: once more on a new stream if nothing can have been half done.
          if (reused && pending === null && bodyless) {
            release()
            pool.release(stream, false)
            start()
            return
          }
          fail(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel target closed the connection without answering'))
        } else if (body!.endOfStream()) {
          complete(false)
        } else {
          fail(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel target\'s response was cut short'))
        }
      }
      const onError = (err: Error): void => fail(err)
      const onClose = (): void => fail(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel stream closed'))
      const onRequestData = (chunk: Buffer): void => {
        const ok = chunked ? (stream.write(`${chunk.length.toString(16)}\r\n`), stream.write(chunk), stream.write('\r\n')) : stream.write(chunk)
        if (!ok) {
          req.pause()
          stream.once('drain', () => { if (!finished) req.resume() })
        }
      }
      const onRequestEnd = (): void => {
        if (chunked) stream.write('0\r\n\r\n')
        requestSent = true
      }

      stream.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose)
      res.on('close', onClientGone)
      stream.write(requestHead(req, host, chunked))
      if (!bodyless) {
        req.on('data', onRequestData).on('end', onRequestEnd)
        req.resume()
      }
    }
    const start = (): void => {
      pool.acquire().then(lease => {
        // The client went away while the request waited for a stream: the stream is unused.
        if (res.destroyed) {
          pool.release(lease.stream, true)
          resolve()
        } else {
          attempt(lease)
        }
      }, err => {
        if (!res.headersSent) sendError(res, toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED'))
        else res.destroy()
        resolve()
      })
    }
    start()
  })
}
