import { Type } from '@sinclair/typebox'
import { sendJson, fail } from '../http-util.js'
import type { EndpointRecord } from '../store.js'
import { sourceOf } from '../forward.js'
import type { ApiContext } from './context.js'
import { Body, Field } from './route.js'
import { taggedEndpoints } from './jobs.js'

async function endpointOr404 (ctx: ApiContext, id: string | undefined): Promise<EndpointRecord> {
  const e = await ctx.store.getEndpoint(id ?? '')
  if (e === undefined) fail('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
  return e
}

const Wait = Type.String({ pattern: '^[0-9]{1,3}(\\.[0-9]+)?$', description: 'seconds from 0 to 300: wait up to this long for it to open' })

/** At most this many tunnels opened by one request (by tag). */
const MAX_TUNNELS_AT_ONCE = 1000

/** /api/endpoints/:id/tunnel: raise the flag (optionally waiting until open), close; /api/tunnels: open those of endpoints by tag. */
export function tunnelRoutes (ctx: ApiContext): void {
  const { tunnels, route } = ctx
  const waitSeconds = (raw: string | null): number | null => {
    if (raw === null) return null
    const seconds = Number(raw)
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 300) fail('RG_ERR_BAD_REQUEST', 'wait must be a number of seconds from 0 to 300')
    return seconds
  }

  route('POST', '/api/endpoints/:id/tunnel', {
    summary: 'Open the endpoint\'s tunnel (raise its flag); with ?wait= until it is open',
    role: 'operator',
    audit: 'tunnel.request',
    query: { wait: Wait },
    responses: { 200: 'The tunnel, open', 202: 'The tunnel, requested', 504: 'RG_ERR_TUNNEL_TIMEOUT: not open within wait' }
  }, async (req, res, params, { query, principal }) => {
    const e = await endpointOr404(ctx, params.id)
    const seconds = waitSeconds(query.get('wait'))
    const by = { token: principal.name, source: sourceOf(req) }
    await tunnels.request(e.id, by)
    if (seconds === null) {
      sendJson(res, 202, tunnels.info(e.id))
      return
    }
    await tunnels.ensureOpen(e.id, seconds * 1000, by)
    sendJson(res, 200, tunnels.info(e.id))
  })

  route('DELETE', '/api/endpoints/:id/tunnel', { summary: 'Close the endpoint\'s tunnel', role: 'operator', audit: 'tunnel.stop', responses: { 204: 'Closed (or was not open)' } }, async (_req, res, params) => {
    const e = await endpointOr404(ctx, params.id)
    tunnels.closeTunnel(e.id)
    res.writeHead(204).end()
  })

  // A group at once: the tunnels of every endpoint carrying the tags (and/or listed).
  route('POST', '/api/tunnels', {
    summary: `Open the tunnels of endpoints by tag and/or id (at most ${MAX_TUNNELS_AT_ONCE}); with "waitSeconds" until they are open`,
    role: 'operator',
    audit: 'tunnel.request',
    body: Body({
      tags: Type.Optional(Field.tags('the endpoints carrying all of these tags now')),
      endpoints: Type.Optional(Field.ids('endpoint', MAX_TUNNELS_AT_ONCE)),
      waitSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 300, description: 'wait up to this long for them to open' }))
    }),
    responses: { 200: 'A list of {endpointId, name, tunnel} (tunnels not open in time say so in their state)' }
  }, async (req, res, _params, { body, principal, note }) => {
    if (body.tags === undefined && body.endpoints === undefined) fail('RG_ERR_BAD_REQUEST', 'give "tags" (endpoints carrying all of them) or "endpoints" (ids)')
    const tags = body.tags === undefined ? [] : [...new Set(body.tags)]
    const ids = [...new Set([...body.endpoints ?? [], ...(tags.length === 0 ? [] : await taggedEndpoints(ctx.store, tags))])]
    if (ids.length === 0) fail('RG_ERR_NOT_FOUND', `no endpoint carries the tags ${tags.join(', ')}`)
    if (ids.length > MAX_TUNNELS_AT_ONCE) fail('RG_ERR_BAD_REQUEST', `${ids.length} endpoints match: open at most ${MAX_TUNNELS_AT_ONCE} tunnels at once (add a tag to narrow it)`)
    const records = await Promise.all(ids.map(async id => await endpointOr404(ctx, id)))
    note.target = tags.length > 0 ? `tag:${tags.join(',')}` : ids.join(',').slice(0, 200)
    note.detail = { endpoints: ids.length }
    const by = { token: principal.name, source: sourceOf(req) }
    for (const e of records) await tunnels.request(e.id, by)
    if (body.waitSeconds !== undefined && body.waitSeconds > 0) {
      // Each waits on its own: one that does not open does not fail the others.
      await Promise.all(records.map(async e => await tunnels.ensureOpen(e.id, body.waitSeconds! * 1000, by).catch(() => {})))
    }
    sendJson(res, 200, records.map(e => ({ endpointId: e.id, name: e.name, tunnel: tunnels.info(e.id) })))
  })
}
