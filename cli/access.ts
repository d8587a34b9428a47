import type { Command } from 'commander'
import { RelaygateError } from '../protocol/errors.js'
import { adminRequest } from './http-client.js'
import { opt } from './options.js'
import type { AdminHelpers } from './admin.js'

const dash = (v: unknown): string => v === null || v === undefined || v === '' ? '-' : String(v)

/** What an audit entry's detail says, in a line (bytes of tunnel sessions first). */
function detailLine (d: Record<string, unknown> | null): string {
  if (d === null) return ''
  return Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' ')
}

/**
 * `token create|list|revoke` and `audit` (issue 17): named API tokens with a
 * role, and who did what. Tables on a terminal, --json everywhere.
 */
export function registerAccessCommands (program: Command, h: Required<AdminHelpers>, token: Command): void {
  const api = async (o: Record<string, any>, method: string, path: string, json?: Record<string, unknown>): Promise<any> =>
    (await adminRequest(h.target(o), method, path, json === undefined ? {} : { json })).body
  const print = (o: Record<string, any>, body: unknown, text: () => string): void => h.out(o.json === true ? JSON.stringify(body) : text())

  h.withServer(token.command('create').description('Create a named token: viewer (reads), operator (also tunnels, jobs, artifacts, endpoints, updates) or admin. Shown once.').argument('<name>')
    .addOption(opt('--role <role>', 'viewer, operator or admin', 'token').choices(['viewer', 'operator', 'admin']).makeOptionMandatory()))
    .action(h.run(async (name: string, o: Record<string, any>) => {
      const t = await api(o, 'POST', '/api/tokens', { name, role: o.role })
      print(o, t, () => [
        `token "${t.name as string}" (${t.role as string}) created; it is shown only now:`, '', `  ${t.token as string}`, '',
        `Give it to its user: RELAYGATE_ADMIN_TOKEN=… relaygate … , or relaygate login --server <url> --with-token < file`
      ].join('\n'))
    }))
  h.withServer(token.command('list').description('Tokens (never the tokens themselves): name, role, last used, revoked.'))
    .action(h.run(async (o: Record<string, any>) => {
      const list = await api(o, 'GET', '/api/tokens') as any[]
      print(o, list, () => h.table([['ID', 'NAME', 'ROLE', 'CREATED', 'BY', 'LAST USED', 'STATE'], ...list.map(t => [
        t.id, t.name, t.role, dash(t.createdAt), t.builtin === true ? '(first start)' : dash(t.createdBy), dash(t.lastUsedAt), t.revokedAt === null ? 'active' : `revoked ${t.revokedAt as string}`
      ])]))
    }))
  h.withServer(token.command('revoke').description('Revoke a token (by id or name): refused from its next request on.').argument('<token>', 'its id or name'))
    .action(h.run(async (which: string, o: Record<string, any>) => {
      const list = await api(o, 'GET', '/api/tokens') as any[]
      const found = list.find(t => t.revokedAt === null && (t.id === which || t.name === which))
      if (found === undefined) throw new RelaygateError('RG_ERR_NOT_FOUND', `no active token with id or name "${which}" (relaygate token list)`)
      await api(o, 'DELETE', `/api/tokens/${encodeURIComponent(found.id as string)}`)
      print(o, { id: found.id, name: found.name, revoked: true }, () => `token "${found.name as string}" (${found.id as string}) revoked`)
    }))

  h.withServer(program.command('audit').description('The audit log, newest first: who did what, to what, from where, and the result (admin API).')
    .addOption(opt('--action <action>', 'an action (endpoint.create) or its group (endpoint, tunnel, token)', 'audit'))
    .addOption(opt('--token <name>', 'done with the token of this name', 'audit'))
    .addOption(opt('--target <id>', 'done to this id or name', 'audit'))
    .addOption(opt('--before <id-or-time>', 'older than this entry id or ISO time (the next page)', 'audit'))
    .addOption(opt('--limit <n>', 'at most this many (1-1000)', 'audit').default('50')))
    .action(h.run(async (o: Record<string, any>) => {
      const query = new URLSearchParams()
      for (const key of ['action', 'token', 'target', 'before', 'limit']) if (o[key] !== undefined) query.set(key, String(o[key]))
      const list = await api(o, 'GET', `/api/audit?${query.toString()}`) as any[]
      print(o, list, () => h.table([['ID', 'TIME', 'TOKEN', 'ACTION', 'TARGET', 'SOURCE', 'RESULT', 'DETAIL'], ...list.map(e => [
        String(e.id), e.at, dash(e.token), e.action, dash(e.target), dash(e.source), e.result, detailLine(e.detail)
      ])]) + (list.length > 0 && list.length === Number(o.limit) ? `\n(older: --before ${String(list[list.length - 1].id)})` : ''))
    }))
}
