import type { IncomingMessage, ServerResponse } from 'node:http'
import Router from 'find-my-way'
import { RelaygateError, toRelaygateError } from '../../protocol/index.js'
import { roleAllows } from '../access-store.js'
import { forbidden, type Principal } from '../access.js'
import { sourceOf } from '../forward.js'
import { sendJson, sendError, readJson } from '../http-util.js'
import type { ApiContext, ApiOptions, Method } from './context.js'
import { bodyChecker, queryChecker, openApiDocument, type RouteRecord, type RouteInput, type RouteSpec } from './route.js'
import { relayRoutes } from './relays.js'
import { endpointRoutes, endpointEditRoutes } from './endpoints.js'
import { tunnelRoutes } from './tunnels.js'
import { artifactRoutes } from './artifacts.js'
import { jobRoutes } from './jobs.js'
import { updateRoutes } from './updates.js'
import { settingsRoutes } from './settings.js'
import { securityRoutes } from './security.js'
import { tokenRoutes } from './tokens.js'
import { auditRoutes } from './audit.js'

export type { ApiOptions, RelayFigures } from './context.js'
export { verifyTunnelTarget } from './endpoints.js'

const METHODS: Method[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']
const RESOURCES = [relayRoutes, endpointRoutes, endpointEditRoutes, tunnelRoutes, artifactRoutes, jobRoutes, updateRoutes, settingsRoutes, securityRoutes, tokenRoutes, auditRoutes]
const OPENAPI_SPEC: RouteSpec = { summary: 'This API, described (OpenAPI 3.1)', role: 'viewer', responses: { 200: 'The OpenAPI document' } }

/**
 * The admin REST API: one module per resource, each registering its routes
 * with a spec (role, body schema, audit action). Returns a request handler
 * for node:http and node:https (no sockets here: tests may call it with any
 * request/response pair).
 */
export function createApi (options: ApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const router = Router({ ignoreTrailingSlash: true, maxParamLength: 200 })
  const routes: RouteRecord[] = []
  const callers = new WeakMap<IncomingMessage, Principal>()
  const route: ApiContext['route'] = (method, path, spec, handler) => {
    routes.push({ method, path, spec })
    const checkBody = spec.body === undefined ? null : bodyChecker(spec.body)
    const checkQuery = queryChecker(spec.query)
    router.on(method, path, (req, res, params) => {
      const principal = callers.get(req)!
      const source = sourceOf(req)
      const input: RouteInput<never> = { body: undefined as never, query: new URL(req.url ?? '/', 'http://x').searchParams, principal, note: {} }
      void (async () => {
        try {
          if (!roleAllows(principal.role, spec.role)) throw forbidden(principal, spec.role, `${method} ${path}`)
          checkQuery(input.query)
          if (checkBody !== null) input.body = checkBody(await readJson(req, options.maxBodyBytes)) as never
          await handler(req, res, params, input)
          if (spec.audit !== undefined) audited('ok')
        } catch (err) {
          const coded = toRelaygateError(err)
          if (coded.status >= 500) options.logger.error({ err: coded, url: req.url }, 'request failed')
          if (spec.audit !== undefined) audited(coded.code)
          sendError(res, coded)
        }
      })()
      function audited (result: string): void {
        const target = input.note.target !== undefined ? input.note.target : params.id ?? params.name ?? null
        options.audit.record({ token: principal.name, action: spec.audit!, target, source, result, detail: input.note.detail ?? null })
      }
    })
  }
  const ctx: ApiContext = { ...options, route, publish: topic => options.events?.publish(topic) }
  router.on('GET', '/healthz', (_req, res) => sendJson(res, 200, { ok: true, version: options.version }))
  for (const register of RESOURCES) register(ctx)
  route('GET', '/api/openapi.json', OPENAPI_SPEC, (_req, res) => {
    sendJson(res, 200, openApiDocument(routes, options.version))
  })

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    // Every /api request is authenticated before routing: unauthenticated callers
    // learn nothing about which /api routes exist (404 and 405 need a token too).
    if (path === '/api' || path.startsWith('/api/')) {
      try {
        callers.set(req, options.authorize(req))
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

/** The OpenAPI document without a server (the docs page is written from it). */
export function apiDocument (version: string): Record<string, unknown> {
  const routes: RouteRecord[] = []
  const ctx = { route: (method: Method, path: string, spec: RouteSpec) => { routes.push({ method, path, spec }) } } as unknown as ApiContext
  for (const register of RESOURCES) register(ctx)
  routes.push({ method: 'GET', path: '/api/openapi.json', spec: OPENAPI_SPEC })
  return openApiDocument(routes, version)
}
