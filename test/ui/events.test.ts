import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { startSite, startServer, startAgent, testLogger, type TapLike } from '../helpers/cluster.js'
import { EventHub } from '../../server/events.js'

interface SseEvent { event: string, data: string, comment?: string }

/** Reads a Server-Sent Events body the way the dashboard does (fetch + reader). */
function sseReader (body: ReadableStream<Uint8Array>): { next: (timeoutMs?: number) => Promise<SseEvent | null> } {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  const queue: SseEvent[] = []
  let ended = false
  const fill = async (): Promise<void> => {
    const { value, done } = await reader.read()
    if (done) {
      ended = true
      return
    }
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const ev: SseEvent = { event: 'message', data: '' }
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) ev.comment = line.slice(1).trim()
        else if (line.startsWith('event: ')) ev.event = line.slice(7)
        else if (line.startsWith('data: ')) ev.data += line.slice(6)
      }
      if (ev.comment !== undefined) ev.event = 'comment'
      if (!block.startsWith('retry:')) queue.push(ev)
    }
  }
  return {
    async next (timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      while (queue.length === 0 && !ended) {
        const left = deadline - Date.now()
        if (left <= 0) throw new Error('no event in time')
        let timer: NodeJS.Timeout | undefined
        await Promise.race([fill(), new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error('no event in time')), left) })])
        clearTimeout(timer)
      }
      return queue.shift() ?? null
    }
  }
}

async function openEvents (t: TapLike, url: string, token: string | null): Promise<Response> {
  const ctl = new AbortController()
  t.teardown(() => ctl.abort())
  return await fetch(`${url}/api/events`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    signal: ctl.signal
  })
}

t.test('an SSE client hears of an agent coming online', async t => {
  const { server, api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'sse-1' })
  const res = await openEvents(t, server.httpUrl, api.token)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/event-stream/)
  t.equal(res.headers.get('cache-control'), 'no-store')
  const events = sseReader(res.body!)
  t.equal((await events.next())?.event, 'ready', 'the stream says when it is subscribed')
  startAgent(t, ep.joinToken)
  const topics = new Set<string>()
  while (!topics.has('endpoints')) {
    const ev = await events.next()
    if (ev === null) break
    if (ev.event === 'change') topics.add(JSON.parse(ev.data).topic)
  }
  t.ok(topics.has('endpoints'), 'a change of "endpoints" arrives')
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).status, 'online')
})

t.test('settings changes and tunnel state changes are notified too', async t => {
  const { server, api } = await startServer(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'sse-2' })
  const res = await openEvents(t, server.httpUrl, api.token)
  const events = sseReader(res.body!)
  t.equal((await events.next())?.event, 'ready')
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 10 })
  await api.ok('POST', `/api/endpoints/${ep.id}/tunnel`)
  const topics = new Set<string>()
  while (!(topics.has('settings') && topics.has('endpoints'))) {
    const ev = await events.next()
    if (ev === null) break
    if (ev.event === 'change') topics.add(JSON.parse(ev.data).topic)
  }
  t.same([...topics].sort(), ['endpoints', 'settings'])
})

t.test('without the admin token: 401, and nothing is streamed', async t => {
  const { server } = await startServer(t)
  const none = await openEvents(t, server.httpUrl, null)
  t.equal(none.status, 401)
  t.equal(((await none.json()) as any).error.code, 'RG_ERR_UNAUTHORIZED')
  const wrong = await openEvents(t, server.httpUrl, 'rga_not-the-token-at-all')
  t.equal(wrong.status, 401)
  t.equal(((await wrong.json()) as any).error.code, 'RG_ERR_UNAUTHORIZED')
})

t.test('a server shutting down ends the stream', async t => {
  const { server, api } = await startServer(t)
  const res = await openEvents(t, server.httpUrl, api.token)
  const events = sseReader(res.body!)
  t.equal((await events.next())?.event, 'ready')
  t.equal(server.events.clientCount, 1)
  await server.close()
  t.equal(await events.next(), null, 'the stream ended')
  t.equal(server.events.clientCount, 0)
})

t.test('EventHub: coalescing, keep-alives, a bounded number of clients, close', async t => {
  const hub = new EventHub({ logger: testLogger(), maxClients: 2, keepAliveMs: 40, coalesceMs: 30 })
  const srv = http.createServer((req, res) => {
    if (!hub.handle(req, res, () => {})) res.writeHead(404).end()
  })
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise(resolve => { hub.close(); srv.closeAllConnections(); srv.close(resolve) }))
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`

  const a = sseReader((await openEvents(t, url, null)).body!)
  const b = sseReader((await openEvents(t, url, null)).body!)
  t.equal((await a.next())?.event, 'ready')
  t.equal((await b.next())?.event, 'ready')

  const third = await openEvents(t, url, null)
  t.equal(third.status, 503, 'a third client is refused')
  t.equal(((await third.json()) as any).error.code, 'RG_ERR_QUEUE_FULL')

  const post = await fetch(`${url}/api/events`, { method: 'POST' })
  t.equal(post.status, 405)

  for (let i = 0; i < 500; i++) hub.publish('endpoints')
  hub.publish('jobs')
  const seen: string[] = []
  while (seen.length < 2) {
    const ev = await a.next()
    if (ev?.event === 'change') seen.push(JSON.parse(ev.data).topic)
  }
  t.same(seen.sort(), ['endpoints', 'jobs'], '501 publishes became one notification per topic')
  t.equal(hub.sent, 2)

  let comment: SseEvent | null = null
  while (comment === null) {
    const ev = await b.next()
    if (ev?.event === 'comment') comment = ev
  }
  t.equal(comment.comment, 'keep-alive', 'keep-alive comments flow while idle')

  hub.close()
  let ended = false
  while (!ended) ended = (await a.next()) === null
  t.ok(ended, 'close() ends the streams')
  t.equal(hub.clientCount, 0)
  const after = await openEvents(t, url, null)
  t.equal(after.status, 503, 'no new streams after close')
})
