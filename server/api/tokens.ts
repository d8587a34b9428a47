import { Type } from '@sinclair/typebox'
import { hashToken, newSecret } from '../../protocol/auth.js'
import { ROLES, type TokenRecord } from '../access-store.js'
import { isUniqueViolation } from '../sql-store.js'
import { newId } from '../ids.js'
import { sendJson, fail } from '../http-util.js'
import { iso, type ApiContext } from './context.js'
import { Body } from './route.js'

export interface TokenView { id: string, name: string, role: string, createdAt: string | null, createdBy: string | null, lastUsedAt: string | null, revokedAt: string | null, builtin: boolean }

const tokenView = (t: TokenRecord): TokenView => ({
  id: t.id, name: t.name, role: t.role, createdAt: iso(t.createdAt), createdBy: t.createdBy, lastUsedAt: iso(t.lastUsedAt), revokedAt: iso(t.revokedAt), builtin: t.builtin
})

/** /api/tokens (admin): named API tokens with a role; the token is shown once, only its hash is kept. */
export function tokenRoutes (ctx: ApiContext): void {
  const { route, store, logger } = ctx
  const changed = async (): Promise<void> => {
    await ctx.access?.reload()
    ctx.tokensChanged?.()
    ctx.publish('tokens')
  }

  route('POST', '/api/tokens', {
    summary: 'Create a named API token with a role (the token is in this answer only)',
    role: 'admin',
    audit: 'token.create',
    body: Body({
      name: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._@-]+$', description: 'who or what uses it: letters, digits and . _ @ -' }),
      role: Type.Union(ROLES.map(r => Type.Literal(r)), { description: 'viewer reads; operator also runs tunnels, jobs, artifacts, endpoints and updates; admin also manages tokens, relays and settings' })
    }),
    responses: { 201: '{id, name, role, token}', 409: 'RG_ERR_NAME_TAKEN: an active token has that name' }
  }, async (_req, res, _params, { body, principal, note }) => {
    const token = `rgt_${newSecret(32)}`
    const record: TokenRecord = {
      id: newId('t'), name: body.name, role: body.role, tokenHash: hashToken(token), createdAt: Date.now(), createdBy: principal.name, lastUsedAt: null, revokedAt: null, builtin: false
    }
    try {
      await store.access.createToken(record)
    } catch (err) {
      if (isUniqueViolation(err)) fail('RG_ERR_NAME_TAKEN', `an active token is named "${body.name}": choose another name, or revoke that one first`)
      throw err
    }
    note.target = record.id
    note.detail = { name: record.name, role: record.role }
    logger.info({ tokenId: record.id, name: record.name, role: record.role, by: principal.name }, 'API token created')
    await changed()
    sendJson(res, 201, { id: record.id, name: record.name, role: record.role, token })
  })

  route('GET', '/api/whoami', { summary: 'The token this request carries: its name and role (what the dashboard shows)', role: 'viewer', responses: { 200: '{id, name, role}' } }, (_req, res, _params, { principal }) => {
    sendJson(res, 200, { id: principal.tokenId, name: principal.name, role: principal.role })
  })

  route('GET', '/api/tokens', { summary: 'List API tokens (never the tokens themselves)', role: 'admin', responses: { 200: 'A list of tokens, revoked ones too' } }, async (_req, res) => {
    sendJson(res, 200, (await store.access.listTokens()).map(tokenView))
  })

  route('DELETE', '/api/tokens/:id', {
    summary: 'Revoke an API token: refused from the next request on, at every replica',
    role: 'admin',
    audit: 'token.revoke',
    responses: { 204: 'Revoked', 409: 'RG_ERR_LAST_ADMIN: it is the only admin token left' }
  }, async (_req, res, params, { principal, note }) => {
    const token = await store.access.getToken(params.id ?? '')
    if (token === undefined || token.revokedAt !== null) fail('RG_ERR_NOT_FOUND', `no active token ${params.id}`)
    if (token.role === 'admin' && await store.access.otherAdmins(token.id) === 0) fail('RG_ERR_LAST_ADMIN', `"${token.name}" is the only admin token: create another admin token first`)
    await store.access.revokeToken(token.id, Date.now())
    note.detail = { name: token.name, role: token.role }
    logger.info({ tokenId: token.id, name: token.name, by: principal.name }, 'API token revoked')
    await changed()
    res.writeHead(204).end()
  })
}
