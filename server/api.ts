import type { IncomingMessage, ServerResponse } from 'node:http'
import Router from 'find-my-way'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError, CheckinFlag } from '../protocol/index.js'
import { deriveAuthKey, hashToken, newSecret, tokenMatches } from '../protocol/auth.js'
import { encodeJoinToken, type RelayAddress } from '../protocol/token.js'
import type { Settings } from '../protocol/messages.js'
import type { Store, EndpointRecord, RelayRecord } from './store.js'
import type { RelayHub } from './hub.js'
import type { TunnelManager } from './tunnels.js'
import type { ArtifactStore } from './artifacts.js'
import type { JobManager } from './jobs.js'
import { deriveTunnelRoot } from '../protocol/tunnel-crypto.js'
import { newId } from './ids.js'
import type { EventTopic } from './events.js'
import { sendJson, sendError, fail, readJson, bodyString, rejectUnknownFields, bearerAuthorizer } from './http-util.js'

export interface ApiOptions {
  store: Store
  hub: RelayHub
  tunnels: TunnelManager
  artifacts: ArtifactStore
  jobs: JobManager
  /** Latest figures a relay reported (cache, queued results). */
  relayStats: (relayId: string) => Record<string, unknown> | undefined
  logger: Logger
  version: string
  adminTokenHash: string
  maxBodyBytes: number
  /** Server URL for join tokens. */
  publicUrl: () => string
  /** Change notifications for the dashboard. */
  events?: { publish: (topic: EventTopic) => void }
}

type Handler = (req: IncomingMessage, res: ServerResponse, params: Record<string, string | undefined>) => Promise<void> | void

const settingRules: Record<keyof Settings, { min: number, max: number }> = {
  checkinIntervalSeconds: { min: 1, max: 300 },
  tunnelIdleTimeoutSeconds: { min: 2, max: 86_400 },
  keepAliveSeconds: { min: 1, max: 3600 },
  snapshotIntervalSeconds: { min: 10, max: 86_400 },
  maxUploadBytes: { min: 1, max: 1024 ** 4 }
}

const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()

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

/** The admin REST API. Returns a request handler for node:http and node:https. */
export function createApi (options: ApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { store, hub, tunnels, artifacts, jobs, logger } = options
  const router = Router({ ignoreTrailingSlash: true, maxParamLength: 200 })

  const relayView = (r: RelayRecord): Record<string, unknown> => {
    const status = hub.relayStatus(r.id)
    return {
      id: r.id,
      name: r.name,
      connected: status.connected,
      agents: status.agents,
      fingerprint: r.fingerprint,
      wsUrl: r.wsUrl,
      wssUrl: r.wssUrl,
      version: r.version,
      revoked: r.revokedAt !== null,
      cache: (options.relayStats(r.id)?.cache as Record<string, unknown> | undefined) ?? null,
      queuedResults: (options.relayStats(r.id)?.queuedResults as number | undefined) ?? null,
      createdAt: iso(r.createdAt),
      lastSeen: status.connected ? iso(Date.now()) : iso(r.lastSeen)
    }
  }

  const endpointView = (e: EndpointRecord, detail = false): Record<string, unknown> => {
    const online = hub.agentsOf(e.id)
    const view: Record<string, unknown> = {
      id: e.id,
      name: e.name,
      edgeId: e.edgeId,
      status: online.length > 0 ? 'online' : 'offline',
      relayId: online.length > 0 ? online[0].relayId : e.relayId,
      lastSeen: online.length > 0 ? iso(Date.now()) : iso(e.lastSeen),
      tunnel: tunnels.info(e.id),
      tunnelTarget: e.tunnelTarget,
      maxAgents: e.maxAgents,
      createdAt: iso(e.createdAt)
    }
    view.agents = store.listEndpointAgents(e.id).map(a => {
      const live = online.find(o => o.edgeId === a.edgeId)
      return { edgeId: a.edgeId, status: live === undefined ? 'offline' : 'online', relayId: live?.relayId ?? null, admittedAt: iso(a.admittedAt), lastSeen: live === undefined ? iso(a.lastSeen) : iso(Date.now()) }
    })
    const refusals = store.listRefusals(e.id)
    view.refusedEdgeIds = refusals.map(r => ({ edgeId: r.edgeId, code: r.code, count: r.count, firstAt: iso(r.firstAt), lastAt: iso(r.lastAt) }))
    if (detail) {
      const snap = store.getSnapshot(e.id)
      const body = snap?.snapshot as Record<string, any> | undefined
      view.snapshot = snap === undefined
        ? null
        : {
            receivedAt: iso(snap.receivedAt),
            reason: snap.reason,
            edgeId: snap.edgeId,
            hostname: body?.hostname ?? null,
            os: body?.os ?? null,
            agentVersion: body?.agentVersion ?? null,
            uptimeSeconds: body?.uptimeSeconds ?? null
          }
    }
    return view
  }

  const joinRelays = (): RelayAddress[] => {
    const out: RelayAddress[] = []
    for (const r of store.listRelays()) {
      if (r.revokedAt !== null) continue
      if (r.wssUrl !== null) out.push({ url: r.wssUrl, fingerprints: r.fingerprint === null ? [] : [r.fingerprint] })
      if (r.wsUrl !== null) out.push({ url: r.wsUrl, fingerprints: [] })
    }
    return out
  }

  const route = (method: Router.HTTPMethod, path: string, auth: boolean, handler: Handler): void => {
    router.on(method, path, (req, res, params) => {
      void (async () => {
        try {
          if (auth) authorize(req)
          await handler(req, res, params)
        } catch (err) {
          const coded = toRelaygateError(err)
          if (coded.status >= 500) logger.error({ err: coded, url: req.url }, 'request failed')
          sendError(res, coded)
        }
      })()
    })
  }

  const authorize = bearerAuthorizer(options.adminTokenHash, tokenMatches)

  route('GET', '/healthz', false, (_req, res) => sendJson(res, 200, { ok: true, version: options.version }))

  route('POST', '/api/relays', true, async (req, res) => {
    const body = await readJson(req, options.maxBodyBytes)
    rejectUnknownFields(body, ['name'])
    const name = bodyString(body, 'name', { required: true, max: 128 })!
    const token = `rgr_${newSecret(32)}`
    const record: RelayRecord = {
      id: newId('r'), name, tokenHash: hashToken(token), createdAt: Date.now(), revokedAt: null,
      fingerprint: null, wsUrl: null, wssUrl: null, version: null, lastSeen: null
    }
    store.createRelay(record)
    logger.info({ relayId: record.id, name }, 'relay created')
    options.events?.publish('relays')
    sendJson(res, 201, { id: record.id, name, token })
  })

  route('GET', '/api/relays', true, (_req, res) => sendJson(res, 200, store.listRelays().map(relayView)))

  route('GET', '/api/relays/:id', true, (_req, res, params) => {
    const r = store.getRelay(params.id ?? '')
    if (r === undefined) fail('RG_ERR_NOT_FOUND', `no relay ${params.id}`)
    sendJson(res, 200, relayView(r))
  })

  route('DELETE', '/api/relays/:id', true, (_req, res, params) => {
    const id = params.id ?? ''
    const r = store.getRelay(id)
    if (r === undefined) fail('RG_ERR_NOT_FOUND', `no relay ${id}`)
    store.revokeRelay(id, Date.now())
    hub.disconnectRelay(id, new RelaygateError('RG_ERR_RELAY_REVOKED', 'relay token revoked'))
    logger.info({ relayId: id }, 'relay revoked')
    options.events?.publish('relays')
    res.writeHead(204).end()
  })

  route('POST', '/api/endpoints', true, async (req, res) => {
    const body = await readJson(req, options.maxBodyBytes)
    rejectUnknownFields(body, ['name', 'tunnelTarget', 'maxAgents'])
    const name = bodyString(body, 'name', { required: true, max: 128 })!
    const target = bodyString(body, 'tunnelTarget', { max: 1024 })
    const tunnelTarget = target === undefined ? null : verifyTunnelTarget(target)
    const maxAgents = body.maxAgents ?? 1
    if (typeof maxAgents !== 'number' || !Number.isInteger(maxAgents) || maxAgents < 1 || maxAgents > 64) {
      fail('RG_ERR_BAD_REQUEST', 'field "maxAgents" must be an integer from 1 to 64 (more than 1 makes a cluster endpoint)')
    }
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
      maxAgents
    }
    store.createEndpoint(record)
    const relays = joinRelays()
    const joinToken = encodeJoinToken({ serverUrl: options.publicUrl(), relays, endpointId: record.id, secret })
    const command = `relaygate agent --join-token ${joinToken}${tunnelTarget === null ? '' : ` --tunnel-target ${tunnelTarget}`}`
    logger.info({ endpointId: record.id, name }, 'endpoint created')
    options.events?.publish('endpoints')
    const out: Record<string, unknown> = { ...endpointView(record), joinToken, command }
    if (relays.length === 0) out.warning = 'no relay has linked to the server yet: the join token names no relay; start a relay first or pass --relay to the agent'
    sendJson(res, 201, out)
  })

  // Optional ?q= (substring of name, id or edge id), &offset=, &limit=: one page, and x-total-count for the pager.
  route('GET', '/api/endpoints', true, (req, res) => {
    const query = new URL(req.url ?? '/', 'http://x').searchParams
    const count = (name: string, fallback: number): number => {
      const raw = query.get(name)
      if (raw === null || raw === '') return fallback
      const n = Number(raw)
      if (!Number.isInteger(n) || n < 0) fail('RG_ERR_BAD_REQUEST', `${name} must be a whole number >= 0`)
      return n
    }
    const q = (query.get('q') ?? '').trim().toLowerCase()
    const offset = count('offset', 0)
    const limit = count('limit', Number.MAX_SAFE_INTEGER)
    const all = store.listEndpoints()
    const matching = q === '' ? all : all.filter(e => e.name.toLowerCase().includes(q) || e.id.toLowerCase().includes(q) || (e.edgeId ?? '').toLowerCase().includes(q))
    res.setHeader('x-total-count', String(matching.length))
    sendJson(res, 200, matching.slice(offset, offset + limit).map(e => endpointView(e)))
  })

  route('GET', '/api/endpoints/:id', true, (_req, res, params) => {
    const e = store.getEndpoint(params.id ?? '')
    if (e === undefined) fail('RG_ERR_NOT_FOUND', `no endpoint ${params.id}`)
    sendJson(res, 200, endpointView(e, true))
  })

  route('DELETE', '/api/endpoints/:id', true, (_req, res, params) => {
    const id = params.id ?? ''
    if (!store.deleteEndpoint(id)) fail('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
    tunnels.close(id, 'endpoint deleted')
    hub.kickEndpoint(id, 'RG_ERR_ENDPOINT_DELETED', 'endpoint deleted by the admin')
    logger.info({ endpointId: id }, 'endpoint deleted')
    options.events?.publish('endpoints')
    res.writeHead(204).end()
  })

  const endpointOr404 = (id: string | undefined): EndpointRecord => {
    const e = store.getEndpoint(id ?? '')
    if (e === undefined) fail('RG_ERR_NOT_FOUND', `no endpoint ${id}`)
    return e
  }

  route('POST', '/api/endpoints/:id/tunnel', true, async (req, res, params) => {
    const e = endpointOr404(params.id)
    const wait = new URL(req.url ?? '/', 'http://x').searchParams.get('wait')
    tunnels.request(e.id)
    if (wait === null) {
      sendJson(res, 202, tunnels.info(e.id))
      return
    }
    const seconds = Number(wait)
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 300) fail('RG_ERR_BAD_REQUEST', 'wait must be a number of seconds from 0 to 300')
    await tunnels.ensureOpen(e.id, seconds * 1000)
    sendJson(res, 200, tunnels.info(e.id))
  })

  route('DELETE', '/api/endpoints/:id/tunnel', true, (_req, res, params) => {
    const e = endpointOr404(params.id)
    tunnels.close(e.id)
    res.writeHead(204).end()
  })

  route('GET', '/api/endpoints/:id/snapshot', true, (_req, res, params) => {
    const e = endpointOr404(params.id)
    const snap = store.getSnapshot(e.id)
    if (snap === undefined) fail('RG_ERR_NOT_FOUND', `no snapshot from ${e.id} yet`)
    sendJson(res, 200, { endpointId: e.id, edgeId: snap.edgeId, receivedAt: iso(snap.receivedAt), reason: snap.reason, snapshot: snap.snapshot })
  })

  route('DELETE', '/api/endpoints/:id/agents/:edgeId', true, (_req, res, params) => {
    const e = endpointOr404(params.id)
    if (!store.removeEndpointAgent(e.id, params.edgeId ?? '')) fail('RG_ERR_NOT_FOUND', `edge id ${params.edgeId} is not admitted for ${e.id}`)
    logger.info({ endpointId: e.id, edgeId: params.edgeId }, 'agent place freed')
    res.writeHead(204).end()
  })

  const artifactView = (a: { name: string, sha256: string, size: number, createdAt: number }): Record<string, unknown> =>
    ({ name: a.name, sha256: a.sha256, size: a.size, createdAt: iso(a.createdAt) })

  route('PUT', '/api/artifacts/:name', true, async (req, res, params) => {
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length'])
    const record = await artifacts.upload(params.name ?? '', req, declared, store.getSettings().maxUploadBytes)
    options.events?.publish('artifacts')
    sendJson(res, 201, artifactView(record))
  })

  route('GET', '/api/artifacts', true, (_req, res) => sendJson(res, 200, store.listArtifacts().map(artifactView)))

  route('GET', '/api/artifacts/:name', true, (_req, res, params) => {
    const a = store.getArtifact(params.name ?? '')
    if (a === undefined) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    sendJson(res, 200, artifactView(a))
  })

  route('DELETE', '/api/artifacts/:name', true, (_req, res, params) => {
    if (!artifacts.delete(params.name ?? '')) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    options.events?.publish('artifacts')
    res.writeHead(204).end()
  })

  route('POST', '/api/artifacts/:name/prestage', true, async (req, res, params) => {
    const a = store.getArtifact(params.name ?? '')
    if (a === undefined) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    const body = await readJson(req, options.maxBodyBytes)
    rejectUnknownFields(body, ['relays'])
    const relays = body.relays
    if (relays !== undefined && (!Array.isArray(relays) || relays.some(r => typeof r !== 'string'))) fail('RG_ERR_BAD_REQUEST', 'field "relays" must be a list of relay ids')
    const targets = (relays as string[] | undefined) ?? [undefined]
    let sent = 0
    for (const relayId of targets) sent += hub.sendToRelays({ t: 'prestage', sha256: a.sha256 }, relayId)
    sendJson(res, 202, { name: a.name, sha256: a.sha256, relays: sent })
  })

  route('POST', '/api/jobs', true, async (req, res) => {
    const body = await readJson(req, options.maxBodyBytes)
    rejectUnknownFields(body, ['artifact', 'endpoints', 'path', 'run'])
    const artifact = bodyString(body, 'artifact', { required: true, max: 128 })!
    const endpoints = body.endpoints
    if (!Array.isArray(endpoints) || endpoints.length === 0 || endpoints.length > 10_000 || endpoints.some(e => typeof e !== 'string')) {
      fail('RG_ERR_BAD_REQUEST', 'field "endpoints" must be a non-empty list of endpoint ids')
    }
    const path = bodyString(body, 'path', { max: 512 })
    const run = body.run
    if (run !== undefined && (!Array.isArray(run) || run.length === 0 || run.length > 64 || run.some(a => typeof a !== 'string' || a.length > 4096))) {
      fail('RG_ERR_BAD_REQUEST', 'field "run" must be an argv list of strings, e.g. ["sh", "install.sh"]')
    }
    const job = jobs.create({ artifact, endpoints: endpoints as string[], path, run: run as string[] | undefined })
    sendJson(res, 201, { id: job.id })
  })

  route('GET', '/api/jobs', true, (_req, res) => sendJson(res, 200, jobs.list(100)))

  route('GET', '/api/jobs/:id', true, (_req, res, params) => {
    const view = jobs.view(params.id ?? '')
    if (view === undefined) fail('RG_ERR_NOT_FOUND', `no job ${params.id}`)
    sendJson(res, 200, view)
  })

  route('GET', '/api/settings', true, (_req, res) => sendJson(res, 200, store.getSettings()))

  route('PATCH', '/api/settings', true, async (req, res) => {
    const body = await readJson(req, options.maxBodyBytes)
    const patch: Partial<Settings> = {}
    for (const [key, value] of Object.entries(body)) {
      const rule = settingRules[key as keyof Settings]
      if (rule === undefined) fail('RG_ERR_BAD_REQUEST', `unknown setting "${key}" (known: ${Object.keys(settingRules).join(', ')})`)
      if (typeof value !== 'number' || !Number.isInteger(value) || value < rule.min || value > rule.max) {
        fail('RG_ERR_BAD_REQUEST', `setting "${key}" must be an integer from ${rule.min} to ${rule.max}`)
      }
      patch[key as keyof Settings] = value
    }
    const settings = store.updateSettings(patch)
    hub.settingsChanged(settings)
    logger.info({ settings }, 'settings changed')
    options.events?.publish('settings')
    sendJson(res, 200, settings)
  })

  const methods: Router.HTTPMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    // Unauthenticated callers learn nothing about which /api routes exist:
    // every /api request is checked before routing (404 and 405 need the token too).
    if (path === '/api' || path.startsWith('/api/')) {
      try {
        authorize(req)
      } catch (err) {
        sendError(res, toRelaygateError(err))
        return
      }
    }
    const found = router.find(req.method as Router.HTTPMethod, path)
    if (found !== null) {
      router.lookup(req, res)
      return
    }
    const other = methods.some(m => router.find(m, path) !== null)
    sendError(res, other
      ? new RelaygateError('RG_ERR_METHOD_NOT_ALLOWED', `${req.method ?? '?'} is not allowed on ${path}`)
      : new RelaygateError('RG_ERR_NOT_FOUND', `no route ${req.method ?? '?'} ${path}`))
  }
}
