import type { SelfUpdateHost } from '../common/self-update.js'
import { verifyProxyUrl } from '../common/proxy.js'
import { resolve } from 'node:path'
import { RelaygateError } from '../protocol/errors.js'
import { normalizeFingerprint } from '../protocol/token.js'
import { SHA256_HEX } from '../common/sha256.js'

export interface RelayConfig {
  /**
   * Server base URL(s): http(s):// or ws(s)://. Several (replicas of one
   * cluster, or one load-balanced URL): the relay links to one at a time
   * and moves to the next when its link drops or the server says go-away.
   */
  server: string | string[]
  /** The server URLs, as verified (filled by verifyRelayConfig). */
  servers: string[]
  token: string
  dataDir: string
  host: string
  port: number
  /** -1 turns the TLS listener off. */
  tlsPort: number
  tlsCert?: string
  tlsKey?: string
  /** URLs agents should dial, overriding what the relay derives from its listeners. */
  publicUrls: string[]
  /** Pin(s) for the server's certificate (https/wss server URLs with a self-signed certificate); any one matches. */
  serverFingerprint?: string | string[]
  /** The pins, as verified (filled by verifyRelayConfig). */
  serverFingerprints: string[]
  name?: string
  /** An HTTP CONNECT proxy to the server (default: HTTPS_PROXY and the like, with NO_PROXY). */
  proxy?: string
  /** The versions dir self-updates install into (issue 16); default: the one-file executable's own under the data dir. */
  selfUpdate?: SelfUpdateHost
  /** The version this relay reports (default: the build's): in-process fleets that play several builds. */
  version?: string
  cacheMaxBytes: number
  /** Keep no cache file that would leave less free disk than this. */
  cacheMinFreeBytes: number
  /** Push raised flags (and tunnel offers) to agents at once; false = agents learn at their next check-in, like polling-only edge agents. */
  pushFlags: boolean
  /** How often figures go to the server (when changed), ms. */
  statsIntervalMs: number
  readyFile?: string
  /** Stop trying to reach the server after this long without success (ms); 0 = never. */
  giveUpAfterMs: number
  /** Keep trying to listen on an address that is not usable yet (not up at boot, crash leftovers) this long (ms). */
  listenRetryMs: number
  /** Agents refused while the server link is down and this many are already waiting. */
  maxPendingAuth: number
  /** Most agents at once. */
  maxAgents: number
  /** Check-ins an agent may burst, and the steady rate per second. */
  checkinBurst: number
  checkinRatePerSecond: number
  /** Link keep-alive toward the server (ms). */
  serverKeepAliveMs: number
  serverLivenessTimeoutMs: number
  /** An agent must finish its hello and authentication within this (ms). */
  authTimeoutMs: number
  /** A graceful close waits this long for the server to acknowledge queued job results (ms). */
  resultFlushTimeoutMs: number
}

export const relayDefaults: Omit<RelayConfig, 'server' | 'servers' | 'serverFingerprints' | 'token' | 'dataDir'> = {
  host: '0.0.0.0',
  port: 20080,
  tlsPort: 20081,
  publicUrls: [],
  cacheMaxBytes: 10 * 1024 * 1024 * 1024,
  cacheMinFreeBytes: 512 * 1024 * 1024,
  statsIntervalMs: 5000,
  pushFlags: true,
  giveUpAfterMs: 24 * 3600 * 1000,
  listenRetryMs: 60_000,
  maxPendingAuth: 20_000,
  maxAgents: 50_000,
  checkinBurst: 5,
  checkinRatePerSecond: 1,
  serverKeepAliveMs: 15_000,
  serverLivenessTimeoutMs: 45_000,
  authTimeoutMs: 20_000,
  resultFlushTimeoutMs: 2000
}

export function verifyRelayConfig (input: Partial<RelayConfig>): RelayConfig {
  const clean = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<RelayConfig>
  const config = { ...relayDefaults, dataDir: './relay-data', ...clean } as RelayConfig
  const servers = typeof config.server === 'string' ? [config.server] : Array.isArray(config.server) ? config.server : []
  if (servers.length === 0 || servers.some(s => typeof s !== 'string' || s === '')) throw new RelaygateError('RG_ERR_CONFIG', '--server is required (the server URL, e.g. http://server:8080)')
  for (const server of servers) {
    let url: URL
    try {
      url = new URL(server)
    } catch {
      throw new RelaygateError('RG_ERR_CONFIG', `--server is not a URL: ${server}`)
    }
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol)) throw new RelaygateError('RG_ERR_CONFIG', `--server must be http(s):// or ws(s)://, got ${url.protocol}`)
  }
  config.servers = [...new Set(servers.map(s => s.replace(/\/+$/, '')))]
  if (config.proxy !== undefined && config.proxy !== '') verifyProxyUrl(config.proxy)
  if (typeof config.token !== 'string' || config.token === '') throw new RelaygateError('RG_ERR_CONFIG', '--token is required (a relay token from POST /api/relays or relaygate token create-relay)')
  if (config.token.length < 8 || /\s/.test(config.token)) {
    throw new RelaygateError('RG_ERR_CONFIG', `--token is not a relay token (${config.token.length} characters${/\s/.test(config.token) ? ', with spaces' : ''}): copy the whole rgr_… token POST /api/relays gave`)
  }
  for (const [field, value, allowOff] of [['--port', config.port, false], ['--tls-port', config.tlsPort, true]] as const) {
    if (!Number.isInteger(value) || value < (allowOff ? -1 : 0) || value > 65535) throw new RelaygateError('RG_ERR_CONFIG', `${field} must be a port number 0-65535, got ${String(value)}`)
  }
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) throw new RelaygateError('RG_ERR_CONFIG', '--tls-cert and --tls-key must be given together')
  for (const u of config.publicUrls) {
    let pu: URL
    try { pu = new URL(u) } catch { throw new RelaygateError('RG_ERR_CONFIG', `--public-url is not a URL: ${u}`) }
    if (pu.protocol !== 'ws:' && pu.protocol !== 'wss:') throw new RelaygateError('RG_ERR_CONFIG', `--public-url must be ws:// or wss://, got ${u}`)
  }
  if (!Number.isFinite(config.cacheMaxBytes) || config.cacheMaxBytes < 0) throw new RelaygateError('RG_ERR_CONFIG', '--cache-max-bytes must be a non-negative number of bytes')
  const pins = config.serverFingerprint === undefined ? [] : typeof config.serverFingerprint === 'string' ? [config.serverFingerprint] : config.serverFingerprint
  config.serverFingerprints = pins.map(pin => {
    const fp = normalizeFingerprint(pin)
    if (!SHA256_HEX.test(fp)) throw new RelaygateError('RG_ERR_CONFIG', '--server-fingerprint must be a sha256 fingerprint (64 hex digits)')
    return fp
  })
  config.dataDir = resolve(config.dataDir)
  return config
}
