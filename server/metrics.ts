import type { IncomingMessage, ServerResponse } from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { sendError } from './http-util.js'
import { registerBuildInfo } from '../common/build-info.js'
import { VERSION } from '../common/version.js'
import type { Store, JobTargetState } from './store.js'
import type { RelayHub } from './hub.js'
import type { TunnelManager } from './tunnels.js'
import type { ArtifactStore } from './artifacts.js'

const JOB_TARGET_STATES: JobTargetState[] = ['queued', 'downloading', 'verifying', 'running', 'succeeded', 'failed']

export interface ServerMetricsOptions {
  hub: RelayHub
  tunnels: TunnelManager
  store: Store
  artifacts: ArtifactStore
  /** Throws RG_ERR_UNAUTHORIZED for a request without the admin token; undefined = /metrics is public. */
  authorize?: (req: IncomingMessage) => void
  /**
   * Several replicas: this one's id (a `replica` label on every series) and
   * whether it reports the fleet-wide figures read from the database (one
   * replica does, the others report 0: a sum over replicas counts them once).
   */
  cluster?: { replicaId: string, reportsFleet: () => Promise<boolean>, liveReplicas: () => Promise<number> }
}

export interface ServerMetrics {
  readonly registry: Registry
  /** Serves `GET /metrics`; returns false for any other path. */
  handle: (req: IncomingMessage, res: ServerResponse) => boolean
}

/** A counter that mirrors a monotonic figure kept elsewhere (read at scrape time). */
function mirror (registry: Registry, name: string, help: string, read: () => number): Counter {
  return new Counter({
    name,
    help,
    registers: [registry],
    collect () {
      this.reset()
      this.inc(Math.max(0, read()))
    }
  })
}

/**
 * The server's Prometheus metrics, in a registry of its own (several servers
 * may live in one process, e.g. in tests). Gauges read the live objects at
 * scrape time; nothing here runs between scrapes except the latency histogram.
 * Node's process metrics are added on the first scrape.
 */
export function createServerMetrics (options: ServerMetricsOptions): ServerMetrics {
  const { hub, tunnels, store, artifacts } = options
  const registry = new Registry()
  let defaults = false
  const { cluster } = options
  if (cluster !== undefined) registry.setDefaultLabels({ replica: cluster.replicaId })
  registerBuildInfo(registry, 'server', VERSION)
  /** Fleet-wide figures (from the database): from one replica only in a cluster. */
  const fleet = async (): Promise<boolean> => cluster === undefined || await cluster.reportsFleet()
  if (cluster !== undefined) {
    new Gauge({
      name: 'relaygate_server_fleet_reporter',
      help: 'Several replicas: 1 on the replica that reports the fleet-wide figures (job targets, artifacts, replicas), 0 elsewhere.',
      registers: [registry],
      async collect () { this.set(await fleet() ? 1 : 0) }
    })
    new Gauge({
      name: 'relaygate_server_replicas_live',
      help: 'Several replicas: replicas whose lease holds (fleet-wide: reported by one replica).',
      registers: [registry],
      async collect () { this.set(await fleet() ? await cluster.liveReplicas() : 0) }
    })
  }

  new Gauge({
    name: 'relaygate_server_relays_connected',
    help: 'Relays linked to this server now.',
    registers: [registry],
    collect () { this.set(hub.linkStats().relays) }
  })
  new Gauge({
    name: 'relaygate_server_agents_online',
    help: 'Agents authenticated through a linked relay now.',
    registers: [registry],
    collect () { this.set(hub.linkStats().agents) }
  })
  mirror(registry, 'relaygate_server_relay_link_received_bytes_total', 'Bytes received over relay links (WebSocket payloads).', () => hub.linkStats().bytesIn)
  mirror(registry, 'relaygate_server_relay_link_sent_bytes_total', 'Bytes sent over relay links (WebSocket payloads).', () => hub.linkStats().bytesOut)
  mirror(registry, 'relaygate_server_agent_auth_requests_total', 'Agent authentications relays asked the server for (auth-begin messages).', () => hub.authBegins)
  mirror(registry, 'relaygate_server_tunnel_opens_total', 'Tunnels opened (a valid first use of one-time credentials).', () => tunnels.opens)
  const latency = new Histogram({
    name: 'relaygate_server_tunnel_open_latency_seconds',
    help: 'Seconds from raising the tunnel flag to the tunnel being open.',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry]
  })
  tunnels.onOpened(seconds => latency.observe(seconds))
  new Gauge({
    name: 'relaygate_server_tunnels_open',
    help: 'Tunnels open now.',
    registers: [registry],
    collect () { this.set(tunnels.counts().open) }
  })
  new Gauge({
    name: 'relaygate_server_tunnel_streams_open',
    help: 'Streams (proxied connections) through open tunnels now.',
    registers: [registry],
    collect () { this.set(tunnels.counts().streams) }
  })
  new Gauge({
    name: 'relaygate_server_job_targets',
    help: 'Job targets (one endpoint of one job) by state.',
    labelNames: ['state'],
    registers: [registry],
    async collect () {
      const counts = await fleet() ? await store.countJobTargets() : {}
      for (const state of JOB_TARGET_STATES) this.set({ state }, counts[state] ?? 0)
    }
  })
  new Gauge({
    name: 'relaygate_server_artifacts_stored',
    help: 'Named artifacts stored.',
    registers: [registry],
    async collect () { this.set(await fleet() ? (await store.listArtifacts()).length : 0) }
  })
  new Gauge({
    name: 'relaygate_server_artifacts_stored_bytes',
    help: 'Bytes of artifact content stored (each distinct sha256 once).',
    registers: [registry],
    async collect () {
      const sizes = new Map<string, number>()
      for (const a of await fleet() ? await store.listArtifacts() : []) sizes.set(a.sha256, a.size)
      let total = 0
      for (const size of sizes.values()) total += size
      this.set(total)
    }
  })
  mirror(registry, 'relaygate_server_artifact_served_bytes_total', 'Artifact bytes sent to relays (cache fills).', () => artifacts.bytesServed)

  const handle = (req: IncomingMessage, res: ServerResponse): boolean => {
    if ((req.url ?? '').split('?')[0] !== '/metrics') return false
    void (async () => {
      try {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new RelaygateError('RG_ERR_METHOD_NOT_ALLOWED', 'use GET /metrics')
        options.authorize?.(req)
        if (!defaults) {
          defaults = true
          collectDefaultMetrics({ register: registry })
        }
        const text = await registry.metrics()
        res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
        res.end(req.method === 'HEAD' ? undefined : text)
      } catch (err) {
        sendError(res, toRelaygateError(err))
      }
    })()
    return true
  }

  return { registry, handle }
}

