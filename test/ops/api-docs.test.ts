import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { apiDocument } from '../../server/api/index.js'
import { apiMarkdown } from '../../server/api/docs.js'
import { root } from '../helpers/child.js'
import { startServer } from '../helpers/cluster.js'

// Issue 17: the API described from the schemas that validate it, served and
// written into the docs; the page is the document, never edited by hand.
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }

t.test('docs/api.md is the page of the OpenAPI document the server serves', async t => {
  const { api } = await startServer(t)
  const served = await api.ok('GET', '/api/openapi.json')
  t.same(served, JSON.parse(JSON.stringify(apiDocument(version))), 'the document without a server is the one served')
  const page = readFileSync(join(root, 'docs', 'api.md'), 'utf8')
  t.equal(page, apiMarkdown(served), 'docs/api.md is current (else: npm run docs:api)')
  t.match(page, /### `POST \/api\/tokens`/)
  t.match(page, /\| `maxAgents` \| no \| a whole number from 1 to 64/)
  t.match(page, /Role: \*\*admin\*\*\. Audit action: `token\.revoke`/)
  const paths = Object.keys(served.paths)
  for (const path of ['/api/endpoints/{id}/join-token', '/api/updates/{id}/pause', '/api/whoami', '/api/security-events']) t.ok(paths.includes(path), `${path} is described`)
})
