import { sendJson, fail, readJson, bodyString, bodyTags, rejectUnknownFields } from '../http-util.js'
import type { Store } from '../store.js'
import type { ApiContext } from './context.js'

/** /api/jobs: create (an artifact to deliver, optionally a command to run), list, show. */
export function jobRoutes (ctx: ApiContext): void {
  const { jobs, route } = ctx
  route('POST', '/api/jobs', async (req, res) => {
    const body = await readJson(req, ctx.maxBodyBytes)
    rejectUnknownFields(body, ['artifact', 'endpoints', 'tags', 'path', 'run', 'deadlineSeconds'])
    const artifact = bodyString(body, 'artifact', { required: true, max: 128 })!
    const tags = bodyTags(body, 'tags')
    const listed = body.endpoints ?? (tags === undefined ? undefined : [])
    if (!Array.isArray(listed) || listed.length > 10_000 || listed.some(e => typeof e !== 'string') || (listed.length === 0 && tags === undefined)) {
      fail('RG_ERR_BAD_REQUEST', 'field "endpoints" must be a non-empty list of endpoint ids (or give "tags": endpoints carrying all of them)')
    }
    // Tags name the endpoints carrying all of them now.
    const endpoints = [...listed as string[], ...(tags === undefined ? [] : await taggedEndpoints(ctx.store, tags))]
    if (endpoints.length === 0) fail('RG_ERR_NOT_FOUND', `no endpoint carries the tags ${tags!.join(', ')}`)
    const path = bodyString(body, 'path', { max: 512 })
    const run = body.run
    if (run !== undefined && (!Array.isArray(run) || run.length === 0 || run.length > 64 || run.some(a => typeof a !== 'string' || a.length > 4096))) {
      fail('RG_ERR_BAD_REQUEST', 'field "run" must be an argv list of strings, e.g. ["sh", "install.sh"]')
    }
    const deadlineSeconds = body.deadlineSeconds
    if (deadlineSeconds !== undefined && (!Number.isInteger(deadlineSeconds) || (deadlineSeconds as number) < 1 || (deadlineSeconds as number) > 30 * 86_400)) {
      fail('RG_ERR_BAD_REQUEST', 'field "deadlineSeconds" must be a whole number of seconds from 1 to 2592000 (30 days)')
    }
    const job = await jobs.create({ artifact, endpoints, path, run: run as string[] | undefined, deadlineSeconds: deadlineSeconds as number | undefined })
    // Other replicas send it to the targets whose agents they hold.
    ctx.cluster?.announce({ kind: 'job', jobId: job.id })
    sendJson(res, 201, { id: job.id })
  })

  route('GET', '/api/jobs', async (_req, res) => sendJson(res, 200, await jobs.list(100)))

  route('GET', '/api/jobs/:id', async (_req, res, params) => {
    const view = await jobs.view(params.id ?? '')
    if (view === undefined) fail('RG_ERR_NOT_FOUND', `no job ${params.id}`)
    sendJson(res, 200, view)
  })
}

/** The ids of the endpoints that carry every one of `tags`. */
export async function taggedEndpoints (store: Store, tags: string[]): Promise<string[]> {
  return (await store.findEndpoints({ q: '', offset: 0, limit: Number.MAX_SAFE_INTEGER, tags })).page.map(e => e.id)
}
