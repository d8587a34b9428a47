import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { startServer, startRelay, tempDir, type TapLike } from '../helpers/cluster.js'
import { bin, run, lines, type Env } from '../helpers/child.js'

type Result = Awaited<ReturnType<typeof run>>

/** Runs several `relaygate` commands, three at a time (each child loads the whole CLI). */
async function runAll (t: TapLike, calls: Array<{ args: string[], env?: Env }>): Promise<Result[]> {
  const out: Result[] = []
  for (let i = 0; i < calls.length; i += 3) out.push(...await Promise.all(calls.slice(i, i + 3).map(c => run(t, c.args, c.env))))
  return out
}

if (!existsSync(bin)) {
  t.fail(`${bin} is missing: run \`npm run build\` before the CLI tests`)
} else {
  t.test('token, endpoint and artifact commands against a server', async t => {
    const { server, api } = await startServer(t)
    const tokenFile = ['--token-file', server.adminTokenFile]
    const at = ['--server', server.httpUrl, ...tokenFile]
    const dir = tempDir(t)
    const file = join(dir, 'tool.bin')
    const body = randomBytes(300 * 1024)
    writeFileSync(file, body)

    const [relay, relayJson, upload, uploadNamed] = await runAll(t, [
      { args: ['token', 'create-relay', '--name', 'site-a', ...at] },
      { args: ['token', 'create-relay', '--name', 'site-b', '--json', ...at] },
      { args: ['artifact', 'upload', file, ...at] },
      { args: ['artifact', 'upload', file, '--name', 'renamed.bin', '--server', server.httpUrl], env: { RELAYGATE_ADMIN_TOKEN: api.token } }
    ])
    t.equal(relay.code, 0, relay.stderr)
    const token = /relay token \(shown only now\): (rgr_\S+)/.exec(relay.stdout)?.[1]
    t.ok(token, 'prints the relay token')
    t.match(relay.stdout, `relaygate relay --server ${server.httpUrl} --token ${token!}`, 'and the command to run')
    const b = JSON.parse(relayJson.stdout)
    t.match(b, { name: 'site-b', token: /^rgr_/, command: `relaygate relay --server ${server.httpUrl} --token ${b.token as string}` })
    // The printed token links a relay.
    const linked = await startRelay(t, server.httpUrl, token!)
    t.ok(linked.relayId, 'the token works')

    const sha256 = createHash('sha256').update(body).digest('hex')
    t.equal(upload.code, 0, upload.stderr)
    t.same(JSON.parse(upload.stdout), { name: 'tool.bin', sha256, size: body.length }, 'prints {name, sha256, size}')
    t.equal(upload.stderr, '', 'no progress bar when stderr is not a terminal')
    t.same(JSON.parse(uploadNamed.stdout), { name: 'renamed.bin', sha256, size: body.length }, '--name, token from RELAYGATE_ADMIN_TOKEN')
    t.same((await api.ok('GET', '/api/artifacts')).map((a: { name: string }) => a.name).sort(), ['renamed.bin', 'tool.bin'])

    const [created, createdJson] = await runAll(t, [
      { args: ['endpoint', 'create', '--name', 'db-01', ...at] },
      { args: ['endpoint', 'create', '--tunnel-target', 'http://127.0.0.1:2375', '--max-agents', '3', '--tag', 'site-a', '--json', ...at], env: { RELAYGATE_NAME: 'the-relays-name', RELAYGATE_ENDPOINT_NAME: 'swarm' } }
    ])
    t.equal(created.code, 0, created.stderr)
    t.match(created.stdout, /join token \(shown only now\): rg1\./)
    t.match(created.stdout, /^ {2}relaygate agent --join-token rg1\.\S+$/m, 'prints the agent command')
    const swarm = JSON.parse(createdJson.stdout)
    t.match(swarm, { name: 'swarm', maxAgents: 3, tunnelTarget: 'http://127.0.0.1:2375', tags: ['site-a'], joinToken: /^rg1\./ }, 'its name from RELAYGATE_ENDPOINT_NAME, not RELAYGATE_NAME')
    t.match(swarm.command, '--tunnel-target http://127.0.0.1:2375')

    const [list, listJson, listTls] = await runAll(t, [
      { args: ['endpoint', 'list', ...at] },
      { args: ['endpoint', 'list', '--json', ...at] },
      { args: ['endpoint', 'list', '--server', server.httpsUrl!, '--server-fingerprint', server.fingerprint!, ...tokenFile] }
    ])
    t.equal(list.code, 0, list.stderr)
    const rows = lines(list.stdout)
    t.match(rows[0], /^ID\s+NAME\s+STATUS\s+RELAY\s+LAST SEEN\s+TUNNEL\s+VERSION\s+TAGS$/)
    t.equal(rows.length, 3, 'a header and two endpoints')
    t.ok(rows.some(r => r.includes(swarm.id) && r.includes('swarm') && r.includes('offline') && r.includes('closed')))
    t.same(JSON.parse(listJson.stdout).map((e: { name: string }) => e.name).sort(), ['db-01', 'swarm'])
    t.equal(listTls.code, 0, `over HTTPS with a pinned self-signed certificate: ${listTls.stderr}`)
    t.same(lines(listTls.stdout), rows)
  })

  t.test('errors: one line with the code; exit 1 from the API, 2 for usage', async t => {
    const { server } = await startServer(t)
    const dir = tempDir(t)
    const at = ['--server', server.httpUrl, '--token-file', server.adminTokenFile]
    const some = join(dir, 'some.bin')
    writeFileSync(some, 'x')
    const cases: Array<{ args: string[], env?: Env, code: number, match: RegExp, what: string }> = [
      { args: ['endpoint', 'list', '--server', server.httpUrl], env: { RELAYGATE_ADMIN_TOKEN: 'x'.repeat(20) }, code: 1, match: /unknown or revoked API token \(RG_ERR_UNAUTHORIZED\)/, what: 'a wrong token' },
      { args: ['endpoint', 'create', '--name', 'x', '--tunnel-target', 'ftp://nope', ...at], code: 1, match: /tunnelTarget.*\(RG_ERR_BAD_REQUEST\)/, what: 'a value the API refuses' },
      { args: ['artifact', 'upload', join(dir, 'missing.bin'), ...at], code: 2, match: /missing\.bin.*\(RG_ERR_CONFIG\)/, what: 'a missing file' },
      { args: ['artifact', 'upload', some, '--name', '../etc', ...at], code: 1, match: /RG_ERR_BAD_REQUEST/, what: 'a bad artifact name' },
      { args: ['endpoint', 'list', '--server', server.httpUrl, '--token-file', join(dir, 'none')], code: 2, match: /--token-file: cannot read .*\(RG_ERR_CONFIG\)/, what: 'no token file' },
      { args: ['token', 'create-relay', ...at], code: 2, match: /required option '--name <name>'/, what: 'a missing flag' },
      { args: ['endpoint', 'list', '--server', 'hub:8080', '--token-file', server.adminTokenFile], code: 2, match: /--server must be http\(s\):\/\//, what: 'a bad server URL' },
      { args: ['endpoint', 'list', '--server', server.httpsUrl!, '--server-fingerprint', 'ab'.repeat(32), '--token-file', server.adminTokenFile], code: 1, match: /RG_ERR_PIN_MISMATCH/, what: 'a wrong pin' },
      { args: ['endpoint', 'list', '--server', 'http://127.0.0.1:1', '--token-file', server.adminTokenFile], code: 1, match: /cannot reach the server.*check --server\) \(RG_ERR_SERVER_UNREACHABLE\)/, what: 'no server' },
      { args: ['endpoint', 'list', '--server', server.httpsUrl!, '--token-file', server.adminTokenFile], code: 1, match: new RegExp(`pin it with --server-fingerprint ${server.fingerprint!} \\(RG_ERR_PIN_MISMATCH\\)`), what: 'a self-signed server: the fingerprint to pin' }
    ]
    const results = await runAll(t, cases)
    cases.forEach((c, i) => {
      const res = results[i]
      t.equal(res.code, c.code, `${c.what}: exit ${c.code}`)
      t.equal(lines(res.stderr).length, 1, `${c.what}: one line`)
      t.match(res.stderr, c.match, c.what)
      t.equal(res.stdout, '', `${c.what}: nothing on stdout`)
    })
  })
}
