import t from 'tap'
import net from 'node:net'
import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { startServer, startRelay, startAgent, type TapLike } from '../helpers/cluster.js'
import { listenEcho } from '../helpers/tunnel-data.js'

/**
 * A TCP forwarder that records every byte both ways, for looking at what
 * crosses a link: plain ws, so the recording is the WebSocket frames.
 */
class RecordingForwarder {
  readonly toTarget: Buffer[] = []
  readonly fromTarget: Buffer[] = []
  port = 0
  private readonly server: net.Server

  constructor (targetPort: number) {
    this.server = net.createServer(client => {
      const upstream = net.connect(targetPort, '127.0.0.1')
      client.on('data', d => { this.toTarget.push(Buffer.from(d)); upstream.write(d) })
      upstream.on('data', d => { this.fromTarget.push(Buffer.from(d)); client.write(d) })
      const end = (): void => { client.destroy(); upstream.destroy() }
      client.on('close', end)
      upstream.on('close', end)
      client.on('error', end)
      upstream.on('error', end)
    })
  }

  async listen (t: TapLike): Promise<number> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    t.teardown(() => new Promise(resolve => this.server.close(resolve)))
    this.port = (this.server.address() as AddressInfo).port
    return this.port
  }
}

/**
 * The payloads of the WebSocket frames in one direction of a recording
 * (after the HTTP upgrade), unmasked: what the link really carries. Client
 * frames are masked, so a marker could hide in the raw bytes by chance of
 * framing alone; this looks at the unmasked payloads.
 */
export function wsPayloads (chunks: Buffer[]): Buffer {
  const all = Buffer.concat(chunks)
  let at = all.indexOf('\r\n\r\n')
  if (at < 0) return Buffer.alloc(0)
  at += 4
  const out: Buffer[] = []
  while (at + 2 <= all.length) {
    const masked = (all[at + 1] & 0x80) !== 0
    let len = all[at + 1] & 0x7f
    let p = at + 2
    if (len === 126) { len = all.readUInt16BE(p); p += 2 } else if (len === 127) { len = Number(all.readBigUInt64BE(p)); p += 8 }
    const mask = masked ? all.subarray(p, p + 4) : null
    if (masked) p += 4
    if (p + len > all.length) break
    const payload = Buffer.from(all.subarray(p, p + len))
    if (mask !== null) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]
    out.push(payload)
    at = p + len
  }
  return Buffer.concat(out)
}

async function targetThatEchoes (t: TapLike): Promise<number> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      const seen = `${req.url ?? ''}|${String(req.headers['x-marker'])}|${Buffer.concat(chunks).toString()}`
      res.writeHead(200, { 'x-echo': String(req.headers['x-marker']), 'content-type': 'text/plain' })
      res.end(seen)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise(resolve => server.close(resolve)))
  return (server.address() as AddressInfo).port
}

/** Opens `relaygate connect`'s upgrade by hand and exchanges one line with an echo server. */
async function tcpRoundTrip (serverUrl: string, token: string, endpointId: string, port: number, line: string): Promise<string> {
  const req = http.request(`${serverUrl}/api/endpoints/${endpointId}/tcp/${port}`, { headers: { authorization: `Bearer ${token}`, connection: 'Upgrade', upgrade: 'relaygate-tcp' } })
  req.end()
  const [, socket] = await once(req, 'upgrade') as [http.IncomingMessage, net.Socket]
  socket.write(line)
  let got = ''
  for await (const chunk of socket) {
    got += (chunk as Buffer).toString()
    if (got.length >= line.length) break
  }
  socket.destroy()
  return got
}

t.test('a marker sent through a tunnel (path, headers, body; HTTP and raw TCP; both ways) never appears on either link', async t => {
  const { server, api } = await startServer(t)
  const toServer = new RecordingForwarder(Number(new URL(server.httpUrl).port))
  await toServer.listen(t)
  const created = await api.ok('POST', '/api/relays', { name: 'recorded' })
  const relay = await startRelay(t, `http://127.0.0.1:${toServer.port}`, created.token, { tlsPort: -1 })
  const toRelay = new RecordingForwarder(Number(new URL(relay.wsUrl!).port))
  await toRelay.listen(t)
  const targetPort = await targetThatEchoes(t)
  const echo = await listenEcho(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'recorded', tunnelTarget: `http://127.0.0.1:${targetPort}` })
  const agent = startAgent(t, ep.joinToken, { relays: [`ws://127.0.0.1:${toRelay.port}`], allowTcp: [echo.port] })
  await agent.whenOnline()

  const marker = `MRK${randomBytes(12).toString('hex')}`
  const res = await fetch(`${server.httpUrl}/api/endpoints/${ep.id as string}/proxy/${marker}?q=${marker}`, {
    method: 'POST', headers: { authorization: `Bearer ${api.token}`, 'x-marker': marker }, body: `body-${marker}`
  })
  t.equal(res.status, 200, 'the proxied request succeeded')
  t.equal(res.headers.get('x-echo'), marker, 'the marker came back in a response header')
  t.equal(await res.text(), `/${marker}?q=${marker}|${marker}|body-${marker}`, 'and in the body: the target saw path, header and body')
  const tcpLine = `tcp-${marker}\n`
  t.equal(await tcpRoundTrip(server.httpUrl, api.token, ep.id, echo.port, tcpLine), tcpLine, 'raw TCP both ways')

  const needle = Buffer.from(marker)
  const links: Array<[string, Buffer[]]> = [
    ['agent -> relay', toRelay.toTarget], ['relay -> agent', toRelay.fromTarget],
    ['relay -> server', toServer.toTarget], ['server -> relay', toServer.fromTarget]
  ]
  for (const [name, chunks] of links) {
    const payloads = wsPayloads(chunks)
    t.ok(payloads.length > 1000, `${name}: ${payloads.length} payload bytes recorded`)
    t.equal(payloads.indexOf(needle), -1, `${name}: the marker is not in the frames' payloads`)
    t.equal(Buffer.concat(chunks).indexOf(needle), -1, `${name}: nor in the raw bytes`)
  }
  // The recorder does see what is not encrypted (proof that it would see the marker): the endpoint id in the hello.
  t.not(wsPayloads(toRelay.toTarget).indexOf(Buffer.from(ep.id as string)), -1, 'the recording is readable: the agent\'s hello names its endpoint')
})
