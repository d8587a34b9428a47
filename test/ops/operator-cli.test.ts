import t from 'tap'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startSite, startAgent, startTarget, tempDir, eventually } from '../helpers/cluster.js'
import { run, startCommand, childEnv, root, bin, type Env } from '../helpers/child.js'

// Issue 17, a complete CLI: `relaygate login` once, then every operator
// command without --server or a token (as gh auth login), tables on a
// terminal and --json everywhere.
if (!existsSync(bin)) {
  t.fail(`${bin} is missing: run \`npm run build\` before the CLI tests`)
} else {
  t.test('login, then relays, endpoints, artifacts, jobs and settings without --server', async t => {
    const { server, api, relayId } = await startSite(t)
    const target = await startTarget(t)
    const ep = await api.ok('POST', '/api/endpoints', { name: 'web-01', tunnelTarget: target.url })
    await startAgent(t, ep.joinToken, { allowExec: true }).whenOnline()
    const env: Env = { XDG_CONFIG_HOME: tempDir(t) }
    const cli = async (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> => await run(t, args, env, undefined, 60_000)

    const wrong = await run(t, ['login', '--server', server.httpUrl], { ...env, RELAYGATE_ADMIN_TOKEN: 'not-the-token-at-all' })
    t.equal(wrong.code, 1, 'a token the server refuses is not saved')
    t.match(wrong.stderr, /RG_ERR_UNAUTHORIZED/)
    const saved = join(env.XDG_CONFIG_HOME, 'relaygate', 'cli.json')
    t.notOk(existsSync(saved))
    const login = await cli('login', '--server', server.httpUrl, '--token-file', server.adminTokenFile)
    t.equal(login.code, 0, login.stderr)
    t.equal(statSync(saved).mode & 0o777, 0o600, 'the saved login is readable by its owner only')
    t.same(JSON.parse(readFileSync(saved, 'utf8')), { server: server.httpUrl, token: api.token })

    const relays = await cli('relays', 'list')
    t.equal(relays.code, 0, relays.stderr)
    t.match(relays.stdout, new RegExp(`^ID\\s+NAME\\s+LINK\\s+AGENTS\\s+VERSION`, 'm'))
    t.match(relays.stdout, new RegExp(`${relayId}\\s+site-a\\s+connected\\s+1\\s`), 'no --server, no token file: from the login')

    t.match((await cli('endpoint', 'tag', ep.id, 'site-a', 'db')).stdout, /web-01: site-a,db/)
    t.match((await cli('endpoint', 'tag', ep.id, '--remove', 'db')).stdout, /web-01: site-a$/m)
    const show = await cli('endpoint', 'show', ep.id)
    t.match(show.stdout, /status\s+online/)
    t.match(show.stdout, /runs commands\s+true/)
    t.match(show.stdout, /tags\s+site-a/)
    const shown = JSON.parse((await cli('endpoint', 'show', ep.id, '--json')).stdout)
    t.equal(shown.id, ep.id, '--json prints the API\'s answer')
    const tunnel = await cli('endpoint', 'tunnel', ep.id)
    t.equal(tunnel.code, 0, tunnel.stderr)
    t.match(tunnel.stdout, /tunnel of .*: open/)
    t.equal((await cli('endpoint', 'tunnel', ep.id, '--close')).code, 0)
    const byTag = await cli('endpoint', 'tunnel', '--tag', 'site-a')
    t.equal(byTag.code, 0, byTag.stderr)
    t.match(byTag.stdout, new RegExp(`${ep.id as string}\\s+web-01\\s+open`), 'the tunnels of a tag, opened')
    t.equal((await cli('endpoint', 'tunnel', ep.id, '--close')).code, 0)
    t.match((await cli('endpoint', 'rename', ep.id, 'web-1')).stdout, /is now "web-1"/)
    const taken = await api.ok('POST', '/api/endpoints', { name: 'web-2' })
    const clash = await cli('endpoint', 'rename', ep.id, 'web-2')
    t.equal(clash.code, 1)
    t.match(clash.stderr, /RG_ERR_NAME_TAKEN/)
    await api.ok('DELETE', `/api/endpoints/${taken.id as string}`)
    t.equal((await cli('endpoint', 'rename', ep.id, 'web-01')).code, 0)

    const upload = await fetch(`${server.httpUrl}/api/artifacts/hello.sh`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body: 'echo hello from $RELAYGATE_JOB_ID\n' })
    t.equal(upload.status, 201)
    t.match((await cli('artifact', 'list')).stdout, /hello\.sh\s+\d+\s+[0-9a-f]{64}/)
    const job = await cli('job', 'create', '--artifact', 'hello.sh', '--tag', 'site-a', '--run', 'sh', 'hello.sh', '--watch')
    t.equal(job.code, 0, job.stderr)
    t.match(job.stdout, /job j\w+: succeeded \(hello\.sh\)/)
    t.match(job.stdout, new RegExp(`${ep.id as string}\\s+web-01\\s+succeeded\\s+100%\\s+0`), 'a row per target, by name')
    const jobId = /job (j\w+):/.exec(job.stdout)![1]
    t.match((await cli('job', 'list')).stdout, new RegExp(`${jobId}\\s+hello\\.sh\\s+succeeded\\s+1`))
    t.equal((await cli('job', 'watch', jobId)).code, 0)
    const noTargets = await cli('job', 'create', '--artifact', 'hello.sh')
    t.equal(noTargets.code, 2, 'a job needs --endpoint or --tag')

    t.match((await cli('settings', 'set', 'checkinIntervalSeconds=10')).stdout, /checkinIntervalSeconds\s+10/)
    t.equal((await api.ok('GET', '/api/settings')).checkinIntervalSeconds, 10)
    t.match((await cli('settings', 'get')).stdout, /checkinIntervalSeconds\s+10/)
    const badSetting = await cli('settings', 'set', 'checkinIntervalSeconds=fast')
    t.equal(badSetting.code, 1)
    t.match(badSetting.stderr, /RG_ERR_BAD_REQUEST/)

    const reissued = await cli('endpoint', 'reissue-token', ep.id)
    t.equal(reissued.code, 0, reissued.stderr)
    t.match(reissued.stdout, /join token of "web-01" re-issued \(shown only now\): rg1\.\S+/)
    t.match(reissued.stdout, /warning: .*old join token no longer works/)
    t.notMatch(reissued.stdout, new RegExp(ep.joinToken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'a new token, not the old one')

    t.equal((await cli('artifact', 'delete', 'hello.sh')).code, 0)
    t.same(await api.ok('GET', '/api/artifacts'), [])
    t.equal((await cli('endpoint', 'delete', ep.id)).code, 0)
    t.equal((await api.request('GET', `/api/endpoints/${ep.id as string}`)).status, 404)
    t.equal((await cli('relays', 'revoke', relayId)).code, 0)
    await eventually(async () => (await api.ok('GET', `/api/relays/${relayId}`)).revoked === true || undefined)

    // Another server named on the command line does not get the saved token.
    const elsewhere = await cli('relays', 'list', '--server', 'http://127.0.0.1:1')
    t.equal(elsewhere.code, 2)
    t.match(elsewhere.stderr, /--token-file: cannot read/)
  })

  t.test('token create|list|revoke, login --with-token as a viewer, audit: from the terminal', async t => {
    const { server, api } = await startSite(t)
    const env: Env = { XDG_CONFIG_HOME: tempDir(t) }
    const admin = async (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> => await run(t, [...args, '--server', server.httpUrl, '--token-file', server.adminTokenFile], {}, undefined, 60_000)

    const created = await admin('token', 'create', 'dash', '--role', 'viewer')
    t.equal(created.code, 0, created.stderr)
    const token = /^\s+(rgt_\S+)$/m.exec(created.stdout)?.[1]
    t.ok(token, 'the token is printed once')
    const badRole = await admin('token', 'create', 'x', '--role', 'root')
    t.equal(badRole.code, 2, 'a role that does not exist is a usage error')
    t.match(badRole.stderr, /Allowed choices are viewer, operator, admin/)
    t.match((await admin('token', 'list')).stdout, /^t\w+\s+dash\s+viewer\s+\S+\s+admin\s+-\s+active$/m)

    // login --with-token: the token piped in, never on the command line.
    const tokenFile = join(tempDir(t), 'token')
    writeFileSync(tokenFile, `${token!}\n`, { mode: 0o600 })
    const login = startCommand(t, '/bin/sh', ['-c', `"${process.execPath}" "${bin}" login --server ${server.httpUrl} --with-token < "${tokenFile}"`], childEnv(env), root)
    const loggedIn = await login.closed
    t.equal(loggedIn.code, 0, login.stderr)
    t.match(login.stdout, /logged in to .* as "dash" \(viewer\)/)
    const viewer = async (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> => await run(t, args, env, undefined, 60_000)
    t.equal((await viewer('relays', 'list')).code, 0, 'a viewer reads')
    const refused = await viewer('endpoint', 'create', '--name', 'nope')
    t.equal(refused.code, 1)
    t.match(refused.stderr, /token "dash" has role viewer; POST \/api\/endpoints needs operator or admin \(RG_ERR_FORBIDDEN\)/)

    const audit = await admin('audit', '--limit', '5')
    t.equal(audit.code, 0, audit.stderr)
    t.match(audit.stdout, /^ID\s+TIME\s+TOKEN\s+ACTION\s+TARGET\s+SOURCE\s+RESULT\s+DETAIL/m)
    t.match(audit.stdout, /dash\s+endpoint\.create\s+-\s+\S+\s+RG_ERR_FORBIDDEN/, 'the refusal')
    t.match(audit.stdout, /admin\s+token\.create\s+t\w+\s+\S+\s+ok\s+name=dash role=viewer/)
    const json = JSON.parse((await admin('audit', '--action', 'token', '--json')).stdout)
    t.same(json.map((e: any) => e.action), ['token.create'])

    t.equal((await admin('token', 'revoke', 'dash')).code, 0, 'revoked by name')
    const after = await viewer('relays', 'list')
    t.equal(after.code, 1)
    t.match(after.stderr, /RG_ERR_UNAUTHORIZED/)
    t.equal((await admin('token', 'revoke', 'dash')).code, 1, 'not twice')
    t.ok(api.token.length > 0)
  })
}
