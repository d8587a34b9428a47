import net from 'node:net'

/**
 * A TCP forwarder that delays each direction by `oneWayMs` and keeps order:
 * a path with a round-trip time of twice that (this kernel has no netem).
 * Bytes in flight are bounded by what the ends' own flow control lets them
 * send. The delay can change between measurements.
 */
export interface DelayProxy {
  port: number
  oneWayMs: number
  close: () => Promise<void>
}

export async function startDelayProxy (upstreamPort: number, oneWayMs: number, host = '127.0.0.1'): Promise<DelayProxy> {
  const sockets = new Set<net.Socket>()
  const proxy: DelayProxy = { port: 0, oneWayMs, close: async () => {} }
  /**
   * Copies `from` to `to`, each chunk `proxy.oneWayMs` after it arrived, in
   * order: one queue and one timer per direction (a timer per chunk would
   * reorder chunks whose delays round to different milliseconds).
   */
  const delayed = (from: net.Socket, to: net.Socket): void => {
    const queue: Array<{ due: number, chunk: Buffer | null }> = []
    let timer: NodeJS.Timeout | null = null
    const pump = (): void => {
      timer = null
      const now = performance.now()
      while (queue.length > 0 && queue[0].due <= now) {
        const { chunk } = queue.shift()!
        if (to.destroyed) continue
        if (chunk === null) to.end()
        else to.write(chunk)
      }
      if (queue.length > 0) timer = setTimeout(pump, Math.max(0, queue[0].due - now))
    }
    const add = (chunk: Buffer | null): void => {
      // No delay: straight through (a 0 ms timer still waits a millisecond or more).
      if (proxy.oneWayMs === 0 && queue.length === 0) {
        if (to.destroyed) return
        if (chunk === null) to.end()
        else to.write(chunk)
        return
      }
      const last = queue.at(-1)?.due ?? 0
      queue.push({ due: Math.max(performance.now() + proxy.oneWayMs, last), chunk })
      if (timer === null) timer = setTimeout(pump, Math.max(0, queue[0].due - performance.now()))
    }
    from.on('data', (chunk: Buffer) => add(chunk))
    from.on('end', () => add(null))
  }
  const server = net.createServer(client => {
    const upstream = net.connect(upstreamPort, host)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.setNoDelay(true)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => { client.destroy(); upstream.destroy() })
    }
    delayed(client, upstream)
    delayed(upstream, client)
  })
  await new Promise<void>(resolve => server.listen(0, host, resolve))
  proxy.port = (server.address() as net.AddressInfo).port
  proxy.close = async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>(resolve => server.close(() => resolve()))
  }
  return proxy
}
