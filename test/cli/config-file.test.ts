import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, startServer } from '../helpers/cluster.js'
import { bin, start, run, readyFile, stop, lines } from '../helpers/child.js'

if (!existsSync(bin)) {
  t.fail(`${bin} is missing: run \`npm run build\` before the CLI tests`)
} else {
  t.test('a server takes its options from a YAML file (kebab-case and camelCase keys)', async t => {
    const dir = tempDir(t)
    const ready = join(dir, 'ready.json')
    const file = join(dir, 'server.yaml')
    writeFileSync(file, [
      '# relaygate server',
      `dataDir: ${join(dir, 'data')}`,
      'host: 127.0.0.1',
      'http-port: 0',
      'https-port: off',
      `ready-file: ${ready}`,
      'log-level: warn',
      'metrics-public: true',
      ''
    ].join('\n'))
    const child = start(t, ['server', '--config', file])
    const info = await readyFile(child, ready)
    t.equal(info.adminTokenFile, join(dir, 'data', 'admin-token'), 'data-dir from the file')
    t.equal(info.httpsUrl, null, 'https-port: off from the file')
    const metrics = await fetch(`${info.httpUrl}/metrics`)
    t.equal(metrics.status, 200, 'metrics-public: true from the file (a switch)')
    await metrics.text()
    t.same(await stop(child), { code: 0, signal: null })
    t.equal(child.stdout, '', 'log-level: warn from the file (the program-level option)')
  })

  t.test('precedence: flag > environment > config file > default', async t => {
    const dir = tempDir(t)
    const paths = { file: join(dir, 'from-file.json'), env: join(dir, 'from-env.json'), flag: join(dir, 'from-flag.json') }
    const config = (name: string): string => {
      const f = join(dir, `${name}.json`)
      // JSON is YAML too.
      writeFileSync(f, JSON.stringify({ 'data-dir': join(dir, name), host: '127.0.0.1', httpPort: 0, 'https-port': 'off', 'ready-file': paths.file }))
      return f
    }
    const all = start(t, ['server', '--config', config('all'), '--ready-file', paths.flag], { RELAYGATE_READY_FILE: paths.env })
    await readyFile(all, paths.flag)
    t.notOk(existsSync(paths.env) || existsSync(paths.file), 'the flag wins over the environment and the file')
    await stop(all)
    // The config file named by RELAYGATE_CONFIG.
    const envOnly = start(t, ['server'], { RELAYGATE_READY_FILE: paths.env, RELAYGATE_CONFIG: config('env') })
    await readyFile(envOnly, paths.env)
    t.notOk(existsSync(paths.file), 'the environment wins over the file')
    await stop(envOnly)
    const fileOnly = start(t, ['server', '--config', config('file'), '--http-port', '0'])
    await readyFile(fileOnly, paths.file)
    t.pass('the file wins over the default')
    t.same(await stop(fileOnly), { code: 0, signal: null })
  })

  t.test('a relay and an agent run from config files (mandatory options and lists from the file)', async t => {
    const { api, server } = await startServer(t)
    const dir = tempDir(t)
    const relayToken = (await api.ok('POST', '/api/relays', { name: 'from-file' })).token
    const relayReady = join(dir, 'relay-ready.json')
    const relayFile = join(dir, 'relay.yaml')
    writeFileSync(relayFile, [
      `server: ${server.httpUrl}`,
      `token: ${relayToken}`,
      `data-dir: ${join(dir, 'relay')}`,
      'host: 127.0.0.1',
      'port: 0',
      'tls-port: off',
      'cache-max-bytes: 64MiB',
      `ready-file: ${relayReady}`,
      ''
    ].join('\n'))
    const relay = start(t, ['relay', '--config', relayFile])
    const r = await readyFile(relay, relayReady)
    t.match(r.wsUrl, /^ws:\/\/127\.0\.0\.1:\d+$/)
    const ep = await api.ok('POST', '/api/endpoints', { name: 'configured' })
    const agentReady = join(dir, 'agent-ready.json')
    const agentFile = join(dir, 'agent.yaml')
    writeFileSync(agentFile, [
      `join-token: ${ep.joinToken}`,
      `data-dir: ${join(dir, 'agent')}`,
      'relay:',
      `  - ${r.wsUrl}`,
      'allow-tcp: [22, 5432]',
      'allow-exec: false',
      `ready-file: ${agentReady}`,
      ''
    ].join('\n'))
    const agent = start(t, ['agent', '--config', agentFile])
    const a = await readyFile(agent, agentReady)
    t.equal(a.endpointId, ep.id)
    t.equal(a.relay, r.wsUrl, 'the relay list from the file')
    t.same(await stop(agent), { code: 0, signal: null })
    t.same(await stop(relay), { code: 0, signal: null })
  })

  t.test('bad config files exit 2 with one line naming the problem', async t => {
    const dir = tempDir(t)
    const write = (name: string, text: string): string => {
      const f = join(dir, name)
      writeFileSync(f, text)
      return f
    }
    const cases: Array<{ args: string[], match: RegExp, what: string }> = [
      { args: ['relay', '--config', write('unknown.yaml', 'server: http://x:1\ntoken: abcdefghijkl\nbogus-key: 1\n')], match: /unknown key "bogus-key"/, what: 'an unknown key' },
      { args: ['agent', '--config', write('relay-key.yaml', 'join-token: rg1.x\ncache-max-bytes: 1\n')], match: /unknown key "cache-max-bytes".*relaygate agent/, what: 'a key of another command' },
      { args: ['relay', '--port', '0', '--config', write('port.yaml', 'server: http://x:1\ntoken: abcdefghijkl\nport: 70000\n')], match: /--port <port>.*port\.yaml.*70000.*port number/, what: 'a bad value (the flag\'s own parser), even when a flag overrides it' },
      { args: ['agent', '--config', write('ports.yaml', 'join-token: rg1.x\nallow-tcp: [22, 0]\n')], match: /--allow-tcp/, what: 'a bad list item' },
      { args: ['agent', '--config', write('switch.yaml', 'join-token: rg1.x\nallow-exec: maybe\n')], match: /--allow-exec.*true or false/, what: 'a bad switch' },
      { args: ['relay', '--config', write('list.yaml', 'server: http://a:1\ntoken: [abcdefghijkl, mnopqrstuvwx]\n')], match: /--token <token>.*one value/, what: 'a list for a single value' },
      { args: ['relay', '--config', write('missing.yaml', 'token: abcdefghijkl\n')], match: /required option '--server <url>' not specified/, what: 'a mandatory option missing from flags, environment and file' },
      { args: ['relay', '--config', write('syntax.yaml', 'server: [\n')], match: /not valid YAML or JSON/, what: 'a syntax error' },
      { args: ['relay', '--port', '1', '--config', write('twice.yaml', 'server: http://x:1\ntoken: abcdefghijkl\ndata-dir: a\ndataDir: b\n')], match: /keys "data-dir" and "dataDir" are the same option/, what: 'one option twice' },
      { args: ['relay', '--config', join(dir, 'nope.yaml')], match: /cannot read .*nope\.yaml/, what: 'a missing file' }
    ]
    // Three at a time: each child loads the whole CLI.
    const results: Array<Awaited<ReturnType<typeof run>>> = []
    for (let i = 0; i < cases.length; i += 3) results.push(...await Promise.all(cases.slice(i, i + 3).map(c => run(t, c.args))))
    cases.forEach((c, i) => {
      const res = results[i]
      t.equal(res.code, 2, `${c.what}: exit 2`)
      t.equal(lines(res.stderr).length, 1, `${c.what}: one line`)
      t.match(res.stderr, c.match, c.what)
    })
  })
}
