import http from 'node:http'
import type { Duplex } from 'node:stream'

/** Node's HTTP client needs a few socket methods a mux stream does not have. */
export function asSocket (stream: Duplex): Duplex {
  const s = stream as Duplex & Record<string, unknown>
  s.setNoDelay = () => s
  s.setKeepAlive = () => s
  s.setTimeout = (_ms: number, cb?: () => void) => { if (cb !== undefined) s.once('timeout', cb); return s }
  s.ref = () => s
  s.unref = () => s
  s.remoteAddress = 'tunnel'
  s.remotePort = 0
  return stream
}

/** An http.Agent whose connections are streams: tunnel streams, or peer-link streams between replicas (keep-alive reuses them). */
export class TunnelHttpAgent extends http.Agent {
  constructor (private readonly open: () => Duplex, sockets = { max: 64, free: 8 }) {
    super({ keepAlive: true, maxSockets: sockets.max, maxFreeSockets: sockets.free, timeout: 120_000 })
  }

  override createConnection (_options: unknown, cb?: (err: Error | null, socket: Duplex) => void): Duplex | undefined {
    try {
      return asSocket(this.open())
    } catch (err) {
      cb?.(err as Error, undefined as unknown as Duplex)
      return undefined
    }
  }
}
