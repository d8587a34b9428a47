import t from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { loadOrCreateCert } from '../../common/tls.js'
import { resetConnection } from '../../common/reset.js'
import { tempDir, type TapLike } from '../helpers/cluster.js'
import { within } from '../helpers/tunnel-data.js'

/** How the peer's side ended: 'end' (a FIN), or the error's code. */
async function howItEnds (socket: Duplex): Promise<string> {
  return await new Promise(resolve => {
    socket.on('data', () => {})
    socket.once('end', () => resolve('end'))
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

/** A listening `server`, the connection it accepted (`ready` names the event), and the client's end of it. */
async function pair (t: TapLike, server: net.Server, connect: (port: number) => Duplex, ready = 'connection'): Promise<{ accepted: Duplex, client: Duplex }> {
  const accepted = new Promise<Duplex>(resolve => server.once(ready, resolve))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const client = connect((server.address() as net.AddressInfo).port)
  client.on('error', () => {})
  const got = await accepted
  got.on('error', () => {})
  return { accepted: got, client }
}

t.test('a TCP connection: the peer sees ECONNRESET', async t => {
  const { accepted, client } = await pair(t, net.createServer(), port => net.connect(port, '127.0.0.1'))
  const ends = howItEnds(client)
  resetConnection(accepted)
  t.equal(await ends, 'ECONNRESET')
})

t.test('a TLS connection a tls.Server accepted: the TCP under it is reset (node\'s resetAndDestroy throws on it)', async t => {
  const cert = await loadOrCreateCert({ dir: join(tempDir(t), 'tls'), commonName: 'reset-test' })
  const server = tls.createServer({ key: cert.key, cert: cert.cert })
  const { accepted, client } = await pair(t, server, port => tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }), 'secureConnection')
  t.throws(() => (accepted as net.Socket).resetAndDestroy(), { code: 'ERR_INVALID_HANDLE_TYPE' }, 'what node does with it')
  const ends = howItEnds(client)
  const closed = new Promise(resolve => accepted.once('close', resolve))
  resetConnection(accepted)
  t.equal(await ends, 'ECONNRESET', 'the peer sees a reset')
  await closed
  t.ok(accepted.destroyed, 'the TLS socket closed with it')
})

t.test('a TLS client connection (no TCP socket of its own to reset) and a unix socket are destroyed, without a throw', async t => {
  const cert = await loadOrCreateCert({ dir: join(tempDir(t), 'tls'), commonName: 'reset-test' })
  const server = tls.createServer({ key: cert.key, cert: cert.cert })
  const { client } = await pair(t, server, port => tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }), 'secureConnection')
  t.doesNotThrow(() => resetConnection(client))
  t.ok(client.destroyed, 'the TLS client socket is destroyed')

  const path = join(tempDir(t), 'reset.sock')
  const unix = net.createServer()
  const accepted = new Promise<net.Socket>(resolve => unix.once('connection', resolve))
  await new Promise<void>(resolve => unix.listen(path, resolve))
  t.teardown(() => unix.close())
  const local = net.connect(path)
  const peer = await accepted
  const ends = howItEnds(peer)
  t.doesNotThrow(() => resetConnection(local))
  t.equal(await ends, 'end', 'a unix socket has no reset: its peer sees the end')
})

t.test('a socket whose end() is under way (libuv cannot reset it): destroyed and closed, no error event', async t => {
  const { accepted } = await pair(t, net.createServer({ allowHalfOpen: true }), port => net.connect(port, '127.0.0.1'))
  const errors: unknown[] = []
  accepted.on('error', err => errors.push(err))
  const closed = new Promise(resolve => accepted.once('close', resolve))
  accepted.end('last words')
  resetConnection(accepted)
  await within(closed, 5_000, 'the close')
  t.same(errors, [], 'no EINVAL from the reset')
})

t.test('a socket already closed, or never connected: destroyed, no error event', async t => {
  const { accepted } = await pair(t, net.createServer(), port => net.connect(port, '127.0.0.1'))
  accepted.destroy()
  await new Promise(resolve => accepted.once('close', resolve))
  const errors: unknown[] = []
  const late = new net.Socket()
  for (const s of [accepted, late]) s.on('error', err => errors.push(err))
  resetConnection(accepted)
  resetConnection(late)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.same(errors, [], 'no ERR_SOCKET_CLOSED')
  t.ok(late.destroyed, 'the unconnected socket is destroyed')
})
