import http from 'node:http'
import https from 'node:https'
import { mkdirSync, existsSync, readFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/errors.js'
import { hashToken, newSecret, redact } from '../protocol/auth.js'
import { recordCipherLog } from '../protocol/record-crypto.js'
import { writeFileAtomic, writeReadyFile } from '../common/files.js'
import { loadOrCreateCert } from '../common/tls.js'
import { VERSION } from '../common/version.js'
import { Lifecycle } from '../common/lifecycle.js'
import { verifyServerConfig, readClusterSecret, type ServerConfig } from './config.js'
import { openSqliteStore } from './sqlite-store.js'
import { Installers } from './installers.js'
import { openPgStore, type PgStore } from './pg-store.js'
import { Cluster } from './cluster.js'
import { createForwarder, type Forwarder } from './forward.js'
import { clusterBlobPeers } from './blob-peers.js'
import type { Store, SettingsRef, SnapshotRecord } from './store.js'
import { snapshotWriter, type WriteBehind } from './write-behind.js'
import { RelayHub } from './hub.js'
import { createApi, type RelayFigures } from './api/index.js'
import { TunnelManager } from './tunnels.js'
import { ArtifactStore } from './artifacts.js'
import { JobManager } from './jobs.js'
import { UpdateManager } from './updates.js'
import { REKEYED_MESSAGE } from './api/endpoints.js'
import { TAG } from './http-util.js'
import { createTunnelProxy } from './proxy.js'
import { EventHub, type EventTopic } from './events.js'
import { createStaticUi } from './static.js'
import { sendError } from './http-util.js'
import { AccessControl, AuditLog, type Authorize } from './access.js'
import { createServerMetrics } from './metrics.js'
import { SecurityLog } from './security.js'

/** A started server: its parts (as built by createServerApp) and where it listens. */
export interface RelaygateServer extends Pick<ServerApp, 'config' | 'store' | 'hub' | 'tunnels' | 'artifacts' | 'jobs' | 'events' | 'security' | 'cluster' | 'adminTokenFile'> {
  readonly httpUrl: string
  readonly httpsUrl: string | null
  /** The HTTPS certificate's sha256, for relays that pin the server. */
  readonly fingerprint: string | null
  close: () => Promise<void>
  destroy: () => Promise<void>
}

function listen (server: http.Server | https.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const taken = err.code === 'EADDRINUSE'
      reject(new RelaygateError(taken ? 'RG_ERR_PORT_IN_USE' : 'RG_ERR_CONFIG', `cannot listen on ${host}:${port}: ${taken ? 'another process listens on it' : err.code ?? err.message}`))
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

function urlHost (host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1'
  return host.includes(':') ? `[${host}]` : host
}

/** Reads the admin token file, or creates it (0600) on first start (again when `fresh`: the one in it was revoked). */
function loadAdminToken (dataDir: string, override: string | undefined, logger: Logger, fresh = false): { token: string, file: string, replaced?: string } {
  const file = join(dataDir, 'admin-token')
  if (override !== undefined) {
    const before = existsSync(file) ? readFileSync(file, 'utf8').trim() : ''
    writeFileAtomic(file, override + '\n', 0o600)
    return { token: override, file, ...(before !== '' && before !== override ? { replaced: before } : {}) }
  }
  if (existsSync(file) && !fresh) {
    chmodSync(file, 0o600)
    const token = readFileSync(file, 'utf8').trim()
    if (token.length >= 16) return { token, file }
    logger.warn({ file }, 'admin token file is too short; generating a new token')
  }
  const token = `rga_${newSecret(32)}`
  writeFileAtomic(file, token + '\n', 0o600)
  logger.info({ file, token: redact(token) }, 'created the admin token')
  return { token, file }
}

/**
 * The first-start admin token, registered as the API token "admin" (its
 * hash; several replicas' tokens get distinct names). One revoked through
 * the API is replaced by a new one in the file (--admin-token brings the
 * given one back).
 */
async function adminToken (store: Store, config: ServerConfig, logger: Logger): Promise<{ token: string, file: string }> {
  let admin = loadAdminToken(config.dataDir, config.adminToken, logger)
  if (admin.replaced !== undefined) {
    // The token the override replaced in the file stops working.
    const old = (await store.access.listTokens()).find(t => t.builtin && t.revokedAt === null && t.tokenHash === hashToken(admin.replaced!))
    if (old !== undefined) await store.access.revokeToken(old.id, Date.now())
  }
  let record = await store.access.ensureBuiltinToken(hashToken(admin.token), ['admin'], Date.now(), config.adminToken !== undefined)
  if (record.revokedAt !== null) {
    logger.warn({ file: admin.file }, 'the admin token in the file was revoked; writing a new one')
    admin = loadAdminToken(config.dataDir, undefined, logger, true)
    record = await store.access.ensureBuiltinToken(hashToken(admin.token), ['admin'], Date.now(), false)
  }
  return admin
}

/** API tokens (the first-start admin token among them) and the audit log, closed with the server. */
async function accessParts (store: Store, config: ServerConfig, life: Lifecycle, logger: Logger): Promise<{ admin: { token: string, file: string }, access: AccessControl, audit: AuditLog, setPublish: (fn: () => void) => void }> {
  const admin = await adminToken(store, config, logger)
  // Named API tokens, shared by every replica through the store.
  const access = new AccessControl(store.access, logger.child({ component: 'access' }))
  await access.reload()
  life.onClose('token last-used times', () => access.close())
  let publish = (): void => {}
  const audit = new AuditLog({ store: store.access, meta: { get: async key => await store.getMeta(key), set: async (key, value) => await store.setMeta(key, value) }, logger: logger.child({ component: 'audit' }), publish: () => publish() })
  // Closed after the parts that record entries (reverse order).
  life.onClose('audit log', () => audit.close())
  await audit.loadRetention()
  return { admin, access, audit, setPublish: fn => { publish = fn } }
}

/** The server without its sockets: state, relay hub, tunnels, jobs, and the request and upgrade handlers. */
export interface ServerApp {
  readonly config: ServerConfig
  readonly store: Store
  readonly hub: RelayHub
  readonly tunnels: TunnelManager
  readonly artifacts: ArtifactStore
  readonly jobs: JobManager
  /** Self-update rollouts (issue 16). */
  readonly updates: UpdateManager
  /** Change notifications for the dashboard (`GET /api/events`): call `events.publish(topic)` after a change. */
  readonly events: EventHub
  /** Tampering caught end to end (forged or replayed orders and reports). */
  readonly security: SecurityLog
  /** This replica among several on one PostgreSQL (null: a server alone). */
  readonly cluster: Cluster | null
  readonly adminTokenFile: string
  /** Close steps, registered as each part was built; listen() adds its servers. */
  readonly life: Lifecycle
  /** The URL join tokens name unless --public-url is set (known once listening). */
  baseUrl: string
  /** Listening servers (added by buildServer); closed after the relay links. */
  readonly servers: Array<http.Server | https.Server>
  handleRequest: (req: http.IncomingMessage, res: http.ServerResponse) => void
  handleUpgrade: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void
}

/**
 * Builds the server's parts and its request handler without opening a port
 * (as fastify separates build from listen): API tests may drive
 * `handleRequest` directly; buildServer() adds the listeners.
 */
export async function createServerApp (input: Partial<ServerConfig>, logger: Logger): Promise<ServerApp> {
  const config = verifyServerConfig(input)
  const clusterSecret = readClusterSecret(config)
  mkdirSync(config.dataDir, { recursive: true })
  const life = new Lifecycle()
  const store = config.databaseUrl === undefined
    ? await openSqliteStore(join(config.dataDir, 'relaygate.db'))
    : await openPgStore({
      url: config.databaseUrl,
      password: config.databasePasswordFile === undefined ? undefined : readFileSync(config.databasePasswordFile, 'utf8').trim(),
      logger: logger.child({ component: 'store' }),
      connectRetryMs: config.databaseRetryMs
    })
  life.onClose('store', () => store.close())
  const cluster = clusterSecret === null ? null : new Cluster({ store: store as PgStore, secret: clusterSecret, version: VERSION, logger: logger.child({ component: 'cluster' }) })
  const { admin, access, audit, setPublish } = await accessParts(store, config, life, logger)
  const authorize = access.authorize
  // Read on every agent and tunnel: kept in memory, replaced by PATCH /api/settings.
  const settings: SettingsRef = { current: await store.getSettings() }

  const security = new SecurityLog(store, logger.child({ component: 'security' }))
  const hub = new RelayHub({
    store, settings, security, logger: logger.child({ component: 'hub' }), version: VERSION, keepAliveMs: config.relayKeepAliveMs, livenessTimeoutMs: config.relayLivenessTimeoutMs,
    ...(cluster === null ? {} : { onLinked: async relayId => await cluster.claimRelay(relayId), onUnlinked: (relayId, fence) => { if (fence !== null) cluster.releaseRelay(relayId, fence) } })
  })
  const jobs = new JobManager({ store, hub, security, logger: logger.child({ component: 'jobs' }), orderAnswerMs: config.jobOrderAnswerMs })
  // Written last of all (reverse order): pending job updates reach the store before it closes.
  life.onClose('job updates', () => jobs.close())
  const updates = new UpdateManager({ store, hub, logger: logger.child({ component: 'updates' }) })
  life.onClose('rollouts', () => updates.close())
  const snapshots = snapshotWriter(store, logger.child({ component: 'snapshots' }))
  life.onClose('snapshots', () => snapshots.close())
  if (cluster !== null) life.onClose('cluster', () => cluster.close())
  const servers: Array<http.Server | https.Server> = []
  life.onClose('listeners', () => {
    for (const s of servers) {
      s.close()
      s.closeAllConnections()
    }
  })
  life.onClose('relay links', graceful => hub.close(graceful))
  const tunnels = new TunnelManager({ store, settings, hub, security, logger: logger.child({ component: 'tunnels' }), adminWindowMs: config.tunnelAdminWindowMs })
  tunnels.onSession(e => audit.tunnelSession(e))
  let forwarder: Forwarder | null = null
  const tunnelProxy = createTunnelProxy({
    tunnels, logger: logger.child({ component: 'proxy' }), openTimeoutMs: config.tunnelOpenTimeoutMs, authorize,
    ...(cluster === null ? {} : {
      // Sent once more through the forwarder: it finds the replica that holds the tunnel now.
      moved: {
        web: (req, res) => { if (forwarder?.web(req, res, () => sendError(res, movedAgain())) !== true) sendError(res, movedAgain()) },
        upgrade: (req, socket, head) => { if (forwarder?.upgrade(req, socket, head, () => socket.destroy()) !== true) socket.destroy() }
      }
    })
  })
  life.onClose('tunnel proxy', () => tunnelProxy.close())
  life.onClose('tunnels', () => tunnels.close())
  const artifacts = new ArtifactStore({ dir: join(config.dataDir, 'artifacts'), store, logger: logger.child({ component: 'artifacts' }) })
  const installers = new Installers({ store, hub, artifacts, logger: logger.child({ component: 'installers' }) })
  const events = new EventHub({ logger: logger.child({ component: 'events' }) })
  life.onClose('events', () => events.close())
  // A change here reaches this replica's dashboards and, in a cluster, every other's.
  const publish = (topic: EventTopic): void => {
    events.publish(topic)
    cluster?.changed(topic)
  }
  setPublish(() => publish('audit'))
  const relayStats = new Map<string, RelayFigures>()
  wireRelayEvents({ store, audit, hub, snapshots, artifacts, tunnels, jobs, updates, publish, relayStats, onFigures: (relayId, figures) => cluster?.relayFigures(relayId, figures) })
  security.onEvent(() => publish('relays'))

  // GET /metrics: behind the admin token unless metricsPublic (then keep the port off the internet).
  const metrics = createServerMetrics({ hub, tunnels, store, artifacts, authorize: config.metricsPublic ? undefined : authorize, ...clusterMetrics(cluster) })
  const staticUi = createStaticUi({ logger: logger.child({ component: 'ui' }) })
  const local = {
    request: (req: http.IncomingMessage, res: http.ServerResponse): void => {
      if (!metrics.handle(req, res) && !installers.handle(req, res) && !tunnelProxy.web(req, res) && !events.handle(req, res, authorize) && !staticUi(req, res)) api(req, res)
    },
    upgrade: (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
      const path = (req.url ?? '').split('?')[0]
      if (path === '/relay') hub.handleUpgrade(req, socket, head)
      else if (path === '/peer' && cluster !== null) cluster.handleUpgrade(req, socket, head)
      else if (!tunnelProxy.upgrade(req, socket, head)) socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
    }
  }
  const app: ServerApp = {
    config, store, hub, tunnels, artifacts, jobs, updates, events, security, cluster, life, servers, adminTokenFile: admin.file, baseUrl: '',
    handleRequest: (req, res) => {
      if (forwarder?.web(req, res, () => local.request(req, res)) !== true) local.request(req, res)
    },
    handleUpgrade: (req, socket, head) => {
      socket.on('error', () => {})
      if (forwarder?.upgrade(req, socket, head, () => local.upgrade(req, socket, head)) !== true) local.upgrade(req, socket, head)
    }
  }
  if (cluster !== null) {
    forwarder = joinCluster({ cluster, app, authorize, access, audit, settings, publishLocal: topic => { events.publish(topic); if (topic === 'artifacts') void installers.refresh().catch(() => {}) }, logger })
    life.onClose('forwarder', () => forwarder?.close())
  }
  const api = createApi({
    store, settings, hub, tunnels, artifacts, jobs, updates, events: { publish }, security, cluster,
    relayStats: id => relayStats.get(id),
    logger: logger.child({ component: 'api' }),
    version: VERSION,
    authorize,
    access,
    audit,
    tokensChanged: () => cluster?.announce({ kind: 'admin-tokens' }),
    maxBodyBytes: config.maxBodyBytes,
    publicUrl: () => config.publicUrl ?? app.baseUrl,
    installers
  })
  await installers.refresh()
  await installers.publishOwn(settings.current.maxUploadBytes)
  return app
}

/**
 * This replica's part in a cluster: the changes other replicas announce,
 * acted on here (the relay links held here get the deltas), tunnel states
 * and presence shared, and the one hop for requests that belong elsewhere.
 */
function joinCluster (p: {
  cluster: Cluster
  app: ServerApp
  authorize: Authorize
  access: AccessControl
  audit: AuditLog
  settings: SettingsRef
  publishLocal: (topic: EventTopic) => void
  logger: Logger
}): Forwarder {
  const { cluster, app, settings } = p
  const { hub, tunnels, jobs, store } = app
  const log = p.logger.child({ component: 'cluster' })
  const failed = (what: string) => (err: Error): void => log.warn({ err: err.message }, `${what} failed`)
  const reloadSettings = (): void => {
    store.getSettings().then(next => {
      settings.current = next
      hub.settingsChanged(next)
      p.publishLocal('settings')
    }, failed('reading the settings'))
    p.audit.loadRetention().catch(failed('reading the audit retention'))
  }
  const reloadAdminTokens = (): void => {
    p.access.reload().catch(failed('reading the API tokens'))
  }
  cluster.on('settings', reloadSettings)
  cluster.on('admin-tokens', reloadAdminTokens)
  cluster.onResync(() => {
    reloadSettings()
    reloadAdminTokens()
    jobs.dispatchQueued(hub.onlineEndpoints()).catch(failed('dispatching jobs announced while not listening'))
  })
  cluster.on('endpoint-deleted', msg => {
    tunnels.closeTunnel(msg.endpointId, 'endpoint deleted')
    hub.kickEndpoint(msg.endpointId, 'RG_ERR_ENDPOINT_DELETED', 'endpoint deleted by the admin')
  })
  cluster.on('endpoint-rekeyed', msg => {
    tunnels.closeTunnel(msg.endpointId, 'join token re-issued')
    hub.kickEndpoint(msg.endpointId, 'RG_ERR_AUTH', REKEYED_MESSAGE)
  })
  cluster.on('relay-revoked', msg => hub.disconnectRelay(msg.relayId, new RelaygateError('RG_ERR_RELAY_REVOKED', 'relay token revoked')))
  cluster.on('job', msg => { jobs.dispatchLocal(msg.jobId).catch(failed('dispatching a job')) })
  cluster.on('changed', msg => p.publishLocal(msg.topic))
  cluster.on('prestage', msg => { for (const relayId of msg.relays) hub.sendToRelays({ t: 'prestage', sha256: msg.sha256 }, relayId) })
  hub.onPresence((agent, online) => cluster.presenceChanged(agent.endpointId, agent.edgeId, agent.relayId, online))
  // A tunnel requested at a replica while its endpoint was offline, whose agent then came online at
  // another: the requesting replica looks for it every second and asks; the holder takes the tunnel over.
  const take = async (endpointId: string): Promise<void> => {
    if (hub.agentsOf(endpointId).length === 0) return
    await tunnels.request(endpointId)
    cluster.announce({ kind: 'tunnel-taken', endpointId })
    log.info({ endpointId }, 'took over a tunnel requested at another replica')
  }
  cluster.on('tunnel-wanted', msg => { take(msg.endpointId).catch(failed('taking over a tunnel')) })
  const seekTimer = setInterval(() => {
    const waiting = tunnels.waitingForAgents()
    if (waiting.length === 0) return
    cluster.remotePresence(waiting).then(found => {
      for (const endpointId of found.keys()) cluster.announce({ kind: 'tunnel-wanted', endpointId })
    }, failed('looking for agents of requested tunnels'))
  }, 1000)
  seekTimer.unref()
  app.life.onClose('tunnel seeker', () => clearInterval(seekTimer))
  cluster.on('tunnel-taken', msg => tunnels.handOver(msg.endpointId))
  tunnels.onState(endpointId => {
    const info = tunnels.info(endpointId)
    cluster.tunnelChanged(endpointId, info.state === 'closed' ? null : info)
  })
  const localServer = http.createServer(app.handleRequest)
  localServer.on('upgrade', app.handleUpgrade)
  const forwarder = createForwarder({
    cluster,
    authorize: p.authorize,
    localServer,
    logger: log,
    locate: async endpointId => {
      if (hub.agentsOf(endpointId).length > 0) return null
      const remote = (await cluster.remotePresence([endpointId])).get(endpointId)
      return remote?.[0]?.replicaId ?? null
    }
  })
  app.artifacts.peers = clusterBlobPeers(cluster, app.config.artifactCopies, log)
  cluster.on('artifact-deleted', msg => { app.artifacts.collect(msg.sha256, false).catch(failed('dropping an artifact')) })
  cluster.onPeerStream((meta, stream) => {
    if (meta.t === 'http') forwarder.accept(stream)
    else if (meta.t === 'blob') app.artifacts.serveHere(stream, meta.sha256, meta.offset)
    else void app.artifacts.receive(stream, meta.sha256, meta.size)
  })
  return forwarder
}

/** /metrics in a cluster: the replica label, and the longest-lived replica reports what is read from the database. */
function clusterMetrics (cluster: Cluster | null): { cluster?: { replicaId: string, reportsFleet: () => Promise<boolean>, liveReplicas: () => Promise<number> } } {
  if (cluster === null) return {}
  return {
    cluster: {
      replicaId: cluster.replicaId,
      reportsFleet: async () => (await cluster.liveReplicas())[0]?.id === cluster.replicaId,
      liveReplicas: async () => (await cluster.liveReplicas()).length
    }
  }
}

function movedAgain (): RelaygateError {
  return new RelaygateError('RG_ERR_TUNNEL_MOVED', 'the endpoint\'s tunnel moved to another server replica and could not be reached there; send the request again')
}

/** What relays report that is not one module's business: snapshots, figures, and change notifications for the dashboard. */
function wireRelayEvents (p: { store: Store, audit: AuditLog, hub: RelayHub, snapshots: WriteBehind<SnapshotRecord>, artifacts: ArtifactStore, tunnels: TunnelManager, jobs: JobManager, updates: UpdateManager, publish: (topic: EventTopic) => void, relayStats: Map<string, RelayFigures>, onFigures: (relayId: string, figures: RelayFigures) => void }): void {
  const { hub, artifacts, publish } = p
  hub.onRelayMessage('snapshot', (agent, msg) => {
    // Written with others (every agent of a relay sends one when it comes back). An old snapshot
    // replayed by a relay verifies, but does not replace a newer one: the write keeps the newer.
    p.snapshots.add({ endpointId: agent.endpointId, edgeId: agent.edgeId, receivedAt: Date.now(), reason: msg.reason, snapshot: { ...msg.snapshot, takenAt: msg.takenAt } })
    p.updates.noteAgentVersion(agent.endpointId, msg.snapshot.agentVersion)
    void selfTag(p.store, agent.endpointId, msg.snapshot.tags).then(added => {
      if (added.length === 0) return
      p.audit.record({ token: null, action: 'endpoint.self-tag', target: agent.endpointId, source: null, result: 'ok', detail: { added, edgeId: agent.edgeId, relayId: agent.relayId } })
      publish('endpoints')
    }, () => {})
  })
  hub.onRelayStream('artifact', (_relayId, stream, meta) => artifacts.serve(stream, meta.sha256, meta.offset))
  hub.onRelayLevel('stats', (relayId, msg) => {
    const { t: _t, ...figures } = msg
    p.relayStats.set(relayId, figures)
    p.onFigures(relayId, figures)
    publish('relays')
  })
  hub.onPresence(() => { publish('endpoints'); publish('relays') })
  p.tunnels.onState(() => publish('endpoints'))
  p.jobs.onChange(() => publish('jobs'))
  p.updates.onChange(() => publish('updates'))
}

/**
 * An agent started with --tag adds those tags to its endpoint (self-registration,
 * issue 17): from its snapshot, which is authenticated end to end. Tags are only
 * added, never taken off (the admin removes them). Returns the tags it added.
 */
async function selfTag (store: Store, endpointId: string, tags: unknown): Promise<string[]> {
  if (!Array.isArray(tags) || tags.length === 0) return []
  const wanted = tags.filter((x): x is string => typeof x === 'string' && TAG.test(x)).slice(0, 32)
  const endpoint = await store.getEndpoint(endpointId)
  if (endpoint === undefined) return []
  const have = endpoint.tags ?? []
  const added = wanted.filter(x => !have.includes(x)).slice(0, Math.max(0, 32 - have.length))
  if (added.length === 0) return []
  return await store.updateEndpoint(endpointId, { tags: [...have, ...added] }) ? added : []
}

/** Builds and starts a server: the app, then its HTTP and HTTPS listeners. Port 0 picks free ports; the URLs tell which. */
export async function buildServer (input: Partial<ServerConfig>, logger: Logger): Promise<RelaygateServer> {
  const app = await createServerApp(input, logger)
  const { config } = app
  const serve = async (server: http.Server | https.Server, port: number): Promise<number> => {
    server.on('upgrade', app.handleUpgrade)
    app.servers.push(server)
    return await listen(server, port, config.host)
  }
  let httpsUrl: string | null = null
  let fingerprint: string | null = null
  try {
    app.baseUrl = `http://${urlHost(config.host)}:${await serve(http.createServer(app.handleRequest), config.httpPort)}`
    if (config.httpsPort >= 0) {
      const cert = await loadOrCreateCert({ dir: config.dataDir, certFile: config.tlsCert, keyFile: config.tlsKey, commonName: 'relaygate server', logger })
      fingerprint = cert.fingerprint
      httpsUrl = `https://${urlHost(config.host)}:${await serve(https.createServer({ key: cert.key, cert: cert.cert }, app.handleRequest), config.httpsPort)}`
    }
  } catch (err) {
    await app.life.close(false)
    throw err
  }
  const httpUrl = app.baseUrl
  const { cluster } = app
  if (cluster !== null) {
    try {
      // Registered once listening: siblings dial the real address (port 0 in tests).
      await cluster.start(config.peerUrl ?? httpsUrl!, fingerprint!)
      cluster.announce({ kind: 'admin-tokens' })
    } catch (err) {
      await app.life.close(false)
      throw err
    }
  }
  const clusterInfo = cluster === null ? {} : { replicaId: cluster.replicaId, peerUrl: cluster.peerUrl }
  logger.info({ httpUrl, httpsUrl, adminTokenFile: app.adminTokenFile, fingerprint, ...clusterInfo, ...recordCipherLog }, 'server ready')
  writeReadyFile(config.readyFile, { httpUrl, httpsUrl, adminTokenFile: app.adminTokenFile, fingerprint, pid: process.pid, ...clusterInfo })
  return {
    config,
    store: app.store,
    hub: app.hub,
    tunnels: app.tunnels,
    artifacts: app.artifacts,
    jobs: app.jobs,
    events: app.events,
    security: app.security,
    cluster: app.cluster,
    httpUrl,
    httpsUrl,
    adminTokenFile: app.adminTokenFile,
    fingerprint,
    close: () => app.life.close(true),
    destroy: () => app.life.close(false)
  }
}
