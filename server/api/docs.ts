import { expectation } from './route.js'
import type { TSchema } from '@sinclair/typebox'

interface Operation {
  summary: string
  'x-relaygate-role': string
  'x-relaygate-audit'?: string
  parameters: Array<{ name: string, in: string, description?: string, schema: TSchema }>
  requestBody?: { content: Record<string, { schema: TSchema & { properties?: Record<string, TSchema>, required?: string[] } }> }
  responses: Record<string, { description: string }>
}

const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ')

/**
 * docs/api.md: the OpenAPI document (GET /api/openapi.json) as a page,
 * written by `npm run docs:api`; a test checks it matches the routes.
 */
export function apiMarkdown (doc: Record<string, any>): string {
  const out: string[] = [
    '# The admin API',
    '',
    '<!-- Written by `npm run docs:api` from the route schemas (server/api/); a test checks it is current. Do not edit by hand. -->',
    '',
    `Version ${String(doc.info.version)}. The same description, as OpenAPI 3.1, is served at \`GET /api/openapi.json\` (any token).`,
    '',
    String(doc.info.description),
    '',
    'Errors are `{"error": {"code": "RG_ERR_…", "message": "…"}}` with the status of the code ([errors.md](errors.md)). ' +
    'A body field that does not fit its schema is refused with 400 `RG_ERR_BAD_REQUEST` naming the field and what it must be; an unknown field is refused too.',
    ''
  ]
  const byTag = new Map<string, Array<[string, string, Operation]>>()
  for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, Operation>>)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op as unknown as { tags: string[] }).tags[0]
      byTag.set(tag, [...byTag.get(tag) ?? [], [method.toUpperCase(), path, op]])
    }
  }
  for (const [tag, ops] of byTag) {
    out.push(`## ${tag}`, '')
    for (const [method, path, op] of ops) {
      out.push(`### \`${method} ${path}\``, '', `${op.summary}.`, '')
      out.push(`Role: **${op['x-relaygate-role']}**${op['x-relaygate-audit'] === undefined ? '' : `. Audit action: \`${op['x-relaygate-audit']}\``}.`, '')
      const query = op.parameters.filter(p => p.in === 'query')
      if (query.length > 0) {
        out.push('| Query | What |', '|---|---|')
        for (const p of query) out.push(`| \`${p.name}\` | ${cell(p.description ?? expectation(p.schema))} |`)
        out.push('')
      }
      const body = op.requestBody?.content
      const json = body?.['application/json']?.schema
      if (json?.properties !== undefined) {
        out.push('| Body field | Required | Must be |', '|---|---|---|')
        for (const [name, schema] of Object.entries(json.properties)) {
          const about = (schema as { description?: string }).description
          out.push(`| \`${name}\` | ${json.required?.includes(name) === true ? 'yes' : 'no'} | ${cell(expectation(schema))}${about === undefined ? '' : ` (${cell(about)})`} |`)
        }
        out.push('')
      } else if (body !== undefined) {
        out.push(`Body: ${Object.keys(body).map(k => `\`${k}\``).join(', ')} (the raw bytes).`, '')
      }
      out.push(`Answers: ${Object.entries(op.responses).filter(([s]) => s !== 'default').map(([s, r]) => `${s} ${r.description}`).join('; ')}.`, '')
    }
  }
  return out.join('\n')
}
