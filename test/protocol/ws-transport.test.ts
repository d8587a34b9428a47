import t from 'tap'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import net, { type AddressInfo } from 'node:net'
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

/** A TCP forwarder in front of `port` that records what the client sends. */
async function tap (test: Pick<typeof t, 'teardown'>, port: number): Promise<{ port: number, fromClient: () => Buffer }> {
  const chunks: Buffer[] = []
  const server = net.createServer(c => {
    const up = net.connect(port, '127.0.0.1')
    c.on('data', d => { chunks.push(Buffer.from(d)); up.write(d) })
    up.pipe(c)
    c.on('error', () => up.destroy())
    up.on('error', () => c.destroy())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  test.teardown(() => { server.close() })
  return { port: (server.address() as AddressInfo).port, fromClient: () => Buffer.concat(chunks) }
}

t.test('our dialers mask with a zero key: the bytes go on the wire as sent, and no side claims to copy', async t => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
  await once(wss, 'listening')
  t.teardown(async () => { await new Promise(resolve => wss.close(resolve)) })
  const wire = await tap(t, (wss.address() as AddressInfo).port)
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>
  const client = await dialWebSocket(`ws://127.0.0.1:${wire.port}`, { maxPayload: 1 << 20 })
  const [server] = await accepted
  t.teardown(() => { client.terminate(); server.terminate() })
  const clientT = new WsTransport(client, 'client')
  const serverT = new WsTransport(server, 'server')
  t.equal(clientT.copiesOnSend, false, 'a zero-key sender keeps a reference to the buffer until it is written')
  t.equal(serverT.copiesOnSend, false, 'so does an unmasked one')

  const got: Buffer[] = []
  serverT.attach({ message: d => got.push(Buffer.from(d)), drain: () => {}, close: () => {} })
  clientT.attach({ message: () => {}, drain: () => {}, close: () => {} })
  const message = randomBytes(100_000)
  clientT.send(message)
  while (got.length < 1) await new Promise(resolve => setTimeout(resolve, 5))
  t.ok(got[0].equals(message), 'the server received the message')
  const bytes = wire.fromClient()
  const at = bytes.indexOf(message.subarray(0, 64))
  t.ok(at >= 14, 'the payload crossed the wire verbatim (not masked)')
  // A 100,000-byte frame: 2 header bytes, 8 of length, then the 4-byte masking key.
  t.equal(bytes[at - 13] & 0x80, 0x80, 'the MASK bit is set, as RFC 6455 requires of a client')
  t.same([...bytes.subarray(at - 4, at)], [0, 0, 0, 0], 'with a key of zeros')
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

t.test('muxes over real WebSockets: several concurrent streams arrive intact both ways (buffers kept by reference on both sides)', async t => {
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
