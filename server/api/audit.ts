import { Type } from '@sinclair/typebox'
import { sendJson, fail } from '../http-util.js'
import type { AuditFilter } from '../access-store.js'
import { iso, type ApiContext } from './context.js'
import { QueryField } from './route.js'

/** GET /api/audit (admin): who did what, newest first. */
export function auditRoutes (ctx: ApiContext): void {
  ctx.route('GET', '/api/audit', {
    summary: 'The audit log, newest first: every change and tunnel session (who, what, target, source, when, result)',
    role: 'admin',
    query: {
      action: Type.String({ pattern: '^[a-z.-]{1,64}$', description: 'an action such as endpoint.create, or its group such as tunnel (lowercase letters, . and -)' }),
      token: Type.String({ minLength: 1, maxLength: 64, description: 'a token\'s name (1-64 characters): done with it' }),
      target: Type.String({ minLength: 1, maxLength: 200, description: 'an id or name (1-200 characters): done to it' }),
      limit: QueryField.limit(1000),
      before: Type.String({ minLength: 1, maxLength: 40, description: 'an entry id (the last of a page) or a time (ISO 8601): older than it' })
    },
    responses: { 200: 'A list of entries: {id, at, token, action, target, source, result, detail}' }
  }, async (_req, res, _params, { query }) => {
    const limit = Number(query.get('limit') ?? 100)
    if (limit < 1 || limit > 1000) fail('RG_ERR_BAD_REQUEST', 'limit must be a whole number from 1 to 1000')
    const filter: AuditFilter = { limit }
    for (const key of ['action', 'token', 'target'] as const) {
      const value = query.get(key)
      if (value !== null) filter[key] = value
    }
    const before = query.get('before')
    if (before !== null) {
      if (/^[0-9]+$/.test(before)) filter.before = { id: Number(before) }
      else {
        const at = Date.parse(before)
        if (Number.isNaN(at)) fail('RG_ERR_BAD_REQUEST', 'before must be an entry id or a time such as 2026-12-05T10:00:00Z')
        filter.before = { at }
      }
    }
    const entries = await ctx.audit.list(filter)
    sendJson(res, 200, entries.map(e => ({ ...e, at: iso(e.at) })))
  })
}
