import t from 'tap'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from '../helpers/cluster.js'
import { run } from '../helpers/child.js'
import { encodeJoinToken } from '../../protocol/token.js'
import { newSecret } from '../../protocol/auth.js'

// `relaygate install` from npm (the one-file executable's install is in test/onefile).
t.test('a join token that cannot work is refused before anything is written', async t => {
  const root = join(tempDir(t), 'root')
  const res = await run(t, ['install', 'agent', '--join-token', 'not-a-token', '--root', root])
  t.equal(res.code, 2)
  t.match(res.stderr, /--join-token: .*RG_ERR_BAD_JOIN_TOKEN/)
  t.notOk(existsSync(root), 'nothing written')
})

t.test('from npm: the unit runs node with this CLI, the token sits in a 0600 env file, and the hint names that command', async t => {
  const root = join(tempDir(t), 'root')
  const token = encodeJoinToken({ serverUrl: 'http://hub:8080', relays: [{ url: 'ws://relay:20080', fingerprints: [] }], endpointId: 'eabc', secret: newSecret(32) })
  const res = await run(t, ['install', 'agent', '--join-token', token, '--tunnel-target', 'http://127.0.0.1:8080', '--root', root])
  t.equal(res.code, 0, res.stderr)
  const env = readFileSync(join(root, 'etc/relaygate/agent.env'), 'utf8')
  t.equal(env, `RELAYGATE_JOIN_TOKEN=${token}\nRELAYGATE_TUNNEL_TARGET=http://127.0.0.1:8080\n`)
  t.equal(statSync(join(root, 'etc/relaygate/agent.env')).mode & 0o777, 0o600)
  const unit = readFileSync(join(root, 'etc/systemd/system/relaygate-agent.service'), 'utf8')
  const execStart = /^ExecStart=(\S+) (\S+) agent /m.exec(unit)
  t.ok(execStart !== null, 'ExecStart runs the agent')
  t.equal(execStart?.[1], process.execPath, 'with this node')
  t.match(execStart?.[2], /dist\/cli\/main\.js$/, 'and this CLI')
  t.notOk(existsSync(join(root, 'opt')), 'no executable copied: there is none to copy')
  t.match(res.stdout, new RegExp(`systemd is not running here.*\\n  ${process.execPath} `, 's'), 'the hint is the command that exists')
  t.notOk(res.stdout.includes(token), 'the join token is not printed')
})
