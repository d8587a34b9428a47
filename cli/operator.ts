import type { Command } from 'commander'
import { RelaygateError } from '../protocol/errors.js'
import { adminRequest, verifyServerUrl } from './http-client.js'
import { readAdminToken } from './connect.js'
import { opt, collect } from './options.js'
import { saveLogin } from './login.js'
import type { AdminHelpers } from './admin.js'

/** `k=v` pairs of `settings set`, values as JSON where they parse (numbers, booleans), else strings. */
function parsePairs (pairs: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    if (at <= 0) throw new RelaygateError('RG_ERR_CONFIG', `settings set: "${pair}" is not key=value`)
    const raw = pair.slice(at + 1)
    try { out[pair.slice(0, at)] = JSON.parse(raw) } catch { out[pair.slice(0, at)] = raw }
  }
  return out
}

/** A token piped on stdin (`--with-token`): its first line. */
async function readStdinToken (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) {
    text += String(chunk)
    if (text.length > 4096) break
  }
  const token = text.split('\n')[0].trim()
  if (token === '') throw new RelaygateError('RG_ERR_CONFIG', '--with-token: no token on stdin (relaygate login --server … --with-token < token-file)')
  return token
}

const dash = (v: unknown): string => v === null || v === undefined || v === '' ? '-' : String(v)

/**
 * The rest of the operator's CLI (issue 17): login, relays, endpoints (show,
 * delete, tag, tunnel), jobs (create, list, watch), artifacts (list,
 * delete), settings. Tables on a terminal, --json everywhere.
 */
export function registerOperatorCommands (program: Command, h: Required<AdminHelpers>, groups: { endpoint: Command, artifact: Command }): void {
  const api = async (o: Record<string, any>, method: string, path: string, json?: Record<string, unknown>): Promise<any> =>
    (await adminRequest(h.target(o), method, path, json === undefined ? {} : { json })).body
  const print = (o: Record<string, any>, body: unknown, text: () => string): void => h.out(o.json === true ? JSON.stringify(body) : text())

  program.command('login')
    .description('Save the server URL, its pin and an API token (mode 0600) so later commands need no --server.')
    .addOption(opt('--server <url>', 'server URL, e.g. https://hub:8443').makeOptionMandatory())
    .addOption(opt('--token-file <file>', 'API token file (default ./data/admin-token; RELAYGATE_ADMIN_TOKEN wins)'))
    .addOption(opt('--with-token', 'read the API token from stdin (e.g. one from relaygate token create)'))
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s self-signed HTTPS certificate'))
    .action(h.run(async (o: Record<string, any>) => {
      const server = verifyServerUrl(o.server)
      const token = o.withToken === true ? await readStdinToken() : readAdminToken(o.tokenFile)
      const target = { server, token, serverFingerprint: o.serverFingerprint }
      // Only a login that works is saved.
      const me = (await adminRequest(target, 'GET', '/api/whoami')).body as { name: string, role: string }
      const file = saveLogin({ server, token, ...(o.serverFingerprint === undefined ? {} : { serverFingerprint: o.serverFingerprint }) })
      h.out(`logged in to ${server} as "${me.name}" (${me.role}); saved to ${file} (mode 0600)`)
    }))

  // 'relays', not 'relay': that one runs a relay.
  const relay = program.command('relays').description('Relays (admin API): list, revoke.')
  h.withServer(relay.command('list').description('Relays with their link, agents and version.'))
    .action(h.run(async (o: Record<string, any>) => {
      const list = await api(o, 'GET', '/api/relays') as any[]
      print(o, list, () => h.table([['ID', 'NAME', 'LINK', 'AGENTS', 'VERSION', 'ADDRESSES'], ...list.map(r => [r.id, r.name, r.revoked === true ? 'revoked' : (r.connected === true ? 'connected' : 'disconnected'), String(r.agents ?? 0), dash(r.version), [r.wsUrl, r.wssUrl].filter(Boolean).join(' ') || '-'])]))
    }))
  h.withServer(relay.command('revoke').description('Revoke a relay\'s token and drop its link.').argument('<id>'))
    .action(h.run(async (id: string, o: Record<string, any>) => {
      await api(o, 'DELETE', `/api/relays/${encodeURIComponent(id)}`)
      print(o, { id, revoked: true }, () => `relay ${id} revoked`)
    }))

  const endpoint = groups.endpoint
  h.withServer(endpoint.command('show').description('One endpoint: status, agents, version, tags, tunnel.').argument('<id>'))
    .action(h.run(async (id: string, o: Record<string, any>) => {
      const e = await api(o, 'GET', `/api/endpoints/${encodeURIComponent(id)}`)
      print(o, e, () => h.table([
        ['FIELD', 'VALUE'], ['id', e.id], ['name', e.name], ['status', e.status], ['relay', dash(e.relayId)], ['edge id', dash(e.edgeId)],
        ['version', dash(e.agentVersion)], ['runs commands', dash(e.allowsCommands)], ['tags', (e.tags ?? []).join(',') || '-'],
        ['tunnel', dash(e.tunnel?.state)], ['last seen', dash(e.lastSeen)], ['refused edge ids', String((e.refusedEdgeIds ?? []).length)]
      ]))
    }))
  h.withServer(endpoint.command('delete').description('Delete an endpoint: its agents are disconnected and refused.').argument('<id>'))
    .action(h.run(async (id: string, o: Record<string, any>) => {
      await api(o, 'DELETE', `/api/endpoints/${encodeURIComponent(id)}`)
      print(o, { id, deleted: true }, () => `endpoint ${id} deleted`)
    }))
  h.withServer(endpoint.command('tag').description('Add or remove tags (prints the endpoint\'s tags).').argument('<id>').argument('[tags...]', 'tags to add')
    .addOption(opt('--remove <tag>', 'a tag to take off (repeatable)', 'endpoint').argParser(collect)))
    .action(h.run(async (id: string, add: string[], o: Record<string, any>) => {
      const e = await api(o, 'GET', `/api/endpoints/${encodeURIComponent(id)}`)
      const tags = [...new Set([...(e.tags as string[]), ...add])].filter(t => !(o.remove ?? []).includes(t))
      const changed = await api(o, 'PATCH', `/api/endpoints/${encodeURIComponent(id)}`, { tags })
      print(o, changed, () => `${changed.name as string}: ${(changed.tags as string[]).join(',') || '(no tags)'}`)
    }))
  h.withServer(endpoint.command('reissue-token').description('A new join token (shown once); the old one stops working at once: agents using it are stopped.').argument('<id>'))
    .action(h.run(async (id: string, o: Record<string, any>) => {
      const e = await api(o, 'POST', `/api/endpoints/${encodeURIComponent(id)}/join-token`)
      print(o, e, () => [
        `join token of "${e.name as string}" re-issued (shown only now): ${e.joinToken as string}`,
        `warning: ${e.warning as string}`, '', 'Run the agent on the machine with it:', '', `  ${e.command as string}`,
        ...(typeof e.installCommand === 'string' ? ['', 'Or install it there:', '', `  ${e.installCommand as string}`] : [])
      ].join('\n'))
    }))
  h.withServer(endpoint.command('rename').description('Rename an endpoint (names are unique).').argument('<id>').argument('<name>'))
    .action(h.run(async (id: string, name: string, o: Record<string, any>) => {
      const changed = await api(o, 'PATCH', `/api/endpoints/${encodeURIComponent(id)}`, { name })
      print(o, changed, () => `endpoint ${id} is now "${changed.name as string}"`)
    }))
  h.withServer(endpoint.command('tunnel').description('Open the endpoint\'s tunnel (waits until it is open), or --close it; --tag opens those of every endpoint carrying the tags.').argument('[id]')
    .addOption(opt('--tag <tag>', 'the endpoints carrying this tag (repeatable: all of them)', 'endpoint').argParser(collect))
    .addOption(opt('--close', 'close it instead', 'endpoint')))
    .action(h.run(async (id: string | undefined, o: Record<string, any>) => {
      if (o.tag !== undefined) {
        if (id !== undefined || o.close === true) throw new RelaygateError('RG_ERR_CONFIG', 'endpoint tunnel --tag opens a group: give no id and no --close')
        const opened = await api(o, 'POST', '/api/tunnels', { tags: o.tag, waitSeconds: 30 }) as any[]
        return print(o, opened, () => h.table([['ID', 'NAME', 'TUNNEL'], ...opened.map(x => [x.endpointId, x.name, x.tunnel.state])]))
      }
      if (id === undefined) throw new RelaygateError('RG_ERR_CONFIG', 'endpoint tunnel: give an endpoint id, or --tag')
      if (o.close === true) {
        await api(o, 'DELETE', `/api/endpoints/${encodeURIComponent(id)}/tunnel`)
        return print(o, { id, tunnel: 'closed' }, () => `tunnel of ${id} closed`)
      }
      const state = await api(o, 'POST', `/api/endpoints/${encodeURIComponent(id)}/tunnel?wait=30`)
      print(o, state, () => `tunnel of ${id}: ${String(state?.state ?? 'open')}`)
    }))

  const artifact = groups.artifact
  h.withServer(artifact.command('list').description('Artifacts: name, size, sha256.'))
    .action(h.run(async (o: Record<string, any>) => {
      const list = await api(o, 'GET', '/api/artifacts') as any[]
      print(o, list, () => h.table([['NAME', 'SIZE', 'SHA256', 'CREATED'], ...list.map(a => [a.name, String(a.size), a.sha256, dash(a.createdAt)])]))
    }))
  h.withServer(artifact.command('delete').description('Delete an artifact.').argument('<name>'))
    .action(h.run(async (name: string, o: Record<string, any>) => {
      await api(o, 'DELETE', `/api/artifacts/${encodeURIComponent(name)}`)
      print(o, { name, deleted: true }, () => `artifact ${name} deleted`)
    }))

  registerJobCommands(program, h, api, print)

  const settings = program.command('settings').description('Fleet settings (admin API): get, set.')
  h.withServer(settings.command('get').description('The settings in force.'))
    .action(h.run(async (o: Record<string, any>) => {
      const s = await api(o, 'GET', '/api/settings') as Record<string, unknown>
      print(o, s, () => h.table([['SETTING', 'VALUE'], ...Object.entries(s).map(([k, v]) => [k, String(v)])]))
    }))
  h.withServer(settings.command('set').description('Change settings: key=value … (e.g. checkinIntervalSeconds=10).').argument('<pairs...>'))
    .action(h.run(async (pairs: string[], o: Record<string, any>) => {
      const s = await api(o, 'PATCH', '/api/settings', parsePairs(pairs)) as Record<string, unknown>
      print(o, s, () => h.table([['SETTING', 'VALUE'], ...Object.entries(s).map(([k, v]) => [k, String(v)])]))
    }))
}

/** `job create|list|watch`: deliver an artifact (and run a command) on endpoints or tags, and follow it. */
function registerJobCommands (program: Command, h: Required<AdminHelpers>, api: (o: Record<string, any>, method: string, path: string, json?: Record<string, unknown>) => Promise<any>, print: (o: Record<string, any>, body: unknown, text: () => string) => void): void {
  const job = program.command('job').description('Jobs (admin API): create, list, watch.')
  const describe = (v: any): string => {
    const rows = [['ENDPOINT', 'NAME', 'STATE', 'PROGRESS', 'EXIT', 'ERROR']]
    for (const x of v.targets as any[]) rows.push([x.endpointId, dash(x.name), x.state, `${Math.round((x.progress ?? 0) * 100)}%`, dash(x.exitCode), x.error === undefined ? '' : `${x.error.code as string}: ${x.error.message as string}`])
    return `job ${v.id as string}: ${v.state as string} (${v.artifact as string})\n${h.table(rows)}`
  }
  const watch = async (o: Record<string, any>, id: string): Promise<void> => {
    for (;;) {
      const v = await api(o, 'GET', `/api/jobs/${encodeURIComponent(id)}`)
      const done = v.state === 'succeeded' || v.state === 'failed'
      if (done || o.watch !== true) {
        print(o, v, () => describe(v))
        if (v.state === 'failed') process.exitCode = 1
        return
      }
      if (o.json !== true) {
        const counts: Record<string, number> = {}
        for (const x of v.targets as any[]) counts[x.state] = (counts[x.state] ?? 0) + 1
        h.out(`${new Date().toISOString()} job ${id}: ${Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ')}`)
      }
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
  }
  h.withServer(job.command('create').description('Deliver an artifact to endpoints (by id or tag), optionally running a command there.')
    .addOption(opt('--artifact <name>', 'the artifact to deliver', 'job').makeOptionMandatory())
    .addOption(opt('--endpoint <id>', 'a target endpoint (repeatable)', 'job').argParser(collect))
    .addOption(opt('--tag <tag>', 'the endpoints carrying this tag (repeatable: all of them)', 'job').argParser(collect))
    .addOption(opt('--path <path>', 'where to place it, relative to the agent\'s files dir (default: its name)', 'job'))
    .addOption(opt('--run <command...>', 'then run this command (argv; agents need --allow-exec)', 'job'))
    .addOption(opt('--watch', 'follow it until every target ends (exit 1 if one failed)', 'job')))
    .action(h.run(async (o: Record<string, any>) => {
      if (o.endpoint === undefined && o.tag === undefined) throw new RelaygateError('RG_ERR_CONFIG', 'job create: name targets with --endpoint or --tag')
      const body: Record<string, unknown> = { artifact: o.artifact }
      if (o.endpoint !== undefined) body.endpoints = o.endpoint
      if (o.tag !== undefined) body.tags = o.tag
      if (o.path !== undefined) body.path = o.path
      if (o.run !== undefined) body.run = o.run
      const { id } = await api(o, 'POST', '/api/jobs', body)
      if (o.watch !== true) return print(o, { id }, () => `job ${id as string} started: relaygate job watch ${id as string}`)
      await watch(o, id)
    }))
  h.withServer(job.command('list').description('Recent jobs, newest first.'))
    .action(h.run(async (o: Record<string, any>) => {
      const list = (await api(o, 'GET', '/api/jobs') as any[]).reverse()
      print(o, list, () => h.table([['ID', 'ARTIFACT', 'STATE', 'TARGETS', 'CREATED'], ...list.map(j => [j.id, j.artifact, j.state, String(j.targets.length), dash(j.createdAt)])]))
    }))
  h.withServer(job.command('watch').description('Follow a job until every target ends, with live progress.').argument('<id>'))
    .action(h.run(async (id: string, o: Record<string, any>) => { await watch({ ...o, watch: true }, id) }))
}
