import net from 'node:net'
import type { AddressInfo } from 'node:net'

/**
 * A TCP proxy on loopback in front of a relay that sees the HTTP request
 * heads of artifact downloads (`GET /artifacts/...`) and cuts the first
 * `cuts` of them after `cutAfterBytes` bytes of the answer (headers
 * included): the client gets those bytes, then the connection ends. Other
 * connections (the agents' WebSocket) pass untouched.
 */
export class CuttingProxy {
  private readonly server: net.Server
  private readonly sockets = new Set<net.Socket>()
  /** Request heads of the downloads seen, in order. */
  readonly downloads: string[] = []
  port = 0
  cutsLeft: number
  /** Called when a download is cut (after its last byte went to the client). */
  onCut: (() => void) | null = null

  constructor (readonly targetPort: number, readonly cutAfterBytes: number, cuts = 1) {
    this.cutsLeft = cuts
    this.server = net.createServer(client => {
      const upstream = net.connect(this.targetPort, '127.0.0.1')
      this.sockets.add(client)
      this.sockets.add(upstream)
      let first = true
      let cut = false
      let passed = 0
      client.on('data', chunk => {
        if (first) {
          first = false
          const head = chunk.toString('latin1')
          if (head.startsWith('GET /artifacts/')) {
            this.downloads.push(head.split('\r\n\r\n')[0]!)
            if (this.cutsLeft > 0) {
              this.cutsLeft--
              cut = true
            }
          }
        }
        upstream.write(chunk)
      })
      upstream.on('data', chunk => {
        if (!cut) {
          client.write(chunk)
          return
        }
        const room = this.cutAfterBytes - passed
        if (chunk.length < room) {
          passed += chunk.length
          client.write(chunk)
          return
        }
        client.end(chunk.subarray(0, room))
        upstream.destroy()
        this.onCut?.()
      })
      for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
        a.on('end', () => b.end())
        a.on('close', () => { b.destroy(); this.sockets.delete(a) })
        a.on('error', () => b.destroy())
      }
    })
  }

  async listen (): Promise<number> {
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as AddressInfo).port
    return this.port
  }

  /** The `Range` header of each download seen ('' when none). */
  get ranges (): string[] {
    return this.downloads.map(h => /^range:\s*(.*)$/im.exec(h)?.[1]?.trim() ?? '')
  }

  async close (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise(resolve => this.server.close(resolve))
  }
}
