import type { IncomingMessage, ServerResponse } from 'node:http'
import Router from 'find-my-way'
import { RelaygateError, toRelaygateError } from '../../protocol/index.js'
import { sendJson, sendError } from '../http-util.js'
import type { ApiContext, ApiOptions, Handler, Method } from './context.js'
import { relayRoutes } from './relays.js'
import { endpointRoutes, endpointEditRoutes } from './endpoints.js'
import { tunnelRoutes } from './tunnels.js'
import { artifactRoutes } from './artifacts.js'
import { jobRoutes } from './jobs.js'
import { updateRoutes } from './updates.js'
import { settingsRoutes } from './settings.js'
import { securityRoutes } from './security.js'

export type { ApiOptions, RelayFigures } from './context.js'
export { verifyTunnelTarget } from './endpoints.js'

const METHODS: Method[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']

/**
 * The admin REST API: one module per resource, each registering its routes.
 * Returns a request handler for node:http and node:https (no sockets here:
 * tests may call it with any request/response pair).
 */
export function createApi (options: ApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const router = Router({ ignoreTrailingSlash: true, maxParamLength: 200 })
  const authorize = options.authorize
  const register = (method: Method, path: string, handler: Handler): void => {
    router.on(method, path, (req, res, params) => {
      void (async () => {
        try {
          await handler(req, res, params)
        } catch (err) {
          const coded = toRelaygateError(err)
          if (coded.status >= 500) options.logger.error({ err: coded, url: req.url }, 'request failed')
          sendError(res, coded)
        }
      })()
    })
  }
  const ctx: ApiContext = { ...options, route: register, publish: topic => options.events?.publish(topic) }
  register('GET', '/healthz', (_req, res) => sendJson(res, 200, { ok: true, version: options.version }))
  for (const routes of [relayRoutes, endpointRoutes, endpointEditRoutes, tunnelRoutes, artifactRoutes, jobRoutes, updateRoutes, settingsRoutes, securityRoutes]) routes(ctx)

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    // Every /api request is authorized before routing: unauthenticated callers
    // learn nothing about which /api routes exist (404 and 405 need the token too).
    if (path === '/api' || path.startsWith('/api/')) {
      try {
        authorize(req)
      } catch (err) {
        sendError(res, toRelaygateError(err))
        return
      }
    }
    if (router.find(req.method as Method, path) !== null) {
      router.lookup(req, res)
      return
    }
    const other = METHODS.some(m => router.find(m, path) !== null)
    sendError(res, other
      ? new RelaygateError('RG_ERR_METHOD_NOT_ALLOWED', `${req.method ?? '?'} is not allowed on ${path}`)
      : new RelaygateError('RG_ERR_NOT_FOUND', `no route ${req.method ?? '?'} ${path}`))
  }
}
