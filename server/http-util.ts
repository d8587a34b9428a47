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

/** A tag: letters, digits and . _ : - (1-64). */
export const TAG = /^[A-Za-z0-9._:-]{1,64}$/
