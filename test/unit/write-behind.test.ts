import t from 'tap'
import { pino } from 'pino'
import { WriteBehind } from '../../server/write-behind.js'

interface Item { key: string, v: number }

t.test('writes merge per key, a failed batch is merged back under newer writes and written on the next try', async t => {
  const written: Item[][] = []
  let failNext = true
  const wb = new WriteBehind<Item>({
    what: 'items',
    logger: pino({ level: 'silent' }),
    key: i => i.key,
    merge: (prev, next) => next.v >= prev.v ? next : prev,
    write: async batch => {
      if (failNext) {
        failNext = false
        throw new Error('database restarting')
      }
      written.push(batch)
    }
  })
  wb.add({ key: 'a', v: 1 })
  wb.add({ key: 'a', v: 3 })
  wb.add({ key: 'a', v: 2 })
  wb.add({ key: 'b', v: 1 })
  await wb.flush()
  t.same(written, [], 'the first write failed')
  wb.add({ key: 'b', v: 5 })
  await wb.close()
  t.same(written, [[{ key: 'a', v: 3 }, { key: 'b', v: 5 }]], 'merged while waiting, then written once (after the failure), the newer value of b winning over the one merged back')
  wb.add({ key: 'c', v: 1 })
  await wb.flush()
  t.equal(written.length, 1, 'closed: takes no more')
})
