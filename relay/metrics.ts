import { readdir } from 'node:fs/promises'
import type uWS from 'uWebSockets.js'
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import { registerBuildInfo } from '../common/build-info.js'
import type { CacheStats } from '../cache/index.js'

/** What the relay's metrics read at scrape time. */
export interface RelayMetricsSources {
  stats: { agents: number, streams: number, checkins: number, pushes: number, authFailures: number, peersTurnedAway: number }
  cache: { getStats: () => CacheStats }
  link: { readonly isReady: boolean, readonly bytes: { in: number, out: number }, readonly connects: number }
  queuedResults: () => number
  /** The version this relay runs (relaygate_build_info). */
  version: string
}

export interface RelayMetrics {
  readonly registry: Registry
  /** The Prometheus text (adds Node's process metrics on the first call). */
  text: () => Promise<string>
  /** Answers a uWS request with the metrics. */
  serve: (res: uWS.HttpResponse) => void
}

/**
 * The relay's Prometheus metrics (`GET /metrics` on its ws and wss ports,
 * no auth, like /healthz), in a registry of its own. Everything is read from
 * the live objects at scrape time.
 */
export function createRelayMetrics (src: RelayMetricsSources): RelayMetrics {
  const registry = new Registry()
  let defaults = false

  const gauge = (name: string, help: string, read: () => number): void => {
    new Gauge({ name, help, registers: [registry], collect () { this.set(read()) } })
  }
  const counter = (name: string, help: string, read: () => number): void => {
    new Counter({ name, help, registers: [registry], collect () { this.reset(); this.inc(Math.max(0, read())) } })
  }

  registerBuildInfo(registry, 'relay', src.version)
  gauge('relaygate_relay_agents_connected', 'Agent links open now (authenticated or not yet).', () => src.stats.agents)
  counter('relaygate_relay_checkins_total', 'Check-ins answered by this relay.', () => src.stats.checkins)
  counter('relaygate_relay_pushes_total', 'Check-in answers pushed to agents without waiting for a check-in.', () => src.stats.pushes)
  counter('relaygate_relay_auth_failures_total', 'Agents the server refused.', () => src.stats.authFailures)
  counter('relaygate_relay_peers_turned_away_total', 'Connections closed at once: their address sent too many wrong proofs.', () => src.stats.peersTurnedAway)
  counter('relaygate_relay_tunnel_streams_total', 'Tunnel streams joined from the server to an agent.', () => src.stats.streams)
  counter('relaygate_relay_cache_hits_total', 'Artifact requests served from the cache.', () => src.cache.getStats().hits)
  counter('relaygate_relay_cache_misses_total', 'Artifact requests that needed a fill from the server.', () => src.cache.getStats().misses)
  counter('relaygate_relay_cache_served_bytes_total', 'Artifact bytes sent to agents.', () => src.cache.getStats().bytesServed)
  counter('relaygate_relay_cache_fetched_bytes_total', 'Artifact bytes fetched from the server.', () => src.cache.getStats().bytesFetched)
  counter('relaygate_relay_cache_corrupt_dropped_total', 'Cache entries dropped because their bytes did not verify.', () => src.cache.getStats().corruptDropped)
  gauge('relaygate_relay_cache_entries', 'Artifacts in the cache.', () => src.cache.getStats().entries)
  gauge('relaygate_relay_cache_used_bytes', 'Bytes the cache holds (or has reserved for fills).', () => src.cache.getStats().bytesUsed)
  gauge('relaygate_relay_cache_max_bytes', 'The cache budget (--cache-max-bytes).', () => src.cache.getStats().maxBytes)
  gauge('relaygate_relay_cache_fills_in_progress', 'Fills from the server running now.', () => src.cache.getStats().fillsInProgress)
  gauge('relaygate_relay_results_queued', 'Job results on disk waiting for the server\'s acknowledgement.', src.queuedResults)
  counter('relaygate_relay_server_link_received_bytes_total', 'Bytes received over the server link.', () => src.link.bytes.in)
  counter('relaygate_relay_server_link_sent_bytes_total', 'Bytes sent over the server link.', () => src.link.bytes.out)
  counter('relaygate_relay_server_link_connects_total', 'Times the server link was established.', () => src.link.connects)
  gauge('relaygate_relay_server_link_up', '1 while linked to the server, else 0.', () => src.link.isReady ? 1 : 0)

  const text = async (): Promise<string> => {
    if (!defaults) {
      defaults = true
      collectDefaultMetrics({ register: registry })
      replaceOpenFds(registry)
    }
    return await registry.metrics()
  }

  const serve = (res: uWS.HttpResponse): void => {
    let aborted = false
    res.onAborted(() => { aborted = true })
    text().then(body => {
      if (aborted) return
      res.cork(() => { res.writeHeader('content-type', registry.contentType).writeHeader('cache-control', 'no-store').end(body) })
    }, (err: Error) => {
      if (aborted) return
      res.cork(() => {
        res.writeStatus('500 Internal Server Error').writeHeader('content-type', 'application/json')
          .end(JSON.stringify({ error: { code: 'RG_ERR_INTERNAL', message: err.message } }))
      })
    })
  }

  return { registry, text, serve }
}

/**
 * prom-client's process_open_fds lists /proc/self/fd with readdirSync on the
 * event loop: with 15,000 agent sockets that blocked the relay for about
 * 40 ms per scrape (bench P2 profile). The same gauge, listed off the loop.
 */
function replaceOpenFds (registry: Registry): void {
  if (registry.getSingleMetric('process_open_fds') === undefined) return
  registry.removeSingleMetric('process_open_fds')
  // eslint-disable-next-line no-new
  new Gauge({
    name: 'process_open_fds',
    help: 'Number of open file descriptors.',
    registers: [registry],
    async collect () {
      try {
        // Minus the descriptor readdir itself held open.
        this.set((await readdir('/proc/self/fd')).length - 1)
      } catch {}
    }
  })
}
