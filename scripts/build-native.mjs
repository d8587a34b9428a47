// npm install runs this: builds native/ (AES-GCM for tunnel records in
// place; protocol/record-crypto.ts) with the node-gyp npm carries. Optional:
// without a C compiler, or with RELAYGATE_NATIVE_RECORDS=off, the install
// goes on and tunnels use node:crypto, which makes the same records.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const dir = fileURLToPath(new URL('../native/', import.meta.url))
if (process.env.RELAYGATE_NATIVE_RECORDS === 'off') process.exit(0)
const gyp = process.env.npm_config_node_gyp
const [command, args] = gyp !== undefined && gyp !== '' ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']]
const run = spawnSync(command, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
if (run.status !== 0) {
  const why = run.error?.message ?? (run.stderr.trim().split('\n').filter(l => /error/i.test(l)).pop() ?? `node-gyp exited ${run.status}`)
  console.warn(`relaygate: the native record cipher was not built (${why}); tunnels use node:crypto, about 10 % more CPU per GB`)
}
