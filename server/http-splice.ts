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
import type { Duplex } from 'node:stream'
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
export async function spliceRequest (req: IncomingMessage, res: ServerResponse, pool: TunnelStreamPool, host: string): Promise<void> {
  const hasLength = req.headers['content-length'] !== undefined
  const chunked = !hasLength && req.headers['transfer-encoding'] !== undefined
  for (;;) {
    let lease: Lease
    try {
      lease = await pool.acquire()
    } catch (err) {
      if (!res.headersSent) sendError(res, toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED'))
      else res.destroy()
      return
    }
    // The client went away while the request waited for a stream: the stream is unused.
    if (res.destroyed) {
      pool.release(lease.stream, true)
      return
    }
    const outcome = await new Exchange(req, res, pool, lease, host, chunked, !hasLength && !chunked).done
    if (outcome !== 'again') return
  }
}

/**
 * One request on one stream. Ends 'again' when a kept-alive stream turned
 * out closed by the target before any answer and the request has no body
 * (nothing can have been half done): it is sent again on a new stream.
 */
class Exchange {
  readonly done: Promise<'done' | 'again'>
  private settle!: (outcome: 'done' | 'again') => void
  private readonly stream: Duplex
  private pending: Buffer | null = null
  private head: ResponseHead | null = null
  private body: BodyReader | null = null
  private requestSent: boolean
  private finished = false
  private waitingForDrain = false
  private readonly listeners = {
    data: (chunk: Buffer) => this.onData(chunk),
    end: () => this.onEnd(),
    error: (err: Error) => this.fail(err),
    close: () => this.fail(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel stream closed')),
    clientGone: () => this.onClientGone(),
    requestData: (chunk: Buffer) => this.onRequestData(chunk),
    requestEnd: () => this.onRequestEnd()
  }

  constructor (private readonly req: IncomingMessage, private readonly res: ServerResponse, private readonly pool: TunnelStreamPool,
    private readonly lease: Lease, host: string, private readonly chunked: boolean, private readonly bodyless: boolean) {
    this.done = new Promise(resolve => { this.settle = resolve })
    this.stream = lease.stream
    this.requestSent = bodyless
    const l = this.listeners
    this.stream.on('data', l.data).on('end', l.end).on('error', l.error).on('close', l.close)
    res.on('close', l.clientGone)
    this.stream.write(requestHead(req, host, chunked))
    if (!bodyless) {
      req.on('data', l.requestData).on('end', l.requestEnd)
      req.resume()
    }
  }

  /** Stops listening; the stream goes back to the pool (kept if `reusable`). */
  private finish (reusable: boolean, idleMs?: number, outcome: 'done' | 'again' = 'done'): void {
    this.finished = true
    const l = this.listeners
    this.stream.off('data', l.data).off('end', l.end).off('error', l.error).off('close', l.close)
    this.req.off('data', l.requestData).off('end', l.requestEnd)
    this.res.off('close', l.clientGone)
    this.stream.resume()
    this.pool.release(this.stream, reusable, idleMs)
    this.settle(outcome)
  }

  private fail (err: unknown): void {
    if (this.finished) return
    this.finish(false)
    const coded = toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED')
    if (!this.res.headersSent) sendError(this.res, coded.code === 'RG_ERR_INTERNAL' ? new RelaygateError('RG_ERR_TUNNEL_CLOSED', coded.message) : coded)
    else this.res.destroy()
  }

  private complete (reusable: boolean): void {
    this.res.end()
    // Called once the body is read, so the head is there.
    this.finish(reusable && this.requestSent, idleMsFor(this.head!))
  }

  private onClientGone (): void {
    if (!this.finished) this.finish(false)
  }

  private onData (chunk: Buffer): void {
    try {
      if (this.head === null) {
        const rest = this.readHead(chunk)
        if (rest === null) return
        chunk = rest
      }
      const { parts, rest } = this.body!.take(chunk)
      let full = false
      for (const part of parts) if (!this.res.write(part)) full = true
      if (this.body!.done) {
        this.complete(rest === null && keptAlive(this.head!))
      } else if (full && !this.waitingForDrain) {
        this.waitingForDrain = true
        this.stream.pause()
        this.res.once('drain', () => { this.waitingForDrain = false; if (!this.finished) this.stream.resume() })
      }
    } catch (err) {
      this.fail(err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_BAD_GATEWAY', `the tunnel target's response: ${(err as Error).message}`))
    }
  }

  /** Collects the response head; once whole, answers the client's head and returns what followed it (else null). */
  private readHead (chunk: Buffer): Buffer | null {
    let pending = this.pending === null ? chunk : Buffer.concat([this.pending, chunk])
    let parsed = parseResponseHead(pending)
    // 1xx: informational, not for the admin (Node's server answered Expect itself).
    while (parsed !== null && parsed.status < 200) {
      if (parsed.status === 101) throw new RelaygateError('RG_ERR_BAD_GATEWAY', 'the tunnel target switched protocols on a request that asked for no upgrade')
      pending = pending.subarray(parsed.length)
      parsed = parseResponseHead(pending)
    }
    if (parsed === null) {
      this.pending = pending
      return null
    }
    this.head = parsed
    this.pending = null
    const framing = bodyFraming(this.req.method ?? 'GET', parsed)
    this.body = new BodyReader(framing)
    this.res.writeHead(parsed.status, parsed.reason, responseHeaders(parsed, framing))
    return pending.subarray(parsed.length)
  }

  private onEnd (): void {
    if (this.finished) return
    if (this.head !== null) {
      if (this.body!.endOfStream()) this.complete(false)
      else this.fail(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel target\'s response was cut short'))
    } else if (this.lease.reused && this.pending === null && this.bodyless) {
      this.finish(false, undefined, 'again')
    } else {
      this.fail(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'the tunnel target closed the connection without answering'))
    }
  }

  private onRequestData (chunk: Buffer): void {
    const ok = this.chunked ? (this.stream.write(`${chunk.length.toString(16)}\r\n`), this.stream.write(chunk), this.stream.write('\r\n')) : this.stream.write(chunk)
    if (!ok) {
      this.req.pause()
      this.stream.once('drain', () => { if (!this.finished) this.req.resume() })
    }
  }

  private onRequestEnd (): void {
    if (this.chunked) this.stream.write('0\r\n\r\n')
    this.requestSent = true
  }
}
