/**
 * Control messages (CONTROL frames, JSON). They are rare: sent on changes,
 * never per check-in. Each has a `t` field naming it.
 *
 * agent <-> relay
 *   agent HELLO {role:'agent', endpointId, edgeId, agentVersion}
 *   relay -> agent {t:'challenge', nonce, relayId}   (may come again later: re-authentication)
 *   agent -> relay {t:'proof', proof}
 *   relay -> agent {t:'welcome', endpointId, relayId, intervalSeconds}
 *
 * relay <-> server (one link, all agents of the relay)
 *   relay HELLO {role:'relay', token, name, version, wsUrl, wssUrl, fingerprint}
 *   server HELLO {role:'server', relayId, settings}
 *   relay -> server {t:'auth-begin', sid, endpointId, edgeId}
 *   server -> relay {t:'auth-challenge', sid, nonce}
 *   relay -> server {t:'auth-proof', sid, proof}
 *   server -> relay {t:'auth-result', sid, ok, flags?, code?, message?}
 *   relay -> server {t:'offline', sids:[...]}           (batched)
 *   server -> relay {t:'flags', set:[[endpointId, flags], ...]}   (deltas)
 *   server -> relay {t:'settings', settings}
 *   server -> relay {t:'kick', endpointId, code, message}
 *
 * tunnels (relay adds/strips the sid; the agent's messages carry none)
 *   server -> agent {t:'tunnel-offer', tunnelId, blob, target, idleTimeoutSeconds}  blob: AES-GCM sealed credential
 *   agent -> server {t:'tunnel-open', tunnelId, proof}     HMAC with the credential: first valid one wins
 *   server -> agent {t:'tunnel-result', tunnelId, ok, code?, message?}
 *   server -> agent {t:'tunnel-keepalive', tunnelId}       while an admin is active
 *   server -> agent {t:'tunnel-close', tunnelId, reason}
 *   agent -> server {t:'tunnel-closed', tunnelId, reason}  idle timeout (after a snapshot)
 *   agent -> server {t:'tunnel-need'}                      saw the flag without an offer
 *   agent -> server {t:'snapshot', reason, snapshot}
 *   streams server -> relay: OPEN meta {t:'tunnel', sid, tunnelId, kind:'http'|'tcp', port?}
 *           relay -> agent:  OPEN meta {t:'tunnel', tunnelId, kind, port?}
 *
 * artifacts and jobs
 *   relay -> server stream OPEN meta {t:'artifact', sha256, offset}: 16-byte header (u64 size, u64 offset), then bytes
 *   server -> relay {t:'prestage', sha256}
 *   relay -> server {t:'stats', agents, cache}            (every few seconds, when changed)
 *   server -> agent {t:'job', jobId, attempt, sha256, size, path, run}
 *   agent -> server {t:'job-progress', jobId, attempt, state, progress, bytes}
 *   agent -> relay  {t:'job-result', jobId, attempt, state, exitCode?, error?, output?}
 *   relay -> agent  {t:'job-result-ack', jobId, attempt}  once stored on the relay's disk
 *   relay -> server {t:'job-result', key, endpointId, jobId, attempt, result}   durable, replayed after outages
 *   server -> relay {t:'job-result-ack', key}              applied (or already applied): the relay forgets it
 */
import { RelaygateError } from './errors.js'

export interface Settings {
  checkinIntervalSeconds: number
  tunnelIdleTimeoutSeconds: number
  keepAliveSeconds: number
  snapshotIntervalSeconds: number
  /** Largest artifact upload accepted (bytes). */
  maxUploadBytes: number
}

export const DEFAULT_SETTINGS: Settings = {
  checkinIntervalSeconds: 5,
  tunnelIdleTimeoutSeconds: 300,
  keepAliveSeconds: 60,
  snapshotIntervalSeconds: 600,
  maxUploadBytes: 10 * 1024 ** 3
}

export type AgentHello = { role: 'agent', endpointId: string, edgeId: string, agentVersion: string }
export type RelayHello = { role: 'relay', token: string, name?: string, version: string, wsUrl?: string, wssUrl?: string, fingerprint?: string }
export type ServerHello = { role: 'server', relayId: string, settings: Settings }

export type AgentControl =
  | { t: 'challenge', nonce: string, relayId: string }
  | { t: 'proof', proof: string }
  | { t: 'welcome', endpointId: string, relayId: string, intervalSeconds: number }

export type RelayToServer =
  | { t: 'auth-begin', sid: number, endpointId: string, edgeId: string }
  | { t: 'auth-proof', sid: number, proof: string }
  | { t: 'offline', sids: number[] }
  /** An agent's message passed up, with the sid of the agent added by the relay. */
  | { t: string, sid: number, [key: string]: unknown }

export type ServerToRelay =
  | { t: 'auth-challenge', sid: number, nonce: string }
  | { t: 'auth-result', sid: number, ok: true, flags: number }
  | { t: 'auth-result', sid: number, ok: false, code: string, message: string }
  | { t: 'flags', set: Array<[string, number]> }
  | { t: 'settings', settings: Settings }
  | { t: 'kick', endpointId: string, code: string, message: string }
  | { t: 'tunnel-offer', sid: number, tunnelId: string, blob: string, target: string | null, idleTimeoutSeconds: number }
  | { t: 'tunnel-result', sid: number, tunnelId: string, ok: boolean, code?: string, message?: string }
  | { t: 'tunnel-keepalive', sid: number, tunnelId: string }
  | { t: 'tunnel-close', sid: number, tunnelId: string, reason: string }

/** Agent messages the relay passes up to the server (adding the sid), and server messages it passes down. */
export const AGENT_UPWARD = new Set(['tunnel-open', 'tunnel-closed', 'tunnel-need', 'snapshot', 'job-progress'])
export const AGENT_DOWNWARD = new Set(['tunnel-offer', 'tunnel-result', 'tunnel-keepalive', 'tunnel-close', 'job'])

/** Field checks for decoded JSON: throw RG_ERR_PROTOCOL naming the field. */
export function str (body: Record<string, unknown>, field: string, max = 256): string {
  const v = body[field]
  if (typeof v !== 'string' || v.length === 0 || v.length > max) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `field ${field} must be a non-empty string of at most ${max} characters`)
  }
  return v
}

export function optStr (body: Record<string, unknown>, field: string, max = 2048): string | undefined {
  const v = body[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v.length > max) throw new RelaygateError('RG_ERR_PROTOCOL', `field ${field} must be a string`)
  return v
}

export function uint (body: Record<string, unknown>, field: string): number {
  const v = body[field]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `field ${field} must be an unsigned integer`)
  }
  return v
}
