// Writes docs/api.md from the API's route schemas (npm run build first):
// the page of GET /api/openapi.json. test/ops/api-docs.test.ts checks it is current.
import { readFileSync, writeFileSync } from 'node:fs'
import { apiDocument } from '../dist/server/api/index.js'
import { apiMarkdown } from '../dist/server/api/docs.js'

const root = new URL('../', import.meta.url)
const { version } = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'))
writeFileSync(new URL('docs/api.md', root), apiMarkdown(apiDocument(version)))
console.log('wrote docs/api.md')
