import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

// What `npm pack` (and so `npm install relaygate`) ships: the program, its
// dashboard, unit files and docs, the license; not the benches.
const root = fileURLToPath(new URL('../../', import.meta.url))

t.test('the npm package has the LICENSE and every role, and no benches', async t => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  const files = (JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0].files.map(f => f.path)
  t.ok(files.includes('LICENSE'), 'LICENSE')
  t.match(readFileSync(`${root}/LICENSE`, 'utf8'), /^MIT License/, 'the license package.json names')
  t.equal(JSON.parse(readFileSync(`${root}/package.json`, 'utf8')).license, 'MIT')
  for (const entry of ['dist/cli/main.js', 'dist/server/server.js', 'dist/relay/relay.js', 'dist/agent/agent.js', 'server/ui/app.js', 'deploy/systemd/relaygate-agent.service', 'docs/errors.md', 'native/records.c', 'native/binding.gyp', 'scripts/build-native.mjs']) {
    t.ok(files.includes(entry), entry)
  }
  t.same(files.filter(f => f.startsWith('dist/bench') || f.startsWith('bench/') || f.startsWith('test/')), [], 'no benches, no tests')
})
