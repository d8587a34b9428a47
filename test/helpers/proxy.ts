import net from 'node:net'
import type { AddressInfo } from 'node:net'

/**
 * A TCP proxy on loopback that can freeze its connections: bytes stop
 * flowing both ways while the sockets stay open, as on a network that
 * silently drops packets. TCP does not notice; only liveness checks do.
 */
export class FreezableProxy {
  private readonly server: net.Server
  private readonly pairs = new Set<[net.Socket, net.Socket]>()
  port = 0
  frozen = false

  constructor (readonly targetPort: number, readonly targetHost = '127.0.0.1') {
    this.server = net.createServer(client => {
      if (this.frozen) {
        client.destroy()
        return
      }
      const upstream = net.connect(this.targetPort, this.targetHost)
      const pair: [net.Socket, net.Socket] = [client, upstream]
      this.pairs.add(pair)
      const forward = (from: net.Socket, to: net.Socket): void => {
        from.on('data', chunk => { if (!this.frozen) to.write(chunk) })
        from.on('close', () => { to.destroy(); this.pairs.delete(pair) })
        from.on('error', () => to.destroy())
      }
      forward(client, upstream)
      forward(upstream, client)
    })
  }

  async listen (): Promise<number> {
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as AddressInfo).port
    return this.port
  }

  /** Stops forwarding on existing connections; new connections are refused while frozen. */
  freeze (): void {
    this.frozen = true
  }

  thaw (): void {
    this.frozen = false
  }

  get connections (): number {
    return this.pairs.size
  }

  async close (): Promise<void> {
    for (const [a, b] of this.pairs) { a.destroy(); b.destroy() }
    await new Promise(resolve => this.server.close(resolve))
  }
}
