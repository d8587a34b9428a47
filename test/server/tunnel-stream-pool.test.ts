import t from 'tap'
import { PassThrough, type Duplex } from 'node:stream'
import { TunnelStreamPool } from '../../server/tunnel-stream-pool.js'

// Streams here are PassThroughs: what the pool does with them (keeps, hands on, destroys) is the point.
function pool (limits = {}): { pool: TunnelStreamPool, opened: Duplex[] } {
  const opened: Duplex[] = []
  return { pool: new TunnelStreamPool(() => { const s = new PassThrough(); opened.push(s); return s }, limits), opened }
}

t.test('at most maxActive streams at once; the others wait in order and get released streams', async t => {
  const { pool: p, opened } = pool({ maxActive: 2, maxWaiting: 2 })
  const a = await p.acquire()
  const b = await p.acquire()
  const order: string[] = []
  const c = p.acquire().then(l => { order.push('c'); return l })
  const d = p.acquire().then(l => { order.push('d'); return l })
  await t.rejects(p.acquire(), { code: 'RG_ERR_QUEUE_FULL' }, 'a third waiter is refused')
  t.same(p.counts, { active: 2, idle: 0, waiting: 2 })
  p.release(a.stream, true)
  const gotC = await c
  t.equal(gotC.stream, a.stream, 'the first waiter gets the released stream')
  t.equal(gotC.reused, true)
  p.release(b.stream, false)
  const gotD = await d
  t.ok(b.stream.destroyed, 'a stream released as spent is destroyed')
  t.same([gotD.reused, opened.length], [false, 3], 'and the next waiter gets a new one')
  t.same(order, ['c', 'd'])
})

t.test('idle streams: reused, dropped when the target ends them or sends, at most maxIdle, not when idleMs is 0', async t => {
  const { pool: p, opened } = pool({ maxIdle: 1 })
  const a = await p.acquire()
  const b = await p.acquire()
  p.release(a.stream, true)
  p.release(b.stream, true)
  t.ok(b.stream.destroyed, 'beyond maxIdle: destroyed')
  t.same(p.counts, { active: 0, idle: 1, waiting: 0 })
  const again = await p.acquire()
  t.same([again.stream, again.reused], [a.stream, true])
  p.release(again.stream, true)
  a.stream.push(Buffer.from('unasked'))
  await new Promise(resolve => setImmediate(resolve))
  t.ok(a.stream.destroyed, 'bytes on an idle stream: dropped')
  t.equal(p.counts.idle, 0)
  const c = await p.acquire()
  t.equal(opened.length, 3)
  p.release(c.stream, true, 0)
  t.ok(c.stream.destroyed, 'a target that keeps connections a second or less: not kept')
})

t.test('closing the tunnel rejects the waiters and drops the idle', async t => {
  const { pool: p } = pool({ maxActive: 1 })
  const a = await p.acquire()
  const waiter = p.acquire()
  const b = pool().pool
  const idle = await b.acquire()
  b.release(idle.stream, true)
  p.destroy()
  b.destroy()
  await t.rejects(waiter, { code: 'RG_ERR_TUNNEL_CLOSED' })
  await t.rejects(p.acquire(), { code: 'RG_ERR_TUNNEL_CLOSED' })
  t.ok(idle.stream.destroyed)
  p.release(a.stream, true)
  t.ok(a.stream.destroyed, 'released after the close: destroyed')
})
