import t from 'tap'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import uWS from 'uWebSockets.js'
import { WebSocketServer, type WebSocket } from 'ws'
import { dialWebSocket } from '../../common/dial.js'
import { WsTransport } from '../../protocol/ws-transport.js'
import { MemoryTransport, ErrorCode, type Transport, type TransportEvents } from '../../protocol/index.js'
import { UwsTransport, type AgentSocketData } from '../../relay/uws-transport.js'

/**
 * One contract, three transports (ws, uWebSockets.js, memory): what the mux
 * relies on. `a` is the transport under test, `b` its peer.
 */
interface Pair {
  a: Transport
  b: Transport
  /** Whether `a` receives messages as ephemeral views (valid during the call only). */
  ephemeral: boolean
  /** Stop and restart reading on b's side (its peer a then sees backpressure). */
  pausePeer: () => void
  resumePeer: () => void
}
type Teardown = { teardown: (fn: () => unknown) => void }

async function wsPair (t: Teardown): Promise<Pair> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
  await once(wss, 'listening')
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>
  const client = await dialWebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { maxPayload: 16 << 20 })
  const [server] = await accepted
  t.teardown(async () => { client.terminate(); server.terminate(); await new Promise(resolve => wss.close(resolve)) })
  const peerSocket = (server as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
  return { a: new WsTransport(client, 'client'), b: new WsTransport(server, 'server'), ephemeral: false, pausePeer: () => peerSocket.pause(), resumePeer: () => peerSocket.resume() }
}

async function uwsPair (t: Teardown): Promise<Pair> {
  let opened!: (tr: UwsTransport) => void
  const open = new Promise<UwsTransport>(resolve => { opened = resolve })
  const app = uWS.App().ws<AgentSocketData>('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 << 20,
    maxBackpressure: 64 << 20,
    idleTimeout: 0,
    open: ws => { const tr = new UwsTransport(ws); ws.getUserData().transport = tr; opened(tr) },
    message: (ws, message) => ws.getUserData().transport?.onMessage(message),
    drain: ws => ws.getUserData().transport?.onDrain(),
    close: (ws, code, message) => ws.getUserData().transport?.onClose(code, message)
  })
  const token = await new Promise<uWS.us_listen_socket>((resolve, reject) => app.listen('127.0.0.1', 0, s => s === false ? reject(new Error('listen')) : resolve(s)))
  const client = await dialWebSocket(`ws://127.0.0.1:${uWS.us_socket_local_port(token)}/`, { maxPayload: 16 << 20 })
  const a = await open
  t.teardown(() => { client.terminate(); a.terminate(); uWS.us_listen_socket_close(token) })
  const peerSocket = (client as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
  return { a, b: new WsTransport(client, 'client'), ephemeral: true, pausePeer: () => peerSocket.pause(), resumePeer: () => peerSocket.resume() }
}

async function memoryPair (): Promise<Pair> {
  const [a, b] = MemoryTransport.pair()
  a.ephemeral = true
  return { a, b, ephemeral: true, pausePeer: () => b.pause(), resumePeer: () => b.resume() }
}

interface Recorder { messages: Buffer[], ephemeralFlags: boolean[], drains: number, closed: Promise<{ code: number, reason: string }> }

function record (tr: Transport): Recorder {
  let resolveClose!: (c: { code: number, reason: string }) => void
  const r: Recorder = { messages: [], ephemeralFlags: [], drains: 0, closed: new Promise(resolve => { resolveClose = resolve }) }
  const events: TransportEvents = {
    // Copy at once: an ephemeral view is only valid during the call.
    message: (data, ephemeral) => { r.messages.push(Buffer.from(data)); r.ephemeralFlags.push(ephemeral === true) },
    drain: () => { r.drains++ },
    close: (code, reason) => resolveClose({ code, reason })
  }
  tr.attach(events)
  return r
}

async function until (check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

const transports: Array<[string, (t: Teardown) => Promise<Pair>]> = [['ws', wsPair], ['uWebSockets.js', uwsPair], ['memory', memoryPair]]

for (const [name, make] of transports) {
  t.test(`${name}: messages arrive whole and in order, both ways; ephemeral delivery is flagged`, async t => {
    const p = await make(t)
    const ra = record(p.a)
    const rb = record(p.b)
    const sent = Array.from({ length: 50 }, (_, i) => randomBytes(1 + i * 997))
    for (const m of sent) p.b.send(m)
    for (const m of sent) p.a.send(m)
    await until(() => ra.messages.length === 50 && rb.messages.length === 50, 'delivery')
    t.same(ra.messages.map(sha), sent.map(sha), 'b -> a intact and in order')
    t.same(rb.messages.map(sha), sent.map(sha), 'a -> b intact and in order')
    t.ok(ra.ephemeralFlags.every(f => f === p.ephemeral), `a receives ${p.ephemeral ? 'ephemeral views' : 'buffers it may keep'}`)
  })

  t.test(`${name}: a transport that says it copies on send may have its buffer overwritten at once`, async t => {
    const p = await make(t)
    record(p.a)
    const rb = record(p.b)
    if (p.a.copiesOnSend !== true) {
      t.pass(`${name} (this side) does not claim to copy: the mux allocates per frame for it`)
      return
    }
    const buf = Buffer.alloc(200_000)
    const sent: string[] = []
    for (let i = 0; i < 20; i++) {
      randomBytes(buf.length).copy(buf)
      sent.push(sha(buf))
      p.a.send(buf)
      buf.fill(0xee)
    }
    await until(() => rb.messages.length === 20, 'delivery')
    t.same(rb.messages.map(sha), sent, 'every message as it was when sent')
  })

  t.test(`${name}: send() reports backpressure when the peer stops reading, and drain fires once it reads again`, async t => {
    const p = await make(t)
    const ra = record(p.a)
    const rb = record(p.b)
    p.pausePeer()
    const chunk = randomBytes(256 * 1024)
    let sent = 0
    while (p.a.send(chunk)) {
      sent++
      if (sent > 4096) break
      await new Promise(resolve => setImmediate(resolve))
    }
    t.ok(sent <= 4096, `send() returned false after ${sent} messages of 256 KiB`)
    t.ok(p.a.bufferedAmount > 0, 'bytes are reported as buffered')
    p.resumePeer()
    await until(() => ra.drains > 0, 'drain')
    await until(() => rb.messages.length === sent + 1, 'delivery of everything sent', 20_000)
    t.pass('every message arrived after the peer read again')
  })

  t.test(`${name}: close codes and reasons reach both sides`, async t => {
    const p = await make(t)
    const ra = record(p.a)
    const rb = record(p.b)
    p.a.close(ErrorCode.RG_ERR_PROTOCOL.close, 'bad frame')
    t.match(await rb.closed, { code: ErrorCode.RG_ERR_PROTOCOL.close, reason: 'bad frame' }, 'the peer sees the code and reason')
    t.equal((await ra.closed).code, ErrorCode.RG_ERR_PROTOCOL.close, 'the closing side sees its own code')
    t.equal(p.a.send(Buffer.from('late')), false, 'send after close reports false')
  })
}
