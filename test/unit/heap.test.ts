import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { tuneHeapForStreaming, HEAP_GROWING_PERCENT } from '../../common/heap.js'

const heapModule = fileURLToPath(new URL('../../dist/common/heap.js', import.meta.url))

t.test('the heap tuning steps aside for a growing factor chosen on the command line', async t => {
  t.equal(tuneHeapForStreaming(['--heap-growing-percent=50']), false)
  t.equal(tuneHeapForStreaming(['--inspect', '--heap_growing_percent=50']), false)
})

t.test('this Node\'s V8 has the flag the tuning sets (an unknown flag would be ignored without a word)', async t => {
  const options = spawnSync(process.execPath, ['--v8-options'], { encoding: 'utf8' }).stdout
  t.match(options, /--heap-growing-percent \(specifies heap growing factor/)
  t.ok(HEAP_GROWING_PERCENT >= 10 && HEAP_GROWING_PERCENT <= 300, 'within the range V8 chooses by itself (a factor of 1.1 to 4)')
  // In a child: the flag changes that process's collector, not the test runner's.
  const script = `import { tuneHeapForStreaming } from ${JSON.stringify(heapModule)}
    process.stdout.write(String(tuneHeapForStreaming()))`
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
  t.equal(child.status, 0, child.stderr)
  t.equal(child.stdout, 'true')
})
