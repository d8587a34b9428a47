import t from 'tap'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import { dialWebSocket } from '../../common/dial.js'
import { WsTransport } from '../../protocol/ws-transport.js'
import { Mux, type MuxStream } from '../../protocol/index.js'

/** A real `ws` server on loopback and a client dialed the way agents and relays dial. */
async function wsPair (test: Pick<typeof t, 'teardown'>): Promise<{ client: WebSocket, server: WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
  await once(wss, 'listening')
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>
  const client = await dialWebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { maxPayload: 1 << 20 })
  const [server] = await accepted
  test.teardown(async () => {
    client.terminate()
    server.terminate()
    await new Promise(resolve => wss.close(resolve))
  })
  return { client, server }
}

t.test('a dialed (masking) client copies on send; the accepting side does not claim to', async t => {
  const { client, server } = await wsPair(t)
  const clientT = new WsTransport(client, 'client')
  const serverT = new WsTransport(server, 'server')
  t.equal(clientT.copiesOnSend, true)
  t.equal(serverT.copiesOnSend, false, 'an unmasked sender keeps a reference to the buffer until it is written')

  // The contract the mux relies on: overwrite the buffer right after send().
  const got: Buffer[] = []
  serverT.attach({ message: d => got.push(Buffer.from(d)), drain: () => {}, close: () => {} })
  clientT.attach({ message: () => {}, drain: () => {}, close: () => {} })
  const buf = Buffer.alloc(100_000)
  const sent: string[] = []
  for (let i = 0; i < 20; i++) {
    randomBytes(buf.length).copy(buf)
    sent.push(createHash('sha256').update(buf).digest('hex'))
    clientT.send(buf)
    buf.fill(0xee) // would corrupt a message still referenced by the sender
  }
  while (got.length < 20) await new Promise(resolve => setTimeout(resolve, 5))
  t.same(got.map(b => createHash('sha256').update(b).digest('hex')), sent, 'every message arrived as it was when sent')
})

async function hashAll (stream: MuxStream): Promise<{ bytes: number, sha: string }> {
  const h = createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) {
    h.update(chunk as Buffer)
    bytes += (chunk as Buffer).length
  }
  return { bytes, sha: h.digest('hex') }
}

async function writeAll (stream: MuxStream, total: number, piece: number): Promise<string> {
  const h = createHash('sha256')
  for (let sent = 0; sent < total; sent += piece) {
    const chunk = randomBytes(Math.min(piece, total - sent))
    h.update(chunk)
    if (!stream.write(chunk)) await once(stream, 'drain')
  }
  stream.end()
  return h.digest('hex')
}

t.test('muxes over real WebSockets: several concurrent streams arrive intact both ways (reused DATA buffer on the client)', async t => {
  const { client, server } = await wsPair(t)
  const accepted: MuxStream[] = []
  const dialer = new Mux(new WsTransport(client, 'client'), { role: 'dialer' })
  const listener = new Mux(new WsTransport(server, 'server'), {
    role: 'listener',
    onStream: s => {
      accepted.push(s)
      // Echo: every byte goes back on the same stream.
      s.pipe(s)
    }
  })
  t.teardown(async () => { await dialer.destroy(); await listener.destroy() })

  const streams = [0, 1, 2].map(i => dialer.openStream(Buffer.from(`s${i}`)))
  const sizes = [3 * 1024 * 1024, 1024 * 1024 + 17, 200_001]
  const results = await Promise.all(streams.map(async (s, i) => {
    const [sent, echoed] = await Promise.all([writeAll(s, sizes[i], 33_333 + i * 1000), hashAll(s)])
    return { sent, echoed }
  }))
  t.equal(accepted.length, 3)
  results.forEach((r, i) => {
    t.equal(r.echoed.bytes, sizes[i], `stream ${i}: every byte came back`)
    t.equal(r.echoed.sha, r.sent, `stream ${i}: same sha256 after the round trip`)
  })
})
