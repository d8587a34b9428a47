import { RelaygateError } from '../../protocol/index.js'
import { hashToken, newSecret } from '../../protocol/auth.js'
import type { RelayRecord } from '../store.js'
import type { RelayLocation } from '../cluster-store.js'
import type { CacheStatsMessage } from '../../protocol/messages.js'
import { newId } from '../ids.js'
import { sendJson, fail } from '../http-util.js'
import { Body, Field } from './route.js'
import { iso, type ApiContext, type RelayFigures } from './context.js'

export interface RelayView {
  id: string
  name: string
  connected: boolean
  agents: number
  fingerprint: string | null
  wsUrl: string | null
  wssUrl: string | null
  version: string | null
  revoked: boolean
  cache: CacheStatsMessage | null
  queuedResults: number | null
  /** Tampering caught end to end in messages that came through this relay (GET /api/security-events?relay=). */
  securityEvents: number
  createdAt: string | null
  lastSeen: string | null
  /** Several replicas: the one holding the relay's link (null: not linked). */
  replicaId?: string | null
}

export async function relayView (ctx: ApiContext, r: RelayRecord, elsewhere?: Map<string, RelayLocation>): Promise<RelayView> {
  const here = ctx.hub.relayStatus(r.id)
  // Several replicas: a relay linked to another one is connected too (with the agents it has there).
  const there = here.connected ? undefined : elsewhere?.get(r.id)
  const status = there === undefined ? here : { connected: true, agents: there.agents }
  // Figures from the replica that holds the link (ours may be from before the relay moved).
  const figures = there?.figures !== undefined && there.figures !== null ? there.figures as unknown as RelayFigures : ctx.relayStats(r.id)
  return {
    ...(ctx.cluster === null ? {} : { replicaId: here.connected ? ctx.cluster.replicaId : there?.replicaId ?? null }),
    id: r.id,
    name: r.name,
    connected: status.connected,
    agents: status.agents,
    fingerprint: r.fingerprint,
    wsUrl: r.wsUrl,
    wssUrl: r.wssUrl,
    version: r.version,
    revoked: r.revokedAt !== null,
    cache: figures?.cache ?? null,
    queuedResults: figures?.queuedResults ?? null,
    securityEvents: await ctx.security.countFor(r.id),
    createdAt: iso(r.createdAt),
    lastSeen: status.connected ? iso(Date.now()) : iso(r.lastSeen)
  }
}

/** /api/relays: create (the token is shown once), list, show, revoke. */
export function relayRoutes (ctx: ApiContext): void {
  const { store, hub, logger, route } = ctx
  route('POST', '/api/relays', {
    summary: 'Create a relay: its token (shown once) and the line that installs it',
    role: 'admin',
    audit: 'relay.create',
    body: Body({ name: Field.name('relay') }),
    responses: { 201: '{id, name, token, installCommand, installCommands}' }
  }, async (_req, res, _params, { body, note }) => {
    const name = body.name
    const token = `rgr_${newSecret(32)}`
    const record: RelayRecord = {
      id: newId('r'), name, tokenHash: hashToken(token), createdAt: Date.now(), revokedAt: null,
      fingerprint: null, wsUrl: null, wssUrl: null, version: null, lastSeen: null
    }
    await store.createRelay(record)
    note.target = record.id
    note.detail = { name }
    logger.info({ relayId: record.id, name }, 'relay created')
    ctx.publish('relays')
    const installArgs = ['--server', ctx.publicUrl(), '--token', token]
    const installCommand = ctx.installers?.relayCommand(ctx.publicUrl(), installArgs) ?? null
    const installCommands = ctx.installers?.commandsByKind('relay', ctx.publicUrl(), installArgs) ?? {}
    sendJson(res, 201, { id: record.id, name, token, installCommand, installCommands })
  })

  route('GET', '/api/relays', { summary: 'List relays: linked or not, agents, cache figures', role: 'viewer', responses: { 200: 'A list of relays' } }, async (_req, res) => {
    const elsewhere = await ctx.cluster?.remoteRelays()
    sendJson(res, 200, await Promise.all((await store.listRelays()).map(async r => await relayView(ctx, r, elsewhere))))
  })

  route('GET', '/api/relays/:id', { summary: 'One relay', role: 'viewer', responses: { 200: 'The relay' } }, async (_req, res, params) => {
    const r = await store.getRelay(params.id ?? '')
    if (r === undefined) fail('RG_ERR_NOT_FOUND', `no relay ${params.id}`)
    sendJson(res, 200, await relayView(ctx, r, await ctx.cluster?.remoteRelays()))
  })

  route('DELETE', '/api/relays/:id', { summary: 'Revoke a relay\'s token: its link is closed and refused from now on', role: 'admin', audit: 'relay.revoke', responses: { 204: 'Revoked' } }, async (_req, res, params) => {
    const id = params.id ?? ''
    const r = await store.getRelay(id)
    if (r === undefined) fail('RG_ERR_NOT_FOUND', `no relay ${id}`)
    await store.revokeRelay(id, Date.now())
    hub.disconnectRelay(id, new RelaygateError('RG_ERR_RELAY_REVOKED', 'relay token revoked'))
    ctx.cluster?.announce({ kind: 'relay-revoked', relayId: id })
    logger.info({ relayId: id }, 'relay revoked')
    ctx.publish('relays')
    res.writeHead(204).end()
  })
}
