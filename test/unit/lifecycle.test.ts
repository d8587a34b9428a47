import t from 'tap'
import { Lifecycle } from '../../common/lifecycle.js'

t.test('close steps run in reverse order of registration, each once, with the mode asked for', async t => {
  const life = new Lifecycle()
  const ran: string[] = []
  life.onClose('store', g => { ran.push(`store:${String(g)}`) })
  life.onClose('link', async g => { await new Promise(resolve => setTimeout(resolve, 5)); ran.push(`link:${String(g)}`) })
  life.onClose('timers', g => { ran.push(`timers:${String(g)}`) })
  t.equal(life.closed, false)
  const first = life.close(false)
  t.equal(life.close(true), first, 'later calls get the same promise')
  await first
  t.same(ran, ['timers:false', 'link:false', 'store:false'], 'last built closes first')
  t.equal(life.closed, true)
})

t.test('a step that throws does not stop the others; the first error is rethrown at the end', async t => {
  const life = new Lifecycle()
  const ran: string[] = []
  life.onClose('a', () => { ran.push('a') })
  life.onClose('b', () => { throw new Error('b broke') })
  life.onClose('c', async () => { throw new Error('c broke') })
  await t.rejects(life.close(), { message: 'c broke' })
  t.same(ran, ['a'], 'the step built first still ran')
})

t.test('a step registered after shutdown began runs once the others are done', async t => {
  const life = new Lifecycle()
  const ran: string[] = []
  life.onClose('first', async () => { await new Promise(resolve => setTimeout(resolve, 5)); ran.push('first') })
  const closing = life.close()
  let lateMode: boolean | null = null
  life.onClose('late', g => { lateMode = g; ran.push('late') })
  await closing
  await new Promise(resolve => setImmediate(resolve))
  t.same(ran, ['first', 'late'])
  t.equal(lateMode, false, 'a late step is not graceful: the rest is already gone')
})
