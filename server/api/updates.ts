import { sendJson, fail, readJson, bodyString, bodyTags, rejectUnknownFields } from '../http-util.js'
import { taggedEndpoints } from './jobs.js'
import type { ApiContext } from './context.js'

const VERSION = /^[0-9A-Za-z.+-]{1,64}$/

/** A whole number in [min, max], or undefined when absent. */
function wholeNumber (body: Record<string, unknown>, field: string, min: number, max: number): number | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) fail('RG_ERR_BAD_REQUEST', `field "${field}" must be a whole number from ${min} to ${max}`)
  return value as number
}

/** A list of ids, or undefined when absent. */
function idList (body: Record<string, unknown>, field: string): string[] | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (!Array.isArray(value) || value.length === 0 || value.length > 100_000 || value.some(v => typeof v !== 'string' || v.length > 64)) {
    fail('RG_ERR_BAD_REQUEST', `field "${field}" must be a non-empty list of ids`)
  }
  return value as string[]
}

/**
 * /api/updates (issue 16): staged self-update rollouts of agents or relays
 * to an executable uploaded as an artifact; show, list, pause, resume, abort.
 */
export function updateRoutes (ctx: ApiContext): void {
  const { updates, route } = ctx
  route('POST', '/api/updates', async (req, res) => {
    const body = await readJson(req, ctx.maxBodyBytes)
    rejectUnknownFields(body, ['artifact', 'version', 'target', 'endpoints', 'tags', 'relays', 'canary', 'healthSeconds', 'maxParallel', 'deadlineSeconds'])
    const artifact = bodyString(body, 'artifact', { required: true, max: 128 })!
    const version = bodyString(body, 'version', { required: true, max: 64 })!
    if (!VERSION.test(version)) fail('RG_ERR_BAD_REQUEST', 'field "version" must be what the executable\'s --version prints (letters, digits, . + -)')
    const target = body.target
    if (target !== 'agents' && target !== 'relays') fail('RG_ERR_BAD_REQUEST', 'field "target" must be "agents" or "relays"')
    let endpoints = idList(body, 'endpoints')
    const tags = bodyTags(body, 'tags')
    const relays = idList(body, 'relays')
    if (target === 'agents' && relays !== undefined) fail('RG_ERR_BAD_REQUEST', 'field "relays" is for target "relays"; name endpoints in "endpoints"')
    if (target === 'relays' && (endpoints !== undefined || tags !== undefined)) fail('RG_ERR_BAD_REQUEST', 'fields "endpoints" and "tags" are for target "agents"; name relays in "relays"')
    if (tags !== undefined) {
      // The endpoints carrying every one of the tags now.
      const tagged = await taggedEndpoints(ctx.store, tags)
      if (tagged.length === 0) fail('RG_ERR_NOT_FOUND', `no endpoint carries the tags ${tags.join(', ')}`)
      endpoints = [...new Set([...(endpoints ?? []), ...tagged])]
    }
    let canary: number | string[] | undefined
    if (Array.isArray(body.canary)) canary = idList(body, 'canary')
    else canary = wholeNumber(body, 'canary', 0, 100_000)
    const rollout = await updates.create({
      artifact,
      version,
      target,
      ids: target === 'agents' ? endpoints : relays,
      canary,
      healthSeconds: wholeNumber(body, 'healthSeconds', 5, 3600),
      maxParallel: wholeNumber(body, 'maxParallel', 1, 100_000),
      deadlineSeconds: wholeNumber(body, 'deadlineSeconds', 60, 90 * 86_400)
    })
    ctx.publish('updates')
    sendJson(res, 201, { id: rollout.id })
  })

  route('GET', '/api/updates', async (_req, res) => sendJson(res, 200, await updates.list(50)))

  route('GET', '/api/updates/:id', async (_req, res, params) => {
    const view = await updates.view(params.id ?? '')
    if (view === undefined) fail('RG_ERR_NOT_FOUND', `no update ${params.id}`)
    sendJson(res, 200, view)
  })

  for (const action of ['pause', 'resume', 'abort'] as const) {
    route('POST', `/api/updates/:id/${action}`, async (_req, res, params) => {
      await updates[action](params.id ?? '')
      ctx.publish('updates')
      sendJson(res, 200, await updates.view(params.id ?? ''))
    })
  }
}
