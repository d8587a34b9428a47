import { sendJson, fail } from '../http-util.js'
import { Type } from '@sinclair/typebox'
import { iso, type ApiContext } from './context.js'
import { QueryField } from './route.js'

/** GET /api/security-events [?relay=&endpoint=&limit=]: tampering caught end to end, newest first. */
export function securityRoutes (ctx: ApiContext): void {
  ctx.route('GET', '/api/security-events', {
    summary: 'Tampering caught end to end (forged or replayed orders and reports), newest first',
    role: 'viewer',
    query: { relay: Type.String({ maxLength: 64, description: 'a relay id: only through it' }), endpoint: Type.String({ maxLength: 64, description: 'an endpoint id: only for it' }), limit: QueryField.limit(1000) },
    responses: { 200: 'A list of events' }
  }, async (_req, res, _params, { query }) => {
    const limit = Number(query.get('limit') ?? 100)
    if (limit < 1 || limit > 1000) fail('RG_ERR_BAD_REQUEST', 'limit must be a whole number from 1 to 1000')
    const events = await ctx.security.list(limit, { relayId: query.get('relay') ?? undefined, endpointId: query.get('endpoint') ?? undefined })
    sendJson(res, 200, events.map(e => ({ ...e, firstAt: iso(e.firstAt), lastAt: iso(e.lastAt) })))
  })
}
