import http from 'node:http'
import https from 'node:https'
import { mkdirSync, existsSync, readFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/errors.js'
import { hashToken, newSecret, redact } from '../protocol/auth.js'
import { writeFileAtomic, writeReadyFile } from '../common/files.js'
import { loadOrCreateCert } from '../common/tls.js'
import { VERSION } from '../common/version.js'
import { verifyServerConfig, type ServerConfig } from './config.js'
import { SqliteStore } from './sqlite-store.js'
import type { Store } from './store.js'
import { RelayHub } from './hub.js'
import { createApi } from './api.js'
import { TunnelManager } from './tunnels.js'
import { ArtifactStore } from './artifacts.js'
import { JobManager } from './jobs.js'
import { createTunnelProxy } from './proxy.js'
import { EventHub } from './events.js'
import { createStaticUi } from './static.js'
import { bearerAuthorizer } from './http-util.js'
import { tokenMatches } from '../protocol/auth.js'
import { createServerMetrics } from './metrics.js'

export interface RelaygateServer {
  readonly config: ServerConfig
  readonly store: Store
  readonly hub: RelayHub
  readonly tunnels: TunnelManager
  readonly artifacts: ArtifactStore
  readonly jobs: JobManager
  /** Change notifications for the dashboard (`GET /api/events`): call `events.publish(topic)` after a change. */
  readonly events: EventHub
  readonly httpUrl: string
  readonly httpsUrl: string | null
  readonly adminTokenFile: string
  /** The HTTPS certificate's sha256, for relays that pin the server. */
  readonly fingerprint: string | null
  close: () => Promise<void>
  destroy: () => Promise<void>
}

function listen (server: http.Server | https.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new RelaygateError('RG_ERR_CONFIG', `cannot listen on ${host}:${port}: ${err.code ?? err.message}`))
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

/** Reads the admin token file, or creates it (0600) on first start. */
function loadAdminToken (dataDir: string, override: string | undefined, logger: Logger): { token: string, file: string } {
  const file = join(dataDir, 'admin-token')
  if (override !== undefined) {
    writeFileAtomic(file, override + '\n', 0o600)
    return { token: override, file }
  }
  if (existsSync(file)) {
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

/** Builds and starts a server. Port 0 picks free ports; the URLs tell which. */
export async function buildServer (input: Partial<ServerConfig>, logger: Logger): Promise<RelaygateServer> {
  const config = verifyServerConfig(input)
  mkdirSync(config.dataDir, { recursive: true })
  const store = new SqliteStore(join(config.dataDir, 'relaygate.db'))
  const admin = loadAdminToken(config.dataDir, config.adminToken, logger)
  store.setMeta('adminTokenHash', hashToken(admin.token))

  const hub = new RelayHub({
    store,
    logger: logger.child({ component: 'hub' }),
    version: VERSION,
    keepAliveMs: config.relayKeepAliveMs,
    livenessTimeoutMs: config.relayLivenessTimeoutMs
  })
  const tunnels = new TunnelManager({ store, hub, logger: logger.child({ component: 'tunnels' }), adminWindowMs: config.tunnelAdminWindowMs })
  hub.onRelayMessage('snapshot', (agent, msg) => {
    store.saveSnapshot({ endpointId: agent.endpointId, edgeId: agent.edgeId, receivedAt: Date.now(), reason: msg.reason, snapshot: msg.snapshot })
  })
  const artifacts = new ArtifactStore({ dir: join(config.dataDir, 'artifacts'), store, logger: logger.child({ component: 'artifacts' }) })
  hub.onRelayStream('artifact', (_relayId, stream, meta) => artifacts.serve(stream, meta.sha256, meta.offset))
  const jobs = new JobManager({ store, hub, logger: logger.child({ component: 'jobs' }) })
  const relayStats = new Map<string, Record<string, unknown>>()
  const authorize = bearerAuthorizer(hashToken(admin.token), tokenMatches)
  const events = new EventHub({ logger: logger.child({ component: 'events' }) })
  hub.onPresence(() => { events.publish('endpoints'); events.publish('relays') })
  tunnels.onState(() => events.publish('endpoints'))
  jobs.onChange(() => events.publish('jobs'))
  hub.onRelayLevel('stats', (relayId, msg) => {
    const { t: _t, ...figures } = msg
    relayStats.set(relayId, figures)
    events.publish('relays')
  })
  // GET /metrics: behind the admin token unless metricsPublic (then keep the port off the internet).
  const metrics = createServerMetrics({ hub, tunnels, store, artifacts, authorize: config.metricsPublic ? undefined : authorize })
  const staticUi = createStaticUi({ logger: logger.child({ component: 'ui' }) })
  const tunnelProxy = createTunnelProxy({ tunnels, store, logger: logger.child({ component: 'proxy' }), openTimeoutMs: config.tunnelOpenTimeoutMs, authorize })
  let httpUrl = ''
  const api = createApi({
    store,
    hub,
    tunnels,
    artifacts,
    jobs,
    relayStats: id => relayStats.get(id),
    logger: logger.child({ component: 'api' }),
    version: VERSION,
    adminTokenHash: hashToken(admin.token),
    maxBodyBytes: config.maxBodyBytes,
    publicUrl: () => config.publicUrl ?? httpUrl,
    events
  })
  const onUpgrade = (req: http.IncomingMessage, socket: import('node:stream').Duplex, head: Buffer): void => {
    socket.on('error', () => {})
    if ((req.url ?? '').split('?')[0] === '/relay') hub.handleUpgrade(req, socket, head)
    else if (!tunnelProxy.upgrade(req, socket, head)) socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
  }
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (!metrics.handle(req, res) && !tunnelProxy.web(req, res) && !events.handle(req, res, authorize) && !staticUi(req, res)) api(req, res)
  }

  const servers: Array<http.Server | https.Server> = []
  const httpServer = http.createServer(onRequest)
  httpServer.on('upgrade', onUpgrade)
  servers.push(httpServer)
  let httpsUrl: string | null = null
  let fingerprint: string | null = null
  try {
    const httpPort = await listen(httpServer, config.httpPort, config.host)
    httpUrl = `http://${urlHost(config.host)}:${httpPort}`
    if (config.httpsPort >= 0) {
      const cert = await loadOrCreateCert({ dir: config.dataDir, certFile: config.tlsCert, keyFile: config.tlsKey, commonName: 'relaygate server', logger })
      fingerprint = cert.fingerprint
      const httpsServer = https.createServer({ key: cert.key, cert: cert.cert }, onRequest)
      httpsServer.on('upgrade', onUpgrade)
      servers.push(httpsServer)
      const httpsPort = await listen(httpsServer, config.httpsPort, config.host)
      httpsUrl = `https://${urlHost(config.host)}:${httpsPort}`
    }
  } catch (err) {
    await Promise.all(servers.map(s => new Promise(resolve => s.close(resolve))))
    store.close()
    throw err
  }
  logger.info({ httpUrl, httpsUrl, adminTokenFile: admin.file, fingerprint }, 'server ready')
  writeReadyFile(config.readyFile, { httpUrl, httpsUrl, adminTokenFile: admin.file, fingerprint, pid: process.pid })

  let closing: Promise<void> | null = null
  const shutdown = (graceful: boolean): Promise<void> => {
    if (closing !== null) return closing
    closing = (async () => {
      try {
        events.close()
        await tunnels.shutdown()
        tunnelProxy.close()
        await hub.close(graceful)
        for (const s of servers) {
          s.close()
          s.closeAllConnections()
        }
      } finally {
        jobs.flush()
        store.close()
      }
    })()
    return closing
  }

  return {
    config,
    store,
    hub,
    tunnels,
    artifacts,
    jobs,
    events,
    httpUrl,
    httpsUrl,
    adminTokenFile: admin.file,
    fingerprint,
    close: () => shutdown(true),
    destroy: () => shutdown(false)
  }
}
