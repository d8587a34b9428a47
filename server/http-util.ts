import type { IncomingMessage, ServerResponse } from 'node:http'
import { RelaygateError, type ErrorCodeName } from '../protocol/errors.js'

export function sendJson (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

export function sendError (res: ServerResponse, err: RelaygateError): void {
  if (res.headersSent) {
    res.destroy(err)
    return
  }
  sendJson(res, err.status, { error: { code: err.code, message: err.message } })
}

export function fail (code: ErrorCodeName, message?: string): never {
  throw new RelaygateError(code, message)
}

/** Reads a JSON object body of at most `limit` bytes. An empty body is `{}`. */
export async function readJson (req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > limit) fail('RG_ERR_BODY_TOO_LARGE', `body larger than ${limit} bytes`)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > limit) fail('RG_ERR_BODY_TOO_LARGE', `body larger than ${limit} bytes`)
    chunks.push(chunk as Buffer)
  }
  if (size === 0) return {}
  let value: unknown
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    fail('RG_ERR_BAD_JSON')
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail('RG_ERR_BAD_JSON', 'request body must be a JSON object')
  return value as Record<string, unknown>
}

/** Field validation for API bodies: RG_ERR_BAD_REQUEST naming the field. */
export function bodyString (body: Record<string, unknown>, field: string, options: { required?: boolean, max?: number, pattern?: RegExp } = {}): string | undefined {
  const value = body[field]
  if (value === undefined || value === null) {
    if (options.required === true) fail('RG_ERR_BAD_REQUEST', `field "${field}" is required`)
    return undefined
  }
  const max = options.max ?? 256
  if (typeof value !== 'string' || value.trim() === '' || value.length > max) {
    fail('RG_ERR_BAD_REQUEST', `field "${field}" must be a non-empty string of at most ${max} characters`)
  }
  if (options.pattern !== undefined && !options.pattern.test(value)) fail('RG_ERR_BAD_REQUEST', `field "${field}" has an invalid format`)
  return value
}

export function rejectUnknownFields (body: Record<string, unknown>, allowed: string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) fail('RG_ERR_BAD_REQUEST', `unknown field "${key}" (allowed: ${allowed.join(', ')})`)
  }
}

/** Checks `Authorization: Bearer <admin token>` against the stored hashes (one per replica in a cluster); throws RG_ERR_UNAUTHORIZED. */
export function bearerAuthorizer (tokenHashes: () => readonly string[], matches: (token: string, hash: string) => boolean): (req: IncomingMessage) => void {
  return req => {
    const header = req.headers.authorization ?? ''
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match === null || !tokenHashes().some(hash => matches(match[1], hash))) {
      fail('RG_ERR_UNAUTHORIZED', match === null ? 'send Authorization: Bearer <admin token>' : 'wrong admin token')
    }
  }
}

/** A tag: letters, digits and . _ : - (1-64). */
export const TAG = /^[A-Za-z0-9._:-]{1,64}$/

/** A list of tags in a body (deduplicated, at most 32), or undefined when absent. */
export function bodyTags (body: Record<string, unknown>, field: string): string[] | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (!Array.isArray(value) || value.length > 32 || value.some(v => typeof v !== 'string' || !TAG.test(v))) {
    fail('RG_ERR_BAD_REQUEST', `field "${field}" must be a list of at most 32 tags, each 1-64 letters, digits or . _ : -`)
  }
  return [...new Set(value as string[])]
}
