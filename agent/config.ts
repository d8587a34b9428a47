import { resolve } from 'node:path'
import { RelaygateError } from '../protocol/errors.js'
import { decodeJoinToken, normalizeFingerprint, type JoinToken, type RelayAddress } from '../protocol/token.js'
import { SHA256_HEX } from '../common/sha256.js'
import type { SelfUpdateHost } from '../common/self-update.js'
import { verifyProxyUrl } from '../common/proxy.js'

export interface AgentConfig {
  joinToken: string
  dataDir: string
  /** Fixed edge id; otherwise one is generated once and kept in the data dir. */
  edgeId?: string
  /** Relay URLs overriding the join token's list (ws:// or wss://). */
  relays: string[]
  /** Extra accepted relay certificate fingerprints (rotation). */
  pins: string[]
  tunnelTarget?: string
  /** Agent-side TCP ports (on 127.0.0.1) that `relaygate connect` may reach. */
  allowTcp: number[]
  allowExec: boolean
  /** Where jobs place artifacts (default <dataDir>/files). */
  filesDir?: string
  readyFile?: string
  /** Stop after this long without reaching any relay (ms); 0 = never. */
  giveUpAfterMs: number
  /** Not accepted by the relay within this (ms): try again. */
  acceptTimeoutMs: number
  /** close() waits this long for running jobs to finish and their results to be acknowledged (ms). */
  drainTimeoutMs: number
  /** Failed download tries (while a relay is connected) before a job fails; time without a relay does not count. */
  downloadRetries?: number
  /**
   * The versions dir that self-updates install into (issue 16); default: the
   * one-file executable's own, under the data dir. In-process fleets (tests,
   * benches) give their own.
   */
  selfUpdate?: SelfUpdateHost
  /** The version this agent reports (default: the build's): in-process fleets that play several builds. */
  version?: string
  /** An HTTP CONNECT proxy to the relays (default: HTTPS_PROXY and the like, with NO_PROXY). */
  proxy?: string
  /** Tags this agent adds to its endpoint (self-registration): site-a, db, … */
  tags?: string[]
}

export const agentDefaults: Omit<AgentConfig, 'joinToken'> = {
  dataDir: './agent-data',
  relays: [],
  pins: [],
  allowTcp: [],
  allowExec: false,
  giveUpAfterMs: 24 * 3600 * 1000,
  acceptTimeoutMs: 30_000,
  drainTimeoutMs: 30_000
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export interface VerifiedAgentConfig extends AgentConfig {
  token: JoinToken
  relayList: RelayAddress[]
}

export function verifyAgentConfig (input: Partial<AgentConfig>): VerifiedAgentConfig {
  const clean = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<AgentConfig>
  const config = { ...agentDefaults, ...clean } as AgentConfig
  if (typeof config.joinToken !== 'string' || config.joinToken === '') throw new RelaygateError('RG_ERR_CONFIG', '--join-token is required (from POST /api/endpoints)')
  const token = decodeJoinToken(config.joinToken)
  if (config.proxy !== undefined && config.proxy !== '') verifyProxyUrl(config.proxy)
  for (const tag of config.tags ?? []) {
    if (!/^[A-Za-z0-9._:-]{1,64}$/.test(tag)) throw new RelaygateError('RG_ERR_CONFIG', `--tag ${tag.slice(0, 70)}: 1-64 letters, digits or . _ : -`)
  }
  if ((config.tags ?? []).length > 32) throw new RelaygateError('RG_ERR_CONFIG', '--tag: at most 32 tags')
  if (config.edgeId !== undefined && !uuidPattern.test(config.edgeId)) throw new RelaygateError('RG_ERR_CONFIG', `--edge-id must be a UUID, got ${config.edgeId}`)
  const pins = config.pins.map(normalizeFingerprint)
  for (const p of pins) if (!SHA256_HEX.test(p)) throw new RelaygateError('RG_ERR_CONFIG', `--pin must be a sha256 fingerprint (64 hex digits), got ${p}`)
  let relayList: RelayAddress[]
  if (config.relays.length > 0) {
    relayList = config.relays.map(url => {
      let u: URL
      try { u = new URL(url) } catch { throw new RelaygateError('RG_ERR_CONFIG', `--relay is not a URL: ${url}`) }
      if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new RelaygateError('RG_ERR_CONFIG', `--relay must be ws:// or wss://, got ${url}`)
      const clean = url.replace(/\/+$/, '')
      const known = token.relays.find(r => r.url === clean)
      return { url: clean, fingerprints: [...(known?.fingerprints ?? []), ...pins] }
    })
  } else {
    relayList = token.relays.map(r => ({ url: r.url, fingerprints: [...r.fingerprints, ...pins] }))
  }
  if (relayList.length === 0) throw new RelaygateError('RG_ERR_CONFIG', 'the join token names no relay: pass --relay ws://relay:20080')
  if (config.tunnelTarget !== undefined && !/^(https?:\/\/|tcp:\/\/|unix:\/)/.test(config.tunnelTarget)) {
    throw new RelaygateError('RG_ERR_CONFIG', `--tunnel-target must be http://host:port, https://host:port, tcp://host:port or unix:/path, got ${config.tunnelTarget}`)
  }
  for (const p of config.allowTcp) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RelaygateError('RG_ERR_CONFIG', `--allow-tcp must list ports 1-65535, got ${String(p)}`)
  }
  const dataDir = resolve(config.dataDir)
  return { ...config, dataDir, filesDir: resolve(config.filesDir ?? `${dataDir}/files`), pins, token, relayList }
}
