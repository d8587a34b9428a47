/**
 * Control messages of the agent link (agent <-> relay), including the ones
 * the relay passes between agent and server. Each direction is one schema;
 * the relay adds the agent's `sid` going up and strips it going down
 * (relay-messages.ts).
 *
 *   relay -> agent  challenge {nonce, relayId}       (again after the relay re-links: re-authentication)
 *   agent -> relay  proof {proof}
 *   relay -> agent  welcome {endpointId, relayId, intervalSeconds, snapshotIntervalSeconds, downloadToken}
 *   agent -> relay  job-result {jobId, attempt, state, exitCode?, error?, output?, bytes?}
 *   relay -> agent  job-result-ack {jobId, attempt}  once stored on the relay's disk
 *   relay -> agent  job-result-nack {jobId, attempt, code, message, retryInSeconds}  not stored (disk full,
 *                   queue full): the agent sends the result again after the delay, while connected
 *
 * Passed up, agent -> server:
 *   tunnel-open {tunnelId, proof}        HMAC with the one-time credential: first valid one wins
 *   tunnel-closed {tunnelId, reason}     idle timeout (after a snapshot)
 *   tunnel-need {}                       saw the flag without an offer
 *   snapshot {reason, snapshot}
 *   job-progress {jobId, attempt, state, progress, bytes}
 *
 * Passed down, server -> agent:
 *   tunnel-offer {tunnelId, blob, target, idleTimeoutSeconds}   blob: AES-GCM sealed credential
 *   tunnel-result {tunnelId, ok, code?, message?}
 *   tunnel-keepalive {tunnelId}          while an admin is active
 *   tunnel-close {tunnelId, reason}
 *   job {jobId, attempt, sha256, size, path, run}
 *   update {updateId, version, sha256, size, healthSeconds, deadline}   replace this executable (issue 16)
 *
 * Passed up, agent -> server (issue 16):
 *   update-progress {updateId, version, state, progress, bytes, code?, message?}   on the way, and the
 *                   outcome (succeeded after the restart, or failed/rolled back), sent again at every
 *                   connect until the next update: the server applies it once
 */
import {
  Type, Id, B64, Sha256Hex, Text, NonEmpty, U32, Size, Code, Seconds, BuildVersion, message, strict, messageSet, type Static
} from './schema.js'
import type { TProperties } from '@sinclair/typebox'

/** Longest command output kept with a job result (characters, the tail). */
export const MAX_JOB_OUTPUT = 4096
/** Longest error message carried in a message (characters). */
export const MAX_ERROR_MESSAGE = 1000

const Attempt = U32
const Reason = Text(200)
const ErrorBody = strict({ code: Code, message: Text(MAX_ERROR_MESSAGE) })
/** HMAC-SHA256, base64url (protocol/e2e.ts): the relay cannot make one. */
const Mac = B64(64)
/** An order's counter under the agent's nonce of the session: it only grows. */
const Counter = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
/** Every report an agent sends up carries its MAC (keyed by the endpoint secret and edge id). */
const report = <N extends string, P extends TProperties>(t: N, fields: P) => message(t, { ...fields, mac: Mac })
/** Every order the server sends down carries a counter and a MAC bound to the agent's session nonce. */
const order = <N extends string, P extends TProperties>(t: N, fields: P) => message(t, { ...fields, n: Counter, mac: Mac })

// --- passed up: agent -> server -------------------------------------------------

export const TunnelOpen = report('tunnel-open', { tunnelId: Id, proof: B64(128) })
export const TunnelClosed = report('tunnel-closed', { tunnelId: Id, reason: Reason })
export const TunnelNeed = report('tunnel-need', {})
export const Snapshot = report('snapshot', {
  reason: NonEmpty(32),
  /** When the agent took it (its clock, ms): the server keeps only newer ones, so an old one cannot be replayed. */
  takenAt: Size,
  snapshot: Type.Record(Type.String({ maxLength: 128 }), Type.Unknown(), { maxProperties: 256 })
})
export const ProgressState = Type.Union([Type.Literal('downloading'), Type.Literal('verifying'), Type.Literal('running')])
export const JobProgress = report('job-progress', {
  jobId: Id, attempt: Attempt, state: ProgressState, progress: Type.Number({ minimum: 0, maximum: 1 }), bytes: Size
})
/** The agent refused an order (forged or replayed): it tells the server, authenticated, so the relay cannot hide it by forging. */
export const OrderRefused = report('order-refused', { kind: NonEmpty(32), ref: Text(64), code: Code, message: Text(MAX_ERROR_MESSAGE) })
/** Where a self-update is: on the way (downloading … restarting) or its outcome (issue 16). */
export const UpdateState = Type.Union([
  Type.Literal('downloading'), Type.Literal('verifying'), Type.Literal('installing'), Type.Literal('restarting'),
  Type.Literal('succeeded'), Type.Literal('failed')
])
export const UpdateProgress = report('update-progress', {
  updateId: Id,
  /** The version the update is to. */
  version: BuildVersion,
  state: UpdateState,
  progress: Type.Number({ minimum: 0, maximum: 1 }),
  bytes: Size,
  /** The version running as this is sent. */
  running: BuildVersion,
  code: Type.Optional(Code),
  message: Type.Optional(Text(MAX_ERROR_MESSAGE))
})
export const AGENT_UP = [TunnelOpen, TunnelClosed, TunnelNeed, Snapshot, JobProgress, OrderRefused, UpdateProgress] as const
export type AgentUp = Static<(typeof AGENT_UP)[number]>

// --- passed down: server -> agent -----------------------------------------------

export const TunnelOffer = order('tunnel-offer', {
  tunnelId: Id, blob: B64(512), target: Type.Union([NonEmpty(2048), Type.Null()]), idleTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 86_400 })
})
export const TunnelResult = order('tunnel-result', {
  tunnelId: Id, ok: Type.Boolean(), code: Type.Optional(Code), message: Type.Optional(Text(MAX_ERROR_MESSAGE))
})
export const TunnelKeepalive = order('tunnel-keepalive', { tunnelId: Id })
export const TunnelClose = order('tunnel-close', { tunnelId: Id, reason: Reason })
export const Job = order('job', {
  jobId: Id,
  attempt: Attempt,
  sha256: Sha256Hex,
  size: Size,
  path: NonEmpty(512),
  run: Type.Union([Type.Array(Text(4096), { minItems: 1, maxItems: 64 }), Type.Null()]),
  /** The agent stops waiting for a relay (and the server fails the target) then: ms since the epoch. */
  deadline: Type.Integer({ minimum: 0, maximum: 2 ** 53 - 1 })
})
/** Settings that change what the agent does (the relay cannot make an agent snapshot every second). */
export const AgentSettings = order('agent-settings', { snapshotIntervalSeconds: Type.Integer({ minimum: 10, maximum: 86_400 }) })
/** The server refuses this agent for good (its endpoint was deleted): the agent stops (exit 3). */
export const Stop = order('stop', { code: Code, message: Text(MAX_ERROR_MESSAGE) })
/**
 * Replace this executable with another build (issue 16): download it through
 * the relay, check its sha256 and that it runs as `version`, install it beside
 * the current one, switch and restart; back on the old one by itself unless
 * the new one is online within `healthSeconds`.
 */
export const Update = order('update', {
  updateId: Id,
  version: BuildVersion,
  sha256: Sha256Hex,
  size: Size,
  healthSeconds: Type.Integer({ minimum: 5, maximum: 3600 }),
  /** The rollout's deadline (ms since the epoch): a download still waiting for a relay then gives up. */
  deadline: Type.Integer({ minimum: 0, maximum: 2 ** 53 - 1 })
})
export const AGENT_DOWN = [TunnelOffer, TunnelResult, TunnelKeepalive, TunnelClose, Job, AgentSettings, Stop, Update] as const
export type AgentDown = Static<(typeof AGENT_DOWN)[number]>

// --- agent <-> relay ------------------------------------------------------------

export const JobResultState = Type.Union([Type.Literal('succeeded'), Type.Literal('failed')])
/** A job's outcome as the agent reports it (and the relay stores and replays it). */
export const JobResultBody = strict({
  jobId: Id,
  attempt: Attempt,
  state: JobResultState,
  exitCode: Type.Optional(Type.Integer({ minimum: -1, maximum: 255 })),
  error: Type.Optional(ErrorBody),
  output: Type.Optional(Text(MAX_JOB_OUTPUT)),
  bytes: Type.Optional(Size),
  mac: Mac
})
export type JobResultBody = Static<typeof JobResultBody>
export const JobResult = message('job-result', JobResultBody.properties)

/** The proof of the endpoint secret, and the agent's fresh nonce that this session's orders will be bound to. */
export const Proof = message('proof', { proof: B64(128), agentNonce: B64(64) })
export const Challenge = message('challenge', { nonce: B64(64), relayId: Id })
export const Welcome = message('welcome', {
  endpointId: Id, relayId: Id, intervalSeconds: Seconds, downloadToken: B64(64)
})
export const JobResultAck = message('job-result-ack', { jobId: Id, attempt: Attempt })
export const JobResultNack = message('job-result-nack', { jobId: Id, attempt: Attempt, code: Code, message: Text(MAX_ERROR_MESSAGE), retryInSeconds: Seconds })

export const AgentToRelay = messageSet('agent message', [Proof, JobResult, ...AGENT_UP])
export type AgentToRelay = ReturnType<typeof AgentToRelay.parse>

export const RelayToAgent = messageSet('relay message', [Challenge, Welcome, JobResultAck, JobResultNack, ...AGENT_DOWN])
export type RelayToAgent = ReturnType<typeof RelayToAgent.parse>

/** Kinds the relay passes up to the server (adding the sid). */
export const AGENT_UP_KINDS: ReadonlySet<string> = new Set(AGENT_UP.map(s => s.properties.t.const))

export function isAgentUp (msg: AgentToRelay): msg is AgentUp {
  return AGENT_UP_KINDS.has(msg.t)
}

/** A report before the agent adds its MAC. */
export type UnsignedReport = AgentUp extends infer R ? R extends { mac: string } ? Omit<R, 'mac'> : never : never
/** A job result before the agent adds its MAC. */
export type UnsignedJobResult = Omit<JobResultBody, 'mac'>
/** An order before the server adds its counter and MAC. */
export type UnsignedOrder = AgentDown extends infer O ? O extends { n: number, mac: string } ? Omit<O, 'n' | 'mac'> : never : never
