import { deriveAuthKey, newSecret } from '../../protocol/auth.js'
import { encodeJoinToken, type RelayAddress } from '../../protocol/token.js'
import { deriveTunnelRoot } from '../../protocol/tunnel-crypto.js'
import type { EndpointRecord, EndpointAgentRecord, RefusalRecord } from '../store.js'
import type { TunnelInfo } from '../tunnels.js'
import { newId } from '../ids.js'
import { Type } from '@sinclair/typebox'
import { sendJson, fail, TAG } from '../http-util.js'
import { isUniqueViolation } from '../sql-store.js'
import { Body, Field, QueryField } from './route.js'
import { iso, type ApiContext } from './context.js'

/** Accepted tunnel targets: http(s)://host:port, tcp://host:port, unix:/path. */
export function verifyTunnelTarget (value: string): string {
  if (value.startsWith('unix:')) {
    if (value.length < 7 || !value.startsWith('unix:/')) fail('RG_ERR_BAD_REQUEST', 'field "tunnelTarget": unix targets look like unix:/path/to.sock')
    return value
  }
  let url: URL
  try {
    url = new URL(value)
  } catch {
    fail('RG_ERR_BAD_REQUEST', 'field "tunnelTarget" must be http://host:port, https://host:port, tcp://host:port or unix:/path')
  }
  if (!['http:', 'https:', 'tcp:'].includes(url.protocol) || url.hostname === '') {
    fail('RG_ERR_BAD_REQUEST', 'field "tunnelTarget" must be http://host:port, https://host:port, tcp://host:port or unix:/path')
  }
  return value
}

export interface EndpointAgentView { edgeId: string, status: 'online' | 'offline', relayId: string | null, admittedAt: string | null, lastSeen: string | null }
export interface RefusalView { edgeId: string, code: string, count: number, firstAt: string | null, lastAt: string | null }
export interface SnapshotSummary { receivedAt: string | null, reason: string, edgeId: string, hostname: unknown, os: unknown, agentVersion: unknown, uptimeSeconds: unknown }
export interface EndpointView {
  id: string
  name: string
  edgeId: string | null
  status: 'online' | 'offline'
  relayId: string | null
  lastSeen: string | null
  tunnel: TunnelInfo
  tunnelTarget: string | null
  maxAgents: number
  createdAt: string | null
  agents: EndpointAgentView[]
  refusedEdgeIds: RefusalView[]
  /** From the latest snapshot: the version the endpoint's agent runs (null before its first snapshot). */
  agentVersion: string | null
  /** From the latest snapshot: whether its agent runs job commands (--allow-exec); null before its first snapshot. */
  allowsCommands: boolean | null
  tags: string[]
  snapshot?: SnapshotSummary | null
}

/** The views of endpoints: their agents and refusals read for all of them at once. */
export async function endpointViews (ctx: ApiContext, records: EndpointRecord[], detail = false): Promise<EndpointView[]> {
  const ids = records.map(e => e.id)
  const agents = groupBy(await ctx.store.listEndpointAgents(ids), a => a.endpointId)
  const refusals = groupBy(await ctx.store.listRefusals(ids), r => r.endpointId)
  const facts = await ctx.store.listAgentFacts(ids)
  // Several replicas: agents online and tunnels held elsewhere (one query each for the page).
  const elsewhere = ids.filter(id => ctx.hub.agentsOf(id).length === 0)
  const remote = ctx.cluster === null ? null : { presence: await ctx.cluster.remotePresence(elsewhere), tunnels: await ctx.cluster.remoteTunnels(elsewhere) }
  const views: EndpointView[] = []
  for (const e of records) {
    const online: Array<{ edgeId: string, relayId: string }> = ctx.hub.agentsOf(e.id)
    const view = endpointView(ctx, e, agents.get(e.id) ?? [], refusals.get(e.id) ?? [], online.length > 0 ? online : remote?.presence.get(e.id) ?? [])
    view.agentVersion = facts.get(e.id)?.version ?? null
    view.allowsCommands = facts.get(e.id)?.allowExec ?? null
    const tunnel = remote?.tunnels.get(e.id)
    if (tunnel !== undefined && view.tunnel.state === 'closed') view.tunnel = tunnel
    if (detail) view.snapshot = await snapshotSummary(ctx, e.id)
    views.push(view)
  }
  return views
}

function groupBy<T> (items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>()
  for (const item of items) {
    const k = key(item)
    const group = groups.get(k)
    if (group === undefined) groups.set(k, [item])
    else group.push(item)
  }
  return groups
}

function endpointView (ctx: ApiContext, e: EndpointRecord, agents: EndpointAgentRecord[], refusals: RefusalRecord[], online: Array<{ edgeId: string, relayId: string }>): EndpointView {
  const { tunnels } = ctx
  return {
    id: e.id,
    name: e.name,
    edgeId: e.edgeId,
    status: online.length > 0 ? 'online' : 'offline',
    relayId: online.length > 0 ? online[0].relayId : e.relayId,
    lastSeen: online.length > 0 ? iso(Date.now()) : iso(e.lastSeen),
    tunnel: tunnels.info(e.id),
    tunnelTarget: e.tunnelTarget,
    maxAgents: e.maxAgents,
    createdAt: iso(e.createdAt),
    agents: agents.map(a => {
      const live = online.find(o => o.edgeId === a.edgeId)
      return { edgeId: a.edgeId, status: live === undefined ? 'offline' : 'online', relayId: live?.relayId ?? null, admittedAt: iso(a.admittedAt), lastSeen: live === undefined ? iso(a.lastSeen) : iso(Date.now()) }
    }),
    refusedEdgeIds: refusals.map(r => ({ edgeId: r.edgeId, code: r.code, count: r.count, firstAt: iso(r.firstAt), lastAt: iso(r.lastAt) })),
    agentVersion: null,
    allowsCommands: null,
    tags: e.tags ?? []
  }
}

async function snapshotSummary (ctx: ApiContext, endpointId: string): Promise<SnapshotSummary | null> {
  const snap = await ctx.store.getSnapshot(endpointId)
  if (snap === undefined) return null
  const body = snap.snapshot as Record<string, unknown>
  return {
    receivedAt: iso(snap.receivedAt),
    reason: snap.reason,
    edgeId: snap.edgeId,
    hostname: body.hostname ?? null,
    os: body.os ?? null,
    agentVersion: body.agentVersion ?? null,
    uptimeSeconds: body.uptimeSeconds ?? null
  }
}

/** The relays a join token names: wss with its pinned fingerprint first, then ws. */
async function joinRelays (ctx: ApiContext): Promise<RelayAddress[]> {
  const out: RelayAddress[] = []
  for (const r of await ctx.store.listRelays()) {
    if (r.revokedAt !== null) continue
    if (r.wssUrl !== null) out.push({ url: r.wssUrl, fingerprints: r.fingerprint === null ? [] : [r.fingerprint] })
    if (r.wsUrl !== null) out.push({ url: r.wsUrl, fingerprints: [] })
  }
  return out
}

async function endpointOr404 (ctx: ApiContext, id: string | undefined): Promise<EndpointRecord> {
  const e = await ctx.store.getEndpoint(id ?? '')
  if (e === undefined) fail('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
  return e
}

/** What an agent stopped by a re-issued join token is told. */
export const REKEYED_MESSAGE = 'this endpoint\'s join token was re-issued: start the agent with the new one (relaygate install agent --join-token …)'

/** An endpoint with its join token, the agent command and the install lines (a new endpoint, a re-issued token). */
async function withJoinToken (ctx: ApiContext, record: EndpointRecord, secret: string): Promise<EndpointView & { joinToken: string, command: string, installCommand: string | null, installCommands: Record<string, string>, warning?: string }> {
  const relays = await joinRelays(ctx)
  const joinToken = encodeJoinToken({ serverUrl: ctx.publicUrl(), relays, endpointId: record.id, secret })
  const tunnelTarget = record.tunnelTarget
  const command = `relaygate agent --join-token ${joinToken}${tunnelTarget === null ? '' : ` --tunnel-target ${tunnelTarget}`}`
  // The one line that installs the agent from its site's relay (plain ws: the sha256 in the line is the check).
  const fromRelay = relays.find(r => r.url.startsWith('ws:'))?.url
  const installArgs = ['--join-token', joinToken, ...(tunnelTarget === null ? [] : ['--tunnel-target', tunnelTarget])]
  const installCommand = ctx.installers?.agentCommand(fromRelay, installArgs) ?? null
  const installCommands = ctx.installers?.commandsByKind('agent', fromRelay, installArgs) ?? {}
  const out: EndpointView & { joinToken: string, command: string, installCommand: string | null, installCommands: Record<string, string>, warning?: string } = { ...(await endpointViews(ctx, [record]))[0], joinToken, command, installCommand, installCommands }
  if (relays.length === 0) out.warning = 'no relay has linked to the server yet: the join token names no relay; start a relay first or pass --relay to the agent'
  return out
}

/** Runs a write that may hit the unique endpoint name: RG_ERR_NAME_TAKEN saying which. */
async function uniqueName<T> (name: string | undefined, write: () => Promise<T>): Promise<T> {
  try {
    return await write()
  } catch (err) {
    if (isUniqueViolation(err)) fail('RG_ERR_NAME_TAKEN', `an endpoint named "${name ?? ''}" exists: endpoint names are unique (choose another, or rename that one)`)
    throw err
  }
}

const TunnelTarget = Type.String({ minLength: 1, maxLength: 1024, description: 'http(s)://host:port, tcp://host:port or unix:/path: what the tunnel reaches at the endpoint' })

/** /api/endpoints: create (with the join token), list and search, show, rename and tag, delete, re-issue the join token, free an agent's place. */
export function endpointRoutes (ctx: ApiContext): void {
  const { store, hub, tunnels, logger, route } = ctx
  route('POST', '/api/endpoints', {
    summary: 'Create an endpoint: its join token (shown once), the agent command and install lines',
    role: 'operator',
    audit: 'endpoint.create',
    body: Body({
      name: Field.name('endpoint'),
      tunnelTarget: Type.Optional(TunnelTarget),
      maxAgents: Type.Optional(Field.count(1, 64, 'agents that may share it: more than 1 makes a cluster endpoint')),
      tags: Type.Optional(Field.tags('labels to target groups by'))
    }),
    responses: { 201: 'The endpoint with joinToken, command, installCommand(s) and a warning when no relay is linked yet', 409: 'RG_ERR_NAME_TAKEN' }
  }, async (_req, res, _params, { body, note }) => {
    const name = body.name
    const tags = [...new Set(body.tags ?? [])]
    const tunnelTarget = body.tunnelTarget === undefined ? null : verifyTunnelTarget(body.tunnelTarget)
    const maxAgents = body.maxAgents ?? 1
    const secret = newSecret(32)
    const record: EndpointRecord = {
      id: newId('e'),
      name,
      tunnelTarget,
      authKey: deriveAuthKey(secret),
      tunnelKey: deriveTunnelRoot(secret),
      edgeId: null,
      createdAt: Date.now(),
      lastSeen: null,
      relayId: null,
      maxAgents,
      tags
    }
    await uniqueName(name, async () => await store.createEndpoint(record))
    note.target = record.id
    note.detail = { name, ...(tags.length === 0 ? {} : { tags }) }
    logger.info({ endpointId: record.id, name }, 'endpoint created')
    ctx.publish('endpoints')
    sendJson(res, 201, await withJoinToken(ctx, record, secret))
  })

  // Optional ?q= (substring of name, id or edge id), &offset=, &limit=: one page, and x-total-count for the pager.
  route('GET', '/api/endpoints', {
    summary: 'List and search endpoints (one page; x-total-count has the total)',
    role: 'viewer',
    query: {
      q: Type.String({ maxLength: 200, description: 'at most 200 characters: a substring of the name, id or edge id' }),
      tag: QueryField.tag,
      status: Type.Union([Type.Literal('online'), Type.Literal('offline')], { description: 'only online or offline ones' }),
      offset: Type.String({ pattern: '^[0-9]{0,15}$', description: 'a whole number: skip this many' }),
      limit: Type.String({ pattern: '^[0-9]{0,15}$', description: 'a whole number: at most this many' })
    },
    responses: { 200: 'A list of endpoints' }
  }, async (_req, res, _params, { query }) => {
    // The query's schemas checked the shapes (digits, online|offline, at most 200 characters).
    const count = (name: string, fallback: number): number => {
      const raw = query.get(name)
      return raw === null || raw === '' ? fallback : Number(raw)
    }
    const q = (query.get('q') ?? '').trim()
    // ?tag=a&tag=b (or tag=a,b): endpoints carrying every one of them.
    const tags = query.getAll('tag').flatMap(t => t.split(',')).map(t => t.trim()).filter(t => t !== '')
    for (const tag of tags) if (!TAG.test(tag)) fail('RG_ERR_BAD_REQUEST', `tag "${tag.slice(0, 70)}": 1-64 letters, digits or . _ : -`)
    const status = query.get('status')
    const offset = count('offset', 0)
    const limit = count('limit', Number.MAX_SAFE_INTEGER)
    if (status === null) {
      const found = await store.findEndpoints({ q, offset, limit, tags })
      res.setHeader('x-total-count', String(found.total))
      return sendJson(res, 200, await endpointViews(ctx, found.page))
    }
    // Presence is live state, not a column: filter every match, then page.
    const all = await endpointViews(ctx, (await store.findEndpoints({ q, offset: 0, limit: Number.MAX_SAFE_INTEGER, tags })).page)
    const matching = all.filter(v => v.status === status)
    res.setHeader('x-total-count', String(matching.length))
    sendJson(res, 200, matching.slice(offset, offset + limit))
  })

  route('GET', '/api/endpoints/:id', { summary: 'One endpoint with its agents, refusals and latest snapshot summary', role: 'viewer', responses: { 200: 'The endpoint' } }, async (_req, res, params) => {
    const e = await store.getEndpoint(params.id ?? '')
    if (e === undefined) fail('RG_ERR_NOT_FOUND', `no endpoint ${params.id}`)
    sendJson(res, 200, (await endpointViews(ctx, [e], true))[0])
  })

  route('DELETE', '/api/endpoints/:id', { summary: 'Delete an endpoint: its agents are stopped and refused', role: 'operator', audit: 'endpoint.delete', responses: { 204: 'Deleted' } }, async (_req, res, params) => {
    const id = params.id ?? ''
    if (!await store.deleteEndpoint(id)) fail('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
    tunnels.closeTunnel(id, 'endpoint deleted')
    hub.kickEndpoint(id, 'RG_ERR_ENDPOINT_DELETED', 'endpoint deleted by the admin')
    ctx.cluster?.announce({ kind: 'endpoint-deleted', endpointId: id })
    logger.info({ endpointId: id }, 'endpoint deleted')
    ctx.publish('endpoints')
    res.writeHead(204).end()
  })

  route('GET', '/api/endpoints/:id/snapshot', { summary: 'The endpoint\'s latest snapshot, as its agent sent it', role: 'viewer', responses: { 200: 'The snapshot' } }, async (_req, res, params) => {
    const e = await endpointOr404(ctx, params.id)
    const snap = await store.getSnapshot(e.id)
    if (snap === undefined) fail('RG_ERR_NOT_FOUND', `no snapshot from ${e.id} yet`)
    sendJson(res, 200, { endpointId: e.id, edgeId: snap.edgeId, receivedAt: iso(snap.receivedAt), reason: snap.reason, snapshot: snap.snapshot })
  })

  route('DELETE', '/api/endpoints/:id/agents/:edgeId', { summary: 'Free an agent\'s place (another machine may join with the token)', role: 'operator', audit: 'endpoint.free-agent', responses: { 204: 'Freed' } }, async (_req, res, params, { note }) => {
    const e = await endpointOr404(ctx, params.id)
    note.detail = { edgeId: params.edgeId }
    if (!await store.removeEndpointAgent(e.id, params.edgeId ?? '')) fail('RG_ERR_NOT_FOUND', `edge id ${params.edgeId} is not admitted for ${e.id}`)
    logger.info({ endpointId: e.id, edgeId: params.edgeId }, 'agent place freed')
    res.writeHead(204).end()
  })
}

/** Changes to an endpoint: rename and tags (PATCH), a re-issued join token. */
export function endpointEditRoutes (ctx: ApiContext): void {
  const { store, hub, tunnels, logger, route } = ctx
  // Rename, or replace the tags.
  route('PATCH', '/api/endpoints/:id', {
    summary: 'Rename an endpoint, or replace its tags',
    role: 'operator',
    audit: 'endpoint.change',
    body: Body({ name: Type.Optional(Field.name('endpoint')), tags: Type.Optional(Field.tags('the endpoint\'s tags from now on')) }),
    responses: { 200: 'The endpoint now', 409: 'RG_ERR_NAME_TAKEN' }
  }, async (_req, res, params, { body, note }) => {
    const { name } = body
    const tags = body.tags === undefined ? undefined : [...new Set(body.tags)]
    note.detail = { ...(name === undefined ? {} : { name }), ...(tags === undefined ? {} : { tags }) }
    if (!await uniqueName(name, async () => await store.updateEndpoint(params.id ?? '', { name, tags }))) fail('RG_ERR_NOT_FOUND', `no endpoint ${params.id}`)
    logger.info({ endpointId: params.id, name, tags }, 'endpoint changed')
    ctx.publish('endpoints')
    sendJson(res, 200, (await endpointViews(ctx, [await endpointOr404(ctx, params.id)], true))[0])
  })

  // A new join token (a leaked one, a machine replaced): the old one stops working at once.
  route('POST', '/api/endpoints/:id/join-token', {
    summary: 'Re-issue the join token: the old one stops working at once (its agents are stopped and refused)',
    role: 'operator',
    audit: 'endpoint.reissue-token',
    responses: { 201: 'The endpoint with its new joinToken, command and install lines' }
  }, async (_req, res, params) => {
    const e = await endpointOr404(ctx, params.id)
    const secret = newSecret(32)
    // Agents online with the old token are stopped (an order they can verify), here and at other replicas.
    tunnels.closeTunnel(e.id, 'join token re-issued')
    hub.kickEndpoint(e.id, 'RG_ERR_AUTH', REKEYED_MESSAGE)
    await store.updateEndpoint(e.id, { authKey: deriveAuthKey(secret), tunnelKey: deriveTunnelRoot(secret) })
    ctx.cluster?.announce({ kind: 'endpoint-rekeyed', endpointId: e.id })
    logger.info({ endpointId: e.id }, 'join token re-issued')
    ctx.publish('endpoints')
    const out = await withJoinToken(ctx, e, secret)
    out.warning = [out.warning, 'the old join token no longer works: agents that use it were stopped and are refused; install or start them with this one'].filter(Boolean).join('; ')
    sendJson(res, 201, out)
  })
}
