import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { eventually, startAgent, startSite, tempDir } from '../helpers/cluster.js'
import { openTcpTunnel } from '../../cli/connect.js'
import { resetConnection } from '../../common/reset.js'
import { echoSite, spawnCli, within } from '../helpers/tunnel-data.js'

/**
 * A tunnel cut mid-connection (the agent gone) reaches the client of a raw
 * TCP tunnel as a reset, never as a clean end: a FIN would pass an answer
 * cut short for the whole of it.
 */

/** What ends the connection: 'end' (a FIN), or the error's code. */
async function howItEnds (socket: Duplex): Promise<string> {
  return await new Promise(resolve => {
    socket.on('data', () => {})
    socket.once('end', () => resolve('end'))
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

/** Writes `text` and waits for its echo. */
async function echoOnce (socket: Duplex, text: string): Promise<void> {
  await within(new Promise<void>(resolve => {
    let got = ''
    const onData = (c: Buffer): void => {
      got += c.toString()
      if (got === text) {
        socket.off('data', onData)
        resolve()
      }
    }
    socket.on('data', onData)
    socket.write(text)
  }), 15_000, 'the echo')
}

for (const scheme of ['http', 'https'] as const) {
  t.test(`the server's TCP upgrade over ${scheme}: a cut tunnel resets the client's connection, and the server lives on`, async t => {
    const { echo, site, ep, agent } = await echoSite(t, `cut-${scheme}`)
    const server = scheme === 'https' ? site.server.httpsUrl! : site.server.httpUrl
    const socket = await openTcpTunnel({ server, endpointId: ep.id, port: echo.port, token: site.api.token, serverFingerprint: site.server.fingerprint ?? undefined })
    await echoOnce(socket, 'before the cut\n')
    const ends = howItEnds(socket)
    await agent.destroy()
    t.equal(await within(ends, 15_000, 'the end of the connection'), 'ECONNRESET', 'the client sees a reset, not a clean end')
    t.ok((await site.api.ok('GET', `/api/endpoints/${ep.id as string}`)).id === ep.id, 'the server still answers')
  })
}

for (const scheme of ['http', 'https'] as const) {
  t.test(`over ${scheme}: a client that resets its connection resets the target's too (a FIN would pass an upload cut short for the whole of it)`, async t => {
    const site = await startSite(t)
    const ep = await site.api.ok('POST', '/api/endpoints', { name: `client-reset-${scheme}` })
    let targetSide: net.Socket | null = null
    let received = ''
    const target = net.createServer(socket => {
      targetSide = socket
      socket.on('data', (c: Buffer) => { received += c.toString() })
    })
    await new Promise<void>(resolve => target.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { targetSide?.destroy(); target.close() })
    const port = (target.address() as net.AddressInfo).port
    const agent = startAgent(t, ep.joinToken, { allowTcp: [port] })
    await agent.whenOnline()
    const server = scheme === 'https' ? site.server.httpsUrl! : site.server.httpUrl
    const socket = await openTcpTunnel({ server, endpointId: ep.id, port, token: site.api.token, serverFingerprint: site.server.fingerprint ?? undefined })
    socket.write('part of an upload')
    await within(eventually(() => received === 'part of an upload' || undefined, 10_000), 15_000, 'the first part at the target')
    const ends = howItEnds(targetSide!)
    resetConnection(socket)
    t.equal(await within(ends, 15_000, 'the end of the target\'s connection'), 'ECONNRESET', 'the target sees a reset, not a clean end')
  })
}

t.test('a target that resets its connection resets the client\'s (the other way round)', async t => {
  const site = await startSite(t)
  const ep = await site.api.ok('POST', '/api/endpoints', { name: 'target-reset' })
  let targetSide: net.Socket | null = null
  const target = net.createServer(socket => {
    targetSide = socket
    socket.on('error', () => {})
    socket.on('data', () => { socket.write('half an answer') })
  })
  await new Promise<void>(resolve => target.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { targetSide?.destroy(); target.close() })
  const port = (target.address() as net.AddressInfo).port
  const agent = startAgent(t, ep.joinToken, { allowTcp: [port] })
  await agent.whenOnline()
  const socket = await openTcpTunnel({ server: site.server.httpUrl, endpointId: ep.id, port, token: site.api.token })
  let got = ''
  socket.on('data', (c: Buffer) => { got += c.toString() })
  const ends = howItEnds(socket)
  socket.write('a question')
  await within(eventually(() => got === 'half an answer' || undefined, 10_000), 15_000, 'the first half')
  resetConnection(targetSide!)
  t.equal(await within(ends, 15_000, 'the end of the client\'s connection'), 'ECONNRESET', 'the client sees a reset, not a clean end')
})

t.test('relaygate forward: a cut tunnel resets the local connection (a FIN would pass for the whole answer), and forward keeps listening', async t => {
  const { echo, site, ep, agent } = await echoSite(t, 'forward-cut')
  const readyFile = join(tempDir(t), 'ready.json')
  const child = spawnCli(t, site.api.token, ['forward', ep.id, String(echo.port), '--listen', '0', '--server', site.server.httpUrl, '--ready-file', readyFile], 'ignore')
  const local = await within(eventually(() => existsSync(readyFile) ? JSON.parse(readFileSync(readyFile, 'utf8')) as { port: number } : undefined, 20_000) as Promise<{ port: number }>, 25_000, 'the ready file')
  const socket = net.connect(local.port, '127.0.0.1')
  await echoOnce(socket, 'before the cut\n')
  const ends = howItEnds(socket)
  await agent.destroy()
  t.equal(await within(ends, 15_000, 'the end of the local connection'), 'ECONNRESET', 'the local client sees a reset, not a clean end')
  const log = (): string => child.stdout.map(String).join('') + child.stderr
  await within(eventually(() => /forwarded connection cut[^\n]*RG_ERR_TUNNEL_CLOSED|RG_ERR_TUNNEL_CLOSED[^\n]*forwarded connection cut/.test(log()) || undefined, 10_000), 15_000, 'the cut in the log')
  t.pass('forward logged the cut with RG_ERR_TUNNEL_CLOSED')
  t.equal(child.proc.exitCode, null, 'forward is still running')
  const accepted = await new Promise<boolean>(resolve => {
    const next = net.connect(local.port, '127.0.0.1', () => { next.destroy(); resolve(true) }).on('error', () => resolve(false))
  })
  t.ok(accepted, 'and still accepts connections')
})

t.test('the TCP upgrade over https checks the server: a wrong pin is RG_ERR_PIN_MISMATCH, a self-signed certificate without one is refused', async t => {
  const { echo, site, ep } = await echoSite(t, 'pins')
  const target = { server: site.server.httpsUrl!, endpointId: ep.id, port: echo.port, token: site.api.token }
  await t.rejects(openTcpTunnel({ ...target, serverFingerprint: 'AA:'.repeat(31) + 'AA' }), { code: 'RG_ERR_PIN_MISMATCH' })
  await t.rejects(openTcpTunnel(target), { code: 'RG_ERR_NO_RELAY', message: /self-signed certificate.*pin it with --server-fingerprint/ })
})
