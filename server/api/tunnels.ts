import { sendJson, fail } from '../http-util.js'
import type { EndpointRecord } from '../store.js'
import type { ApiContext } from './context.js'

async function endpointOr404 (ctx: ApiContext, id: string | undefined): Promise<EndpointRecord> {
  const e = await ctx.store.getEndpoint(id ?? '')
  if (e === undefined) fail('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
  return e
}

/** /api/endpoints/:id/tunnel: raise the flag (optionally waiting until open), close. */
export function tunnelRoutes (ctx: ApiContext): void {
  const { tunnels, route } = ctx
  route('POST', '/api/endpoints/:id/tunnel', async (req, res, params) => {
    const e = await endpointOr404(ctx, params.id)
    const wait = new URL(req.url ?? '/', 'http://x').searchParams.get('wait')
    await tunnels.request(e.id)
    if (wait === null) {
      sendJson(res, 202, tunnels.info(e.id))
      return
    }
    const seconds = Number(wait)
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 300) fail('RG_ERR_BAD_REQUEST', 'wait must be a number of seconds from 0 to 300')
    await tunnels.ensureOpen(e.id, seconds * 1000)
    sendJson(res, 200, tunnels.info(e.id))
  })

  route('DELETE', '/api/endpoints/:id/tunnel', async (_req, res, params) => {
    const e = await endpointOr404(ctx, params.id)
    tunnels.closeTunnel(e.id)
    res.writeHead(204).end()
  })
}
