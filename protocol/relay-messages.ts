/**
 * Control messages of the relay link (relay <-> server, one link for all of
 * a relay's agents). Agent messages passed through carry the `sid` of the
 * agent's session on the relay (agent-messages.ts).
 *
 *   relay -> server  auth-begin {sid, endpointId, edgeId}
 *   server -> relay  auth-challenge {sid, nonce}
 *   relay -> server  auth-proof {sid, proof}
 *   server -> relay  auth-result {sid, ok: true, flags} | {sid, ok: false, code, message}
 *   relay -> server  offline {sids}                      (batched)
 *   server -> relay  flags {set: [[endpointId, flags], ...]}   (deltas)
 *   server -> relay  settings {settings}
 *   server -> relay  kick {endpointId, code, message}
 *   server -> relay  prestage {sha256}
 *   server -> relay  installers {files: [{name, sha256, size}]}   the one-file executables the relay
 *                    serves to anyone at /install/<name> (the whole list, on link and on change)
 *   relay -> server  stats {agents, queuedResults, cache}  (every few seconds, when changed)
 *   relay -> server  job-result {key, endpointId, jobId, attempt, result}   durable, replayed after outages
 *   server -> relay  job-result-ack {key}                applied (or already applied): the relay forgets it
 *   relay -> server  result-held {endpointId, jobId, attempt, code, message}   a result the relay could not
 *                    store (disk full): the target shows why it waits
 *   server -> relay  relay-update {updateId, version, sha256, size, healthSeconds, deadline}   replace the
 *                    relay's own executable (issue 16; the link is the relay's authenticated channel)
 *   relay -> server  relay-update-progress {updateId, version, state, progress, bytes, running, code?, message?}
 *                    as an agent's, about the relay itself (again at every link until the next update)
 */
import { Type, Id, EdgeId, B64, Sha256Hex, Text, U8, U32, Size, Sid, Code, message, strict, messageSet, withSid, type Static } from './schema.js'
import { SettingsSchema } from './settings.js'
import {
  TunnelOpen, TunnelClosed, TunnelNeed, Snapshot, JobProgress, OrderRefused, TunnelOffer, TunnelResult, TunnelKeepalive, TunnelClose, Job, AgentSettings, Stop,
  JobResultBody, MAX_ERROR_MESSAGE, UpdateProgress, Update
} from './agent-messages.js'

export const AuthBegin = message('auth-begin', { sid: Sid, endpointId: Id, edgeId: EdgeId })
export const AuthProof = message('auth-proof', { sid: Sid, proof: B64(128), agentNonce: B64(64) })
export const Offline = message('offline', { sids: Type.Array(Sid, { maxItems: 100_000 }) })
export const CacheStatsSchema = strict({
  hits: Size,
  misses: Size,
  bytesServed: Size,
  bytesFetched: Size,
  entries: Size,
  bytesUsed: Size,
  maxBytes: Size,
  fillsInProgress: Size,
  corruptDropped: Size,
  hashedServes: Size
})
export const Stats = message('stats', { agents: U32, queuedResults: U32, cache: CacheStatsSchema })
/** Key of a stored result on the relay: `jobId_endpointId_attempt`. */
const ResultKey = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_-]+$' })
/** A stored job result, with the edge id of the agent that reported it (its MAC is checked with that agent's key). */
export const RelayJobResult = message('job-result', { key: ResultKey, endpointId: Id, edgeId: EdgeId, jobId: Id, attempt: U32, result: JobResultBody })
/** A result the relay could not store (so did not take from the agent): informational, the agent keeps it and retries. */
export const ResultHeld = message('result-held', { endpointId: Id, jobId: Id, attempt: U32, code: Code, message: Text(MAX_ERROR_MESSAGE) })

export const AuthChallenge = message('auth-challenge', { sid: Sid, nonce: B64(64) })
export const AuthResult = Type.Union([
  message('auth-result', { sid: Sid, ok: Type.Literal(true), flags: U8 }),
  message('auth-result', { sid: Sid, ok: Type.Literal(false), code: Code, message: Text(MAX_ERROR_MESSAGE) })
])
export const Flags = message('flags', { set: Type.Array(Type.Tuple([Id, U8]), { maxItems: 100_000 }) })
export const SettingsMessage = message('settings', { settings: SettingsSchema })
/** Closes an endpoint's sessions on the relay, or only session `sid`. */
export const Kick = message('kick', { endpointId: Id, sid: Type.Optional(Sid), code: Code, message: Text(MAX_ERROR_MESSAGE) })
export const Prestage = message('prestage', { sha256: Sha256Hex })
export const RelayJobResultAck = message('job-result-ack', { key: ResultKey })
/** Artifact names a relay serves without a download token (issue 16): relaygate-<os>-<arch>. */
export const INSTALLER_NAME = /^relaygate-(linux|darwin)-(x64|arm64)$/
export const InstallerFile = strict({ name: Type.String({ pattern: INSTALLER_NAME.source }), sha256: Sha256Hex, size: Size })
export const Installers = message('installers', { files: Type.Array(InstallerFile, { maxItems: 8 }) })
export type InstallerFile = Static<typeof InstallerFile>

/** The relay's own update: the fields of an agent's, without the end-to-end MAC and counter (the link itself is authenticated). */
const { t: _t1, mac: _mac1, ...relayProgressFields } = UpdateProgress.properties
export const RelayUpdateProgress = message('relay-update-progress', relayProgressFields)
const { t: _t2, mac: _mac2, n: _n2, ...relayUpdateFields } = Update.properties
export const RelayUpdate = message('relay-update', relayUpdateFields)

/** Agent messages on their way up, naming the agent by its session. */
const AGENT_UP_WITH_SID = [withSid(TunnelOpen), withSid(TunnelClosed), withSid(TunnelNeed), withSid(Snapshot), withSid(JobProgress), withSid(OrderRefused), withSid(UpdateProgress)] as const
export type AgentUpWithSid = Static<(typeof AGENT_UP_WITH_SID)[number]>
/** Server messages on their way down to one agent. */
const AGENT_DOWN_WITH_SID = [withSid(TunnelOffer), withSid(TunnelResult), withSid(TunnelKeepalive), withSid(TunnelClose), withSid(Job), withSid(AgentSettings), withSid(Stop), withSid(Update)] as const
export type AgentDownWithSid = Static<(typeof AGENT_DOWN_WITH_SID)[number]>

export const RelayToServer = messageSet('relay message', [
  AuthBegin, AuthProof, Offline, Stats, RelayJobResult, ResultHeld, RelayUpdateProgress, ...AGENT_UP_WITH_SID
])
export type RelayToServer = ReturnType<typeof RelayToServer.parse>

export const ServerToRelay = messageSet('server message', [
  AuthChallenge, AuthResult, Flags, SettingsMessage, Kick, Prestage, RelayJobResultAck, Installers, RelayUpdate, ...AGENT_DOWN_WITH_SID
])
export type ServerToRelay = ReturnType<typeof ServerToRelay.parse>

export type CacheStatsMessage = Static<typeof CacheStatsSchema>
