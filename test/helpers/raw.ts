import WebSocket from 'ws'
import { FrameDecoder, type Frame, AGENT_MAX_PAYLOAD } from '../../protocol/index.js'

/** A bare WebSocket client speaking frames by hand: for bad-input tests. */
export class RawClient {
  readonly ws: WebSocket
  readonly frames: Frame[] = []
  readonly closed: Promise<{ code: number, reason: string }>
  private readonly decoder = new FrameDecoder(AGENT_MAX_PAYLOAD * 4)
  private waiters: Array<() => void> = []

  private constructor (ws: WebSocket) {
    this.ws = ws
    ws.on('message', (data: Buffer) => {
      for (const f of this.decoder.push(data)) this.frames.push(f)
      for (const w of this.waiters.splice(0)) w()
    })
    this.closed = new Promise(resolve => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    ws.on('error', () => {})
  }

  /** `localAddress`: the source address (any of 127.0.0.0/8 on loopback), to look like another peer. */
  static async connect (url: string, options: { localAddress?: string } = {}): Promise<RawClient> {
    const ws = new WebSocket(url, { rejectUnauthorized: false, ...options })
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    return new RawClient(ws)
  }

  send (data: Buffer): void {
    this.ws.send(data, { binary: true })
  }

  /** Waits for a frame matching `pred` (already received or arriving). */
  async next (pred: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.frames.find(pred)
      if (found !== undefined) {
        this.frames.splice(this.frames.indexOf(found), 1)
        return found
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('frame not received in time')
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  close (): void {
    this.ws.terminate()
  }
}
