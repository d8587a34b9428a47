import { sendJson, fail } from '../http-util.js'
import { iso, type ApiContext } from './context.js'

/** GET /api/security-events [?relay=&endpoint=&limit=]: tampering caught end to end, newest first. */
export function securityRoutes (ctx: ApiContext): void {
  ctx.route('GET', '/api/security-events', async (req, res) => {
    const query = new URL(req.url ?? '/', 'http://x').searchParams
    const limit = Number(query.get('limit') ?? 100)
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) fail('RG_ERR_BAD_REQUEST', 'limit must be a whole number from 1 to 1000')
    const events = await ctx.security.list(limit, { relayId: query.get('relay') ?? undefined, endpointId: query.get('endpoint') ?? undefined })
    sendJson(res, 200, events.map(e => ({ ...e, firstAt: iso(e.firstAt), lastAt: iso(e.lastAt) })))
  })
}
