import { Type } from '@sinclair/typebox'
import { sendJson, fail } from '../http-util.js'
import { Body, Field } from './route.js'
import type { Store } from '../store.js'
import type { ApiContext } from './context.js'

/** /api/jobs: create (an artifact to deliver, optionally a command to run), list, show. */
export function jobRoutes (ctx: ApiContext): void {
  const { jobs, route } = ctx
  route('POST', '/api/jobs', {
    summary: 'Create a job: deliver an artifact to endpoints (by id or tag), optionally run a command',
    role: 'operator',
    audit: 'job.create',
    body: Body({
      artifact: Type.String({ minLength: 1, maxLength: 128, description: 'the artifact\'s name' }),
      endpoints: Type.Optional(Field.ids('endpoint', 10_000)),
      tags: Type.Optional(Field.tags('the endpoints carrying all of these tags now')),
      path: Type.Optional(Type.String({ minLength: 1, maxLength: 512, pattern: '\\S', description: 'where the agent writes it, under its files directory' })),
      run: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 64, description: 'an argv list run after delivery, e.g. ["sh", "install.sh"] (agents started with --allow-exec)' })),
      deadlineSeconds: Type.Optional(Field.count(1, 30 * 86_400, 'targets not done by then fail (default 24 h)'))
    }),
    responses: { 201: '{id}' }
  }, async (_req, res, _params, { body, note }) => {
    const tags = body.tags === undefined ? undefined : [...new Set(body.tags)]
    if (body.endpoints === undefined && tags === undefined) fail('RG_ERR_BAD_REQUEST', 'field "endpoints" must be a non-empty list of endpoint ids (or give "tags": endpoints carrying all of them)')
    // Tags name the endpoints carrying all of them now.
    const endpoints = [...new Set([...body.endpoints ?? [], ...(tags === undefined ? [] : await taggedEndpoints(ctx.store, tags))])]
    if (endpoints.length === 0) fail('RG_ERR_NOT_FOUND', `no endpoint carries the tags ${tags!.join(', ')}`)
    const job = await jobs.create({ artifact: body.artifact, endpoints, path: body.path, run: body.run, deadlineSeconds: body.deadlineSeconds })
    note.target = job.id
    note.detail = { artifact: body.artifact, endpoints: endpoints.length, ...(tags === undefined ? {} : { tags }), ...(body.run === undefined ? {} : { run: body.run }) }
    // Other replicas send it to the targets whose agents they hold.
    ctx.cluster?.announce({ kind: 'job', jobId: job.id })
    sendJson(res, 201, { id: job.id })
  })

  route('GET', '/api/jobs', { summary: 'The latest 100 jobs with their progress', role: 'viewer', responses: { 200: 'A list of jobs' } }, async (_req, res) => sendJson(res, 200, await jobs.list(100)))

  route('GET', '/api/jobs/:id', { summary: 'One job, target by target', role: 'viewer', responses: { 200: 'The job' } }, async (_req, res, params) => {
    const view = await jobs.view(params.id ?? '')
    if (view === undefined) fail('RG_ERR_NOT_FOUND', `no job ${params.id}`)
    sendJson(res, 200, view)
  })
}

/** The ids of the endpoints that carry every one of `tags`. */
export async function taggedEndpoints (store: Store, tags: string[]): Promise<string[]> {
  return (await store.findEndpoints({ q: '', offset: 0, limit: Number.MAX_SAFE_INTEGER, tags })).page.map(e => e.id)
}
