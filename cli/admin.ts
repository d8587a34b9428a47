import { createReadStream, statSync } from 'node:fs'
import { basename } from 'node:path'
import { Transform } from 'node:stream'
import type { Command } from 'commander'
import { RelaygateError } from '../protocol/errors.js'
import { TransferProgress } from '../common/progress.js'
import { readAdminToken } from './connect.js'
import { adminRequest, verifyServerUrl, type AdminTarget } from './http-client.js'
import { opt, parseCount, collect } from './options.js'
import { readLogin } from './login.js'
import { registerOperatorCommands } from './operator.js'
import { registerAccessCommands } from './access.js'

/**
 * Operator helpers that speak to the admin API, for people without curl:
 * `token create-relay`, `endpoint create|list`, `artifact upload`,
 * `update create|list|show|pause|resume|abort`.
 * The admin token comes from RELAYGATE_ADMIN_TOKEN or --token-file
 * (default ./data/admin-token). API errors print one line with their code
 * and exit 1; usage errors exit 2.
 */
export function registerAdminCommands (program: Command, fail: (err: unknown) => never): void {
  const withServer = (cmd: Command): Command => cmd
    .addOption(opt('--server <url>', 'server URL, e.g. http://hub:8080 (default: the one relaygate login saved)'))
    .addOption(opt('--token-file <file>', 'API token file (default: the token relaygate login saved, else ./data/admin-token; RELAYGATE_ADMIN_TOKEN wins)'))
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s self-signed HTTPS certificate'))
    .addOption(opt('--json', 'print the API\'s answer as JSON'))

  // Flags and variables first, then what relaygate login saved (its token and pin only for its server).
  const target = (o: Record<string, any>): AdminTarget => {
    const login = readLogin()
    if (o.server === undefined && login === null) throw new RelaygateError('RG_ERR_CONFIG', '--server is required (or run relaygate login --server URL once)')
    const server = verifyServerUrl(o.server ?? login!.server)
    const saved = login !== null && login.server === server ? login : null
    const fromEnv = process.env.RELAYGATE_ADMIN_TOKEN
    const token = fromEnv === undefined || fromEnv === '' ? (o.tokenFile === undefined && saved !== null ? saved.token : readAdminToken(o.tokenFile)) : fromEnv.trim()
    return { server, token, serverFingerprint: o.serverFingerprint ?? saved?.serverFingerprint }
  }
  const out = (text: string): void => { process.stdout.write(text.endsWith('\n') ? text : text + '\n') }
  const run = (fn: (...args: any[]) => Promise<void>) => async (...args: any[]): Promise<void> => {
    try {
      await fn(...args)
    } catch (err) { fail(err) }
  }

  const token = program.command('token').description('Tokens (admin API): relay tokens (create-relay), API tokens with a role (create, list, revoke).')
  withServer(token.command('create-relay')
    .description('Create a relay token; prints it (shown once) and the command to run at the site.')
    .addOption(opt('--name <name>', 'the relay\'s name, e.g. site-a', 'relay').makeOptionMandatory()))
    .action(run(async (o: Record<string, any>) => {
      const t = target(o)
      const { body } = await adminRequest(t, 'POST', '/api/relays', { json: { name: o.name } })
      const relay = body as { id: string, name: string, token: string, installCommand?: string | null, installCommands?: Record<string, string> }
      const command = ['relaygate relay', `--server ${t.server}`, ...(t.serverFingerprint === undefined ? [] : [`--server-fingerprint ${t.serverFingerprint}`]), `--token ${relay.token}`].join(' ')
      if (o.json === true) return out(JSON.stringify({ ...relay, command }))
      out([
        `relay "${relay.name}" created: ${relay.id}`,
        `relay token (shown only now): ${relay.token}`,
        '',
        'Run the relay at the site (or put server and token in its --config file):',
        '',
        `  ${command}`,
        ...(typeof relay.installCommand === 'string' ? ['', 'Or install it there (as root, no Node needed; the line checks the download\'s sha256):', '', `  ${relay.installCommand}`] : []),
        ...otherKinds(relay.installCommand, relay.installCommands)
      ].join('\n'))
    }))

  const endpoint = program.command('endpoint').description('Endpoints (admin API).')
  withServer(endpoint.command('create')
    .description('Create an endpoint; prints its join token (shown once) and the agent command.')
    .addOption(opt('--name <name>', 'the endpoint\'s name, e.g. db-01', 'endpoint').makeOptionMandatory())
    .addOption(opt('--tunnel-target <url>', 'where tunnel streams go on the agent side: http://host:port, tcp://host:port or unix:/path', 'endpoint'))
    .addOption(opt('--max-agents <n>', 'agents that may serve it (more than 1 makes a cluster endpoint)', 'endpoint').argParser(parseCount))
    .addOption(opt('--tag <tag>', 'a tag to target it by (repeatable), e.g. site-a', 'endpoint').argParser(collect)))
    .action(run(async (o: Record<string, any>) => {
      const request: Record<string, unknown> = { name: o.name }
      if (o.tag !== undefined) request.tags = o.tag
      if (o.tunnelTarget !== undefined) request.tunnelTarget = o.tunnelTarget
      if (o.maxAgents !== undefined) request.maxAgents = o.maxAgents
      const { body } = await adminRequest(target(o), 'POST', '/api/endpoints', { json: request })
      const e = body as { id: string, name: string, joinToken: string, command: string, installCommand?: string | null, installCommands?: Record<string, string>, warning?: string }
      if (o.json === true) return out(JSON.stringify(e))
      out([
        `endpoint "${e.name}" created: ${e.id}`,
        `join token (shown only now): ${e.joinToken}`,
        ...(e.warning === undefined ? [] : ['', `warning: ${e.warning}`]),
        '',
        'Run the agent on the machine:',
        '',
        `  ${e.command}`,
        ...(typeof e.installCommand === 'string' ? ['', 'Or install it there from the site\'s relay (as root, no Node needed; the line checks the download\'s sha256):', '', `  ${e.installCommand}`] : []),
        ...otherKinds(e.installCommand, e.installCommands)
      ].join('\n'))
    }))

  withServer(endpoint.command('list')
    .description('List endpoints with their status, relay and tunnel state.')
    .addOption(opt('--tag <tag>', 'only those carrying this tag (repeatable: all of them)', 'endpoint').argParser(collect))
    .addOption(opt('--status <status>', 'only online or offline ones', 'endpoint').choices(['online', 'offline'])))
    .action(run(async (o: Record<string, any>) => {
      const query = new URLSearchParams()
      for (const tag of o.tag ?? []) query.append('tag', tag)
      if (o.status !== undefined) query.set('status', o.status)
      const { body } = await adminRequest(target(o), 'GET', `/api/endpoints${query.size > 0 ? `?${query.toString()}` : ''}`)
      const list = body as Array<{ id: string, name: string, status: string, relayId: string | null, lastSeen: string | null, tunnel?: { state?: string }, tags?: string[], agentVersion?: string | null }>
      if (o.json === true) return out(JSON.stringify(list))
      const rows = [['ID', 'NAME', 'STATUS', 'RELAY', 'LAST SEEN', 'TUNNEL', 'VERSION', 'TAGS']]
      for (const e of list) rows.push([e.id, e.name, e.status, e.relayId ?? '-', e.lastSeen ?? '-', e.tunnel?.state ?? '-', e.agentVersion ?? '-', (e.tags ?? []).join(',') || '-'])
      out(table(rows))
    }))

  const artifact = program.command('artifact').description('Artifacts (admin API).')
  withServer(artifact.command('upload')
    .description('Upload a file as an artifact (streamed; a progress bar on a terminal). Prints {name, sha256, size}.')
    .argument('<file>', 'the file to upload')
    .addOption(opt('--name <name>', 'artifact name (default: the file\'s name)', 'artifact'))
    .addOption(opt('--replace', 'replace an artifact of that name (refused otherwise)', 'artifact')))
    .action(run(async (file: string, o: Record<string, any>) => {
      let size: number
      try {
        const st = statSync(file)
        if (!st.isFile()) throw new Error('not a regular file')
        size = st.size
      } catch (err) {
        throw new RelaygateError('RG_ERR_CONFIG', `<file>: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
      }
      const name = typeof o.name === 'string' ? o.name : basename(file)
      const meter = new TransferProgress({ label: name, total: size, tty: process.stderr.isTTY === true ? process.stderr : null })
      let sent = 0
      const counter = new Transform({
        transform (chunk: Buffer, _enc, cb) {
          sent += chunk.length
          meter.update(sent)
          cb(null, chunk)
        }
      })
      const stream = createReadStream(file).on('error', err => counter.destroy(err)).pipe(counter)
      let body: unknown
      try {
        ({ body } = await adminRequest(target(o), 'PUT', `/api/artifacts/${encodeURIComponent(name)}${o.replace === true ? '?replace=1' : ''}`, { stream, contentLength: size }))
      } finally {
        meter.done()
      }
      const a = body as { name: string, sha256: string, size: number }
      out(JSON.stringify({ name: a.name, sha256: a.sha256, size: a.size }))
    }))

  registerUpdateCommands(program, { withServer, target, out, run })
  registerOperatorCommands(program, { withServer, target, out, run, table }, { endpoint, artifact })
  registerAccessCommands(program, { withServer, target, out, run, table }, token)
}

export interface AdminHelpers {
  /** Adds --server, --token-file, --server-fingerprint and --json. */
  withServer: (cmd: Command) => Command
  target: (o: Record<string, any>) => AdminTarget
  out: (text: string) => void
  run: (fn: (...args: any[]) => Promise<void>) => (...args: any[]) => Promise<void>
  table?: (rows: string[][]) => string
}

interface RolloutView {
  id: string, target: string, version: string, artifact: string, state: string, reason: string | null
  counts: Record<string, number>
  targets: Array<{ id: string, name: string | null, canary: boolean, state: string, progress: number, fromVersion: string | null, version: string | null, error?: { code: string, message: string }, note?: string }>
}

/** One rollout as lines: its state and counts, then a row per target. */
function describeRollout (v: RolloutView): string {
  const c = v.counts
  const head = `update ${v.id}: ${v.target} to ${v.version} (${v.artifact}), ${v.state}${v.reason === null ? '' : ` (${v.reason})`}; ` +
    `${c.succeeded} updated, ${c.inFlight} on their way, ${c.pending} waiting, ${c.failed} failed, ${c.cancelled} cancelled of ${c.total}`
  const rows = [['TARGET', 'NAME', 'STATE', 'PROGRESS', 'FROM', 'RUNNING', 'ERROR']]
  for (const x of v.targets) {
    rows.push([x.id + (x.canary ? ' (canary)' : ''), x.name ?? '-', x.state, `${Math.round(x.progress * 100)}%`, x.fromVersion ?? '-', x.version ?? '-', x.error === undefined ? (x.note ?? '') : `${x.error.code}: ${x.error.message}`])
  }
  return `${head}\n${table(rows)}`
}

/** `relaygate update create|list|show|pause|resume|abort` (issue 16): staged self-update rollouts. */
function registerUpdateCommands (program: Command, h: AdminHelpers): void {
  const update = program.command('update').description('Self-update rollouts of agents or relays to an executable uploaded as an artifact (admin API).')
  const watch = async (o: Record<string, any>, id: string): Promise<void> => {
    for (;;) {
      const { body } = await adminRequest(h.target(o), 'GET', `/api/updates/${encodeURIComponent(id)}`)
      const view = body as RolloutView
      if (o.json !== true) h.out(`${new Date().toISOString()} ${describeRollout(view).split('\n')[0]}`)
      if (!['running', 'paused'].includes(view.state) || o.watch !== true) {
        h.out(o.json === true ? JSON.stringify(view) : describeRollout(view))
        if (view.state === 'failed') process.exitCode = 1
        return
      }
      await new Promise(resolve => setTimeout(resolve, 2000))
    }
  }
  h.withServer(update.command('create')
    .description('Start a rollout: canaries first, then the rest (at most --max-parallel at once); offline ones update when they return.')
    .addOption(opt('--artifact <name>', 'the executable, uploaded as an artifact (relaygate artifact upload)', 'update').makeOptionMandatory())
    .addOption(opt('--to <version>', 'the version to update to: what the executable\'s --version prints', 'update').makeOptionMandatory())
    .addOption(opt('--target <kind>', 'agents or relays', 'update').choices(['agents', 'relays']).default('agents'))
    .addOption(opt('--endpoint <id>', 'an endpoint to update (repeatable; default: all)', 'update').argParser(collect))
    .addOption(opt('--tag <tag>', 'the endpoints carrying this tag (repeatable: all of them)', 'update').argParser(collect))
    .addOption(opt('--relay <id>', 'a relay to update (repeatable; default: all)', 'update').argParser(collect))
    .addOption(opt('--canary <n|ids>', 'the first N targets, or a comma-separated list of ids, go first', 'update'))
    .addOption(opt('--health-seconds <n>', 'a new version not online within this rolls back by itself', 'update').argParser(parseCount))
    .addOption(opt('--max-parallel <n>', 'targets updating at once', 'update').argParser(parseCount))
    .addOption(opt('--watch', 'follow the rollout until it ends (exit 1 if it failed)', 'update')))
    .action(h.run(async (o: Record<string, any>) => {
      const request: Record<string, unknown> = { artifact: o.artifact, version: o.to, target: o.target }
      if (o.endpoint !== undefined) request.endpoints = o.endpoint
      if (o.tag !== undefined) request.tags = o.tag
      if (o.relay !== undefined) request.relays = o.relay
      if (typeof o.canary === 'string') request.canary = /^\d+$/.test(o.canary) ? Number(o.canary) : o.canary.split(',').map((x: string) => x.trim()).filter(Boolean)
      if (o.healthSeconds !== undefined) request.healthSeconds = o.healthSeconds
      if (o.maxParallel !== undefined) request.maxParallel = o.maxParallel
      const { body } = await adminRequest(h.target(o), 'POST', '/api/updates', { json: request })
      const id = (body as { id: string }).id
      if (o.watch !== true) return h.out(o.json === true ? JSON.stringify(body) : `update ${id} started: relaygate update show ${id} --watch`)
      await watch(o, id)
    }))
  h.withServer(update.command('list').description('Recent rollouts, newest first.'))
    .action(h.run(async (o: Record<string, any>) => {
      const { body } = await adminRequest(h.target(o), 'GET', '/api/updates')
      const list = body as RolloutView[]
      if (o.json === true) return h.out(JSON.stringify(list))
      const rows = [['ID', 'TARGET', 'VERSION', 'STATE', 'UPDATED', 'FAILED', 'TOTAL']]
      for (const v of list) rows.push([v.id, v.target, v.version, v.state, String(v.counts.succeeded), String(v.counts.failed), String(v.counts.total)])
      h.out(table(rows))
    }))
  h.withServer(update.command('show').description('One rollout with each target\'s state.').argument('<id>').addOption(opt('--watch', 'follow it until it ends')))
    .action(h.run(async (id: string, o: Record<string, any>) => { await watch(o, id) }))
  for (const action of ['pause', 'resume', 'abort'] as const) {
    const what = { pause: 'Send the update to no more targets (those on their way go on).', resume: 'Go on with a paused rollout.', abort: 'End the rollout: targets not sent it yet are cancelled.' }[action]
    h.withServer(update.command(action).description(what).argument('<id>'))
      .action(h.run(async (id: string, o: Record<string, any>) => {
        const { body } = await adminRequest(h.target(o), 'POST', `/api/updates/${encodeURIComponent(id)}/${action}`)
        h.out(o.json === true ? JSON.stringify(body) : describeRollout(body as RolloutView))
      }))
  }
}

/** The install lines for the other kinds of machine (e.g. linux-arm64), after the default one. */
function otherKinds (shown: string | null | undefined, all: Record<string, string> | undefined): string[] {
  const lines: string[] = []
  for (const [kind, line] of Object.entries(all ?? {})) if (line !== shown) lines.push('', `On a ${kind} machine:`, '', `  ${line}`)
  return lines
}

/** Left-aligned columns, two spaces apart. */
export function table (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)))
  return rows.map(r => r.map((cell, i) => i === r.length - 1 ? cell : cell.padEnd(widths[i])).join('  ')).join('\n')
}
