import type { IncomingMessage, ServerResponse } from 'node:http'
import { Type, type Static, type TSchema, type TObject, type TProperties } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ValueErrorType } from '@sinclair/typebox/errors'
import { RelaygateError } from '../../protocol/errors.js'
import type { Role } from '../access-store.js'
import type { Principal } from '../access.js'
import { fail, TAG } from '../http-util.js'

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
export type Params = Record<string, string | undefined>

/**
 * What a route is, besides its handler: who may call it, the body it takes
 * (a TypeBox schema: the same object validates the body and is written into
 * GET /api/openapi.json), its query parameters, and the audit action it
 * records. Nothing about the API is described by hand twice.
 */
export interface RouteSpec<B extends TSchema = TSchema> {
  summary: string
  /** The least role allowed (viewer < operator < admin). */
  role: Role
  /** A JSON object body, validated before the handler runs. */
  body?: B
  /** A body that is not JSON (an artifact upload): its media type. */
  rawBody?: string
  /** Query parameters: each a string schema (with a description). */
  query?: Record<string, TSchema>
  /** The action the audit log records for a call (every change has one). */
  audit?: string
  /** What each status it answers means (errors are {error: {code, message}}). */
  responses: Record<number, string>
}

/** Filled in by a handler for its audit entry: the target (default: the :id or :name in the path) and details. */
export interface AuditNote { target?: string | null, detail?: Record<string, unknown> }

export interface RouteInput<B> {
  body: B
  query: URLSearchParams
  principal: Principal
  note: AuditNote
}

export type RouteHandler<B> = (req: IncomingMessage, res: ServerResponse, params: Params, input: RouteInput<B>) => Promise<void> | void

export interface RouteRecord { method: Method, path: string, spec: RouteSpec }

/** A body schema: a fixed object (no other field). */
export function Body<P extends TProperties> (fields: P, description?: string): TObject<P> {
  return Type.Object(fields, { additionalProperties: false, ...(description === undefined ? {} : { description }) })
}

/** What a field must be, in words, from its schema (for 400 messages). */
export function expectation (schema: TSchema): string {
  const s = schema as Record<string, unknown> & TSchema
  const range = (lo: unknown, hi: unknown): string => lo !== undefined && hi !== undefined ? ` from ${String(lo)} to ${String(hi)}` : lo !== undefined ? ` of at least ${String(lo)}` : hi !== undefined ? ` of at most ${String(hi)}` : ''
  if (Array.isArray(s.anyOf)) {
    const variants = s.anyOf as TSchema[]
    if (variants.every(v => (v as { const?: unknown }).const !== undefined)) return `one of ${variants.map(v => JSON.stringify((v as { const?: unknown }).const)).join(', ')}`
    return variants.map(expectation).join(', or ')
  }
  if (s.const !== undefined) return JSON.stringify(s.const)
  switch (s.type) {
    case 'integer': return `a whole number${range(s.minimum, s.maximum)}`
    case 'number': return `a number${range(s.minimum, s.maximum)}`
    case 'boolean': return 'true or false'
    case 'string': {
      const min = (s.minLength as number | undefined) ?? 0
      const pattern = s.pattern === undefined ? '' : s.pattern === '\\S' ? ', not blank' : ` matching ${String(s.pattern)}`
      return `a ${min > 0 ? 'non-empty ' : ''}string of at most ${String(s.maxLength ?? 'any number of')} characters${pattern}`
    }
    case 'array': return `a list of ${s.minItems === undefined ? 'at most' : `${String(s.minItems)} to`} ${String(s.maxItems)} items, each ${expectation(s.items as TSchema)}`
    case 'object': return 'an object'
    default: return 'valid'
  }
}

/** Compiles a body schema into a check that throws RG_ERR_BAD_REQUEST naming the first bad field and what it must be. */
export function bodyChecker<B extends TSchema> (schema: B): (value: unknown) => Static<B> {
  const check = TypeCompiler.Compile(schema)
  const properties = (schema as unknown as { properties?: Record<string, TSchema> }).properties ?? {}
  return value => {
    if (check.Check(value)) return value
    const first = check.Errors(value).First()!
    const field = first.path.split('/')[1] ?? ''
    if (first.type === ValueErrorType.ObjectAdditionalProperties) fail('RG_ERR_BAD_REQUEST', `unknown field "${field}" (allowed: ${Object.keys(properties).join(', ')})`)
    if (first.type === ValueErrorType.ObjectRequiredProperty) fail('RG_ERR_BAD_REQUEST', `field "${field}" is required`)
    const fieldSchema = properties[field]
    if (fieldSchema === undefined) fail('RG_ERR_BAD_REQUEST', `the body ${first.message.toLowerCase()}`)
    const about = (fieldSchema as { description?: string }).description
    fail('RG_ERR_BAD_REQUEST', `field "${field}" must be ${expectation(fieldSchema)}${about === undefined ? '' : ` (${about})`}`)
  }
}

/** Checks the query parameters a route declares (each a string schema); others are ignored. */
export function queryChecker (query: Record<string, TSchema> | undefined): (params: URLSearchParams) => void {
  const checks = Object.entries(query ?? {}).map(([name, schema]) => ({ name, schema, check: TypeCompiler.Compile(schema) }))
  return params => {
    for (const { name, schema, check } of checks) {
      for (const value of params.getAll(name)) {
        if (!check.Check(value)) {
          const about = (schema as { description?: string }).description ?? `it must be ${expectation(schema)}`
          throw new RelaygateError('RG_ERR_BAD_REQUEST', `query parameter ${name}=${JSON.stringify(String(value).slice(0, 40))} is not valid: ${about}`)
        }
      }
    }
  }
}

const ERROR_SCHEMA = {
  type: 'object',
  required: ['error'],
  properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string', description: 'A stable code (docs/errors.md)', example: 'RG_ERR_BAD_REQUEST' }, message: { type: 'string' } } } }
}

/** A schema as plain JSON Schema (TypeBox's symbols and kind markers dropped). */
function plain (schema: TSchema): unknown {
  return JSON.parse(JSON.stringify(schema))
}

/** The OpenAPI 3.1 document of the registered routes. */
export function openApiDocument (routes: readonly RouteRecord[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const { method, path, spec } of routes) {
    const params = [...path.matchAll(/:([A-Za-z]+)/g)].map(m => m[1])
    const operation: Record<string, unknown> = {
      summary: spec.summary,
      tags: [path.split('/')[2] ?? 'server'],
      'x-relaygate-role': spec.role,
      ...(spec.audit === undefined ? {} : { 'x-relaygate-audit': spec.audit }),
      parameters: [
        ...params.map(name => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
        ...Object.entries(spec.query ?? {}).map(([name, schema]) => ({ name, in: 'query', required: false, description: (schema as { description?: string }).description, schema: plain(schema) }))
      ],
      ...(spec.body === undefined && spec.rawBody === undefined
        ? {}
        : { requestBody: { required: spec.rawBody !== undefined, content: spec.rawBody !== undefined ? { [spec.rawBody]: { schema: { type: 'string', format: 'binary' } } } : { 'application/json': { schema: plain(spec.body!) } } } }),
      responses: {
        ...Object.fromEntries(Object.entries(spec.responses).map(([status, description]) => [status, { description }])),
        default: { description: 'An error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }
      }
    }
    const key = path.replace(/:([A-Za-z]+)/g, '{$1}')
    paths[key] = { ...paths[key], [method.toLowerCase()]: operation }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'relaygate admin API',
      version,
      description: 'Every /api request carries `Authorization: Bearer <API token>`. A token has a role: viewer (reads; no tunnels), operator (also tunnels, jobs, artifacts, endpoints, updates), admin (also tokens, relays, settings, the audit log). Each operation names the least role it needs in x-relaygate-role, and the audit action it records in x-relaygate-audit.'
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API token (rga_…, rgt_…)' } },
      schemas: { Error: ERROR_SCHEMA }
    },
    security: [{ bearer: [] }],
    paths
  }
}

/** Field schemas more than one body uses. */
export const Field = {
  name: (what: string) => Type.String({ minLength: 1, maxLength: 128, pattern: '\\S', description: `the ${what}'s name` }),
  tags: (description: string) => Type.Array(Type.String({ pattern: TAG.source }), { maxItems: 32, description: `${description}; each 1-64 letters, digits or . _ : -` }),
  ids: (what: string, maxItems = 100_000) => Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems, description: `${what} ids` }),
  /** A whole number of `unit` in [min, max]. */
  count: (min: number, max: number, description: string) => Type.Integer({ minimum: min, maximum: max, description })
}

/** Query parameter schemas more than one route uses. */
export const QueryField = {
  limit: (max: number) => Type.String({ pattern: '^[0-9]{1,7}$', description: `a whole number from 1 to ${max}: at most this many` }),
  tag: Type.String({ pattern: '^[A-Za-z0-9._:,-]{1,1000}$', description: 'tags of 1-64 letters, digits or . _ : - (repeated, or comma-separated): only those carrying every one' })
}
