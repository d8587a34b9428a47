import net from 'node:net'
import type { AddressInfo } from 'node:net'

/**
 * A TCP forwarder in front of a relay that can turn into a black hole: for a
 * while it forwards nothing and closes nothing (no FIN, no RST), as a cut
 * WAN link or a silent firewall does. Connections caught in it stay dead
 * (their bytes are dropped until an end closes them); new connections after
 * the black hole forward again.
 */
export class BlackholeForwarder {
  private readonly server: net.Server
  private readonly sockets = new Set<net.Socket>()
  private until = 0
  port = 0

  constructor (readonly targetPort: number) {
    this.server = net.createServer(client => {
      const upstream = net.connect(this.targetPort, '127.0.0.1')
      let dead = this.holed
      const kill = (): void => { dead = true }
      this.deadens.add(kill)
      for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
        this.sockets.add(from)
        from.on('data', chunk => {
          if (dead || this.holed) dead = true
          else to.write(chunk)
        })
        from.on('end', () => { if (!dead) to.end() })
        from.on('close', () => { to.destroy(); this.sockets.delete(from); this.deadens.delete(kill) })
        from.on('error', () => to.destroy())
      }
    })
  }

  /** Connections open when a black hole starts die with it. */
  private readonly deadens = new Set<() => void>()

  private get holed (): boolean {
    return Date.now() < this.until
  }

  async listen (): Promise<number> {
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as AddressInfo).port
    return this.port
  }

  /** Forwards nothing for `ms`; every connection open now is dead for good. */
  blackhole (ms: number): void {
    this.until = Date.now() + ms
    for (const kill of this.deadens) kill()
  }

  async close (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise(resolve => this.server.close(resolve))
  }
}
