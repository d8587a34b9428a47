import { createReadStream, statSync } from 'node:fs'
import { basename } from 'node:path'
import { Transform } from 'node:stream'
import type { Command } from 'commander'
import { RelaygateError } from '../protocol/errors.js'
import { TransferProgress } from '../common/progress.js'
import { readAdminToken } from './connect.js'
import { adminRequest, verifyServerUrl, type AdminTarget } from './http-client.js'
import { opt, parseCount } from './options.js'

/**
 * Operator helpers that speak to the admin API, for people without curl:
 * `token create-relay`, `endpoint create|list`, `artifact upload`.
 * The admin token comes from RELAYGATE_ADMIN_TOKEN or --token-file
 * (default ./data/admin-token). API errors print one line with their code
 * and exit 1; usage errors exit 2.
 */
export function registerAdminCommands (program: Command, fail: (err: unknown) => never): void {
  const withServer = (cmd: Command): Command => cmd
    .addOption(opt('--server <url>', 'server URL, e.g. http://hub:8080').makeOptionMandatory())
    .addOption(opt('--token-file <file>', 'admin token file (default ./data/admin-token; RELAYGATE_ADMIN_TOKEN wins)'))
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s self-signed HTTPS certificate'))
    .addOption(opt('--json', 'print the API\'s answer as JSON'))

  const target = (o: Record<string, any>): AdminTarget => ({
    server: verifyServerUrl(o.server),
    token: readAdminToken(o.tokenFile),
    serverFingerprint: o.serverFingerprint
  })
  const out = (text: string): void => { process.stdout.write(text.endsWith('\n') ? text : text + '\n') }
  const run = (fn: (...args: any[]) => Promise<void>) => async (...args: any[]): Promise<void> => {
    try {
      await fn(...args)
    } catch (err) { fail(err) }
  }

  const token = program.command('token').description('Relay tokens (admin API).')
  withServer(token.command('create-relay')
    .description('Create a relay token; prints it (shown once) and the command to run at the site.')
    .addOption(opt('--name <name>', 'the relay\'s name, e.g. site-a').makeOptionMandatory()))
    .action(run(async (o: Record<string, any>) => {
      const t = target(o)
      const { body } = await adminRequest(t, 'POST', '/api/relays', { json: { name: o.name } })
      const relay = body as { id: string, name: string, token: string, installCommand?: string | null }
      const command = ['relaygate relay', `--server ${t.server}`, ...(t.serverFingerprint === undefined ? [] : [`--server-fingerprint ${t.serverFingerprint}`]), `--token ${relay.token}`].join(' ')
      if (o.json === true) return out(JSON.stringify({ ...relay, command }))
      out([
        `relay "${relay.name}" created: ${relay.id}`,
        `relay token (shown only now): ${relay.token}`,
        '',
        'Run the relay at the site (or put server and token in its --config file):',
        '',
        `  ${command}`,
        ...(typeof relay.installCommand === 'string' ? ['', 'Or install it there (as root, no Node needed; the line checks the download\'s sha256):', '', `  ${relay.installCommand}`] : [])
      ].join('\n'))
    }))

  const endpoint = program.command('endpoint').description('Endpoints (admin API).')
  withServer(endpoint.command('create')
    .description('Create an endpoint; prints its join token (shown once) and the agent command.')
    .addOption(opt('--name <name>', 'the endpoint\'s name, e.g. db-01').makeOptionMandatory())
    .addOption(opt('--tunnel-target <url>', 'where tunnel streams go on the agent side: http://host:port, tcp://host:port or unix:/path'))
    .addOption(opt('--max-agents <n>', 'agents that may serve it (more than 1 makes a cluster endpoint)').argParser(parseCount)))
    .action(run(async (o: Record<string, any>) => {
      const request: Record<string, unknown> = { name: o.name }
      if (o.tunnelTarget !== undefined) request.tunnelTarget = o.tunnelTarget
      if (o.maxAgents !== undefined) request.maxAgents = o.maxAgents
      const { body } = await adminRequest(target(o), 'POST', '/api/endpoints', { json: request })
      const e = body as { id: string, name: string, joinToken: string, command: string, installCommand?: string | null, warning?: string }
      if (o.json === true) return out(JSON.stringify(e))
      out([
        `endpoint "${e.name}" created: ${e.id}`,
        `join token (shown only now): ${e.joinToken}`,
        ...(e.warning === undefined ? [] : ['', `warning: ${e.warning}`]),
        '',
        'Run the agent on the machine:',
        '',
        `  ${e.command}`,
        ...(typeof e.installCommand === 'string' ? ['', 'Or install it there from the site\'s relay (as root, no Node needed; the line checks the download\'s sha256):', '', `  ${e.installCommand}`] : [])
      ].join('\n'))
    }))

  withServer(endpoint.command('list')
    .description('List endpoints with their status, relay and tunnel state.'))
    .action(run(async (o: Record<string, any>) => {
      const { body } = await adminRequest(target(o), 'GET', '/api/endpoints')
      const list = body as Array<{ id: string, name: string, status: string, relayId: string | null, lastSeen: string | null, tunnel?: { state?: string } }>
      if (o.json === true) return out(JSON.stringify(list))
      const rows = [['ID', 'NAME', 'STATUS', 'RELAY', 'LAST SEEN', 'TUNNEL']]
      for (const e of list) rows.push([e.id, e.name, e.status, e.relayId ?? '-', e.lastSeen ?? '-', e.tunnel?.state ?? '-'])
      out(table(rows))
    }))

  const artifact = program.command('artifact').description('Artifacts (admin API).')
  withServer(artifact.command('upload')
    .description('Upload a file as an artifact (streamed; a progress bar on a terminal). Prints {name, sha256, size}.')
    .argument('<file>', 'the file to upload')
    .addOption(opt('--name <name>', 'artifact name (default: the file\'s name)')))
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
        ({ body } = await adminRequest(target(o), 'PUT', `/api/artifacts/${encodeURIComponent(name)}`, { stream, contentLength: size }))
      } finally {
        meter.done()
      }
      const a = body as { name: string, sha256: string, size: number }
      out(JSON.stringify({ name: a.name, sha256: a.sha256, size: a.size }))
    }))
}

/** Left-aligned columns, two spaces apart. */
function table (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)))
  return rows.map(r => r.map((cell, i) => i === r.length - 1 ? cell : cell.padEnd(widths[i])).join('  ')).join('\n')
}
