import { Type } from '@sinclair/typebox'
import { sendJson, fail } from '../http-util.js'
import { Body, Field } from './route.js'
import { taggedEndpoints } from './jobs.js'
import type { ApiContext } from './context.js'

/**
 * /api/updates (issue 16): staged self-update rollouts of agents or relays
 * to an executable uploaded as an artifact; show, list, pause, resume, abort.
 */
export function updateRoutes (ctx: ApiContext): void {
  const { updates, route } = ctx
  route('POST', '/api/updates', {
    summary: 'Start a staged self-update rollout of agents or relays to an executable uploaded as an artifact',
    role: 'operator',
    audit: 'update.create',
    body: Body({
      artifact: Type.String({ minLength: 1, maxLength: 128, description: 'the uploaded executable\'s artifact name' }),
      version: Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9A-Za-z.+-]+$', description: 'what the executable\'s --version prints' }),
      target: Type.Union([Type.Literal('agents'), Type.Literal('relays')], { description: 'what is updated' }),
      endpoints: Type.Optional(Field.ids('endpoint')),
      tags: Type.Optional(Field.tags('target "agents": the endpoints carrying all of these tags now')),
      relays: Type.Optional(Field.ids('relay')),
      canary: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 100_000 }), Field.ids('canary')], { description: 'how many targets go first, or which' })),
      healthSeconds: Type.Optional(Field.count(5, 3600, 'a new version not online within this is rolled back')),
      maxParallel: Type.Optional(Field.count(1, 100_000, 'targets updating at once, at most')),
      deadlineSeconds: Type.Optional(Field.count(60, 90 * 86_400, 'targets not updated by then fail'))
    }),
    responses: { 201: '{id}' }
  }, async (_req, res, _params, { body, note }) => {
    const { target } = body
    let endpoints = body.endpoints
    const tags = body.tags === undefined ? undefined : [...new Set(body.tags)]
    const relays = body.relays
    if (target === 'agents' && relays !== undefined) fail('RG_ERR_BAD_REQUEST', 'field "relays" is for target "relays"; name endpoints in "endpoints"')
    if (target === 'relays' && (endpoints !== undefined || tags !== undefined)) fail('RG_ERR_BAD_REQUEST', 'fields "endpoints" and "tags" are for target "agents"; name relays in "relays"')
    if (tags !== undefined) {
      // The endpoints carrying every one of the tags now.
      const tagged = await taggedEndpoints(ctx.store, tags)
      if (tagged.length === 0) fail('RG_ERR_NOT_FOUND', `no endpoint carries the tags ${tags.join(', ')}`)
      endpoints = [...new Set([...(endpoints ?? []), ...tagged])]
    }
    const rollout = await updates.create({
      artifact: body.artifact,
      version: body.version,
      target,
      ids: target === 'agents' ? endpoints : relays,
      canary: body.canary,
      healthSeconds: body.healthSeconds,
      maxParallel: body.maxParallel,
      deadlineSeconds: body.deadlineSeconds
    })
    note.target = rollout.id
    note.detail = { artifact: body.artifact, version: body.version, target, ...(tags === undefined ? {} : { tags }) }
    ctx.publish('updates')
    sendJson(res, 201, { id: rollout.id })
  })

  route('GET', '/api/updates', { summary: 'The latest 50 rollouts', role: 'viewer', responses: { 200: 'A list of rollouts' } }, async (_req, res) => sendJson(res, 200, await updates.list(50)))

  route('GET', '/api/updates/:id', { summary: 'One rollout, target by target', role: 'viewer', responses: { 200: 'The rollout' } }, async (_req, res, params) => {
    const view = await updates.view(params.id ?? '')
    if (view === undefined) fail('RG_ERR_NOT_FOUND', `no update ${params.id}`)
    sendJson(res, 200, view)
  })

  for (const action of ['pause', 'resume', 'abort'] as const) {
    route('POST', `/api/updates/:id/${action}`, { summary: `${action[0].toUpperCase()}${action.slice(1)} a rollout`, role: 'operator', audit: `update.${action}`, responses: { 200: 'The rollout now', 409: 'RG_ERR_UPDATE_STATE: its state does not allow it' } }, async (_req, res, params) => {
      await updates[action](params.id ?? '')
      ctx.publish('updates')
      sendJson(res, 200, await updates.view(params.id ?? ''))
    })
  }
}
