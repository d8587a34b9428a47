import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { bin, root, run } from '../helpers/child.js'

type Ini = Map<string, Map<string, string[]>>

/** A systemd unit as INI: sections of keys, each with all its values (keys may repeat). */
function parseUnit (text: string): Ini {
  const out: Ini = new Map()
  let section: Map<string, string[]> | null = null
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[([A-Za-z]+)\]$/.exec(line)
    if (header !== null) {
      section = new Map()
      out.set(header[1], section)
      continue
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (kv === null || section === null) throw new Error(`line ${i + 1} is not key=value inside a section: ${raw}`)
    section.set(kv[1], [...(section.get(kv[1]) ?? []), kv[2]])
  }
  return out
}

const names = ['server', 'relay', 'agent'] as const
const deploy = join(root, 'deploy')

t.test('the systemd units are well-formed and hardened', async t => {
  for (const name of names) {
    const file = join(deploy, 'systemd', `relaygate-${name}.service`)
    const unit = parseUnit(readFileSync(file, 'utf8'))
    t.same([...unit.keys()], ['Unit', 'Service', 'Install'], `${name}: sections`)
    const get = (section: string, key: string): string | undefined => unit.get(section)?.get(key)?.at(-1)
    t.ok(get('Unit', 'Description'), `${name}: Description`)
    t.equal(get('Unit', 'After'), 'network-online.target')
    t.equal(get('Install', 'WantedBy'), 'multi-user.target')
    const expected: Record<string, string> = {
      Type: 'simple',
      User: 'relaygate',
      StateDirectory: `relaygate-${name}`,
      RuntimeDirectory: `relaygate-${name}`,
      EnvironmentFile: `-/etc/relaygate/${name}.env`,
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      NoNewPrivileges: 'yes',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
      CapabilityBoundingSet: '',
      Restart: 'on-failure',
      KillMode: 'mixed'
    }
    for (const [key, value] of Object.entries(expected)) t.equal(get('Service', key), value, `${name}: ${key}=${value}`)
    t.same(get('Service', 'RestartPreventExitStatus')?.split(/\s+/).sort(), ['2', '3'], `${name}: no restart after exit 2 (bad config) or 3 (refused)`)
    const exec = get('Service', 'ExecStart') ?? ''
    t.match(exec, new RegExp(`^/usr/bin/env relaygate ${name} --config /etc/relaygate/${name}\\.yaml `), `${name}: ExecStart`)
    t.match(exec, new RegExp(`--data-dir /var/lib/relaygate-${name}( |$)`), `${name}: the data dir is the state directory`)
    t.match(exec, new RegExp(`--ready-file /run/relaygate-${name}/`), `${name}: the ready file is in the runtime directory`)
  }
  const agentStop = Number(parseUnit(readFileSync(join(deploy, 'systemd', 'relaygate-agent.service'), 'utf8')).get('Service')?.get('TimeoutStopSec')?.[0])
  t.ok(agentStop > 30, 'the agent unit leaves time for the 30 s job drain')
})

if (!existsSync(bin)) {
  t.fail(`${bin} is missing: run \`npm run build\` before the deploy tests`)
} else {
  t.test('every flag in the units and every key in the example configs is a real option', async t => {
    const helps = await Promise.all(names.map(name => run(t, [name, '--help'])))
    const global = await run(t, ['--help'])
    for (const [i, name] of names.entries()) {
      t.equal(helps[i].code, 0)
      const known = new Set([...(helps[i].stdout + global.stdout).matchAll(/--[a-z][a-z0-9-]*/g)].map(m => m[0]))
      const unit = readFileSync(join(deploy, 'systemd', `relaygate-${name}.service`), 'utf8')
      const exec = /^ExecStart=(.*)$/m.exec(unit)![1]
      const flags = [...exec.matchAll(/--[a-z][a-z0-9-]*/g)].map(m => m[0])
      t.ok(flags.length >= 3, `${name}: ExecStart passes flags`)
      for (const flag of flags) t.ok(known.has(flag), `${name}: ${flag} is in relaygate ${name} --help`)
      const example = join(deploy, `${name}.example.yaml`)
      const text = readFileSync(example, 'utf8')
      const data = parse(text) as Record<string, unknown>
      t.ok(Object.keys(data).length > 0, `${name}: the example sets options`)
      // Keys set, and keys shown commented out ("# tls-cert: …").
      const keys = [...Object.keys(data), ...[...text.matchAll(/^# ([a-z][a-z-]*):(\s|$)/gm)].map(m => m[1])]
      for (const key of keys) t.ok(known.has(`--${key}`), `${name}.example.yaml: ${key} is --${key} of relaygate ${name}`)
    }
  })
}
