import t from 'tap'
import { TransferProgress, formatBytes, type ProgressFields } from '../../common/progress.js'

t.test('formatBytes', async t => {
  t.equal(formatBytes(0), '0 B')
  t.equal(formatBytes(1023), '1023 B')
  t.equal(formatBytes(1536), '1.5 KiB')
  t.equal(formatBytes(10 * 1024 ** 3), '10.0 GiB')
})

t.test('not on a terminal: a log line every logEveryMs with bytes, total and rate', async t => {
  let now = 1000
  const logged: ProgressFields[] = []
  const p = new TransferProgress({ label: 'job j1', total: 10_000, start: 1000, log: f => logged.push(f), now: () => now })
  now += 1000
  p.update(3000)
  t.equal(logged.length, 0, 'nothing before 5 s')
  now += 4000
  p.update(6000)
  t.same(logged, [{ bytes: 6000, total: 10_000, percent: 60, rateBytesPerSecond: 1000 }], 'rate over the interval, start counted in the position')
  now += 100
  p.update(6500)
  t.equal(logged.length, 1, 'at most one line per interval')
  p.done()
  p.update(9000)
  t.equal(logged.length, 1, 'nothing after done()')
})

t.test('on a terminal: one redrawn line, ended by done()', async t => {
  let now = 0
  const written: string[] = []
  const tty = { write: (s: string) => written.push(s) }
  const p = new TransferProgress({ label: 'tool.bin', total: 2048, tty, now: () => now, log: () => t.fail('no log lines on a terminal') })
  now = 100
  p.update(512)
  t.equal(written.length, 0, 'redrawn at most every 200 ms')
  now = 300
  p.update(1024)
  t.equal(written.length, 1)
  t.match(written[0], /^\rtool\.bin \[#{12}\.{12}\] 50\.0% 1\.0 KiB \/ 2\.0 KiB 3\.3 KiB\/s\x1b\[K$/)
  now = 400
  p.update(2048)
  p.done()
  t.match(written.at(-1), /100\.0% 2\.0 KiB \/ 2\.0 KiB .*\n$/, 'done() draws the final figures and ends the line')
  p.done()
  t.equal(written.length, 2, 'done() is idempotent')
})

t.test('unknown total', async t => {
  const p = new TransferProgress({ label: 'x', total: null, now: () => 2000 })
  t.match(p.line(), /^x 0 B 0 B\/s$/)
})
