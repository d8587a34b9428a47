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
 */
import {
  Type, Id, B64, Sha256Hex, Text, NonEmpty, U32, Size, Code, Seconds, message, strict, messageSet, type Static
} from './schema.js'

/** Longest command output kept with a job result (characters, the tail). */
export const MAX_JOB_OUTPUT = 4096
/** Longest error message carried in a message (characters). */
export const MAX_ERROR_MESSAGE = 1000

const Attempt = U32
const Reason = Text(200)
const ErrorBody = strict({ code: Code, message: Text(MAX_ERROR_MESSAGE) })

// --- passed up: agent -> server -------------------------------------------------

export const TunnelOpen = message('tunnel-open', { tunnelId: Id, proof: B64(128) })
export const TunnelClosed = message('tunnel-closed', { tunnelId: Id, reason: Reason })
export const TunnelNeed = message('tunnel-need', {})
export const Snapshot = message('snapshot', {
  reason: NonEmpty(32),
  snapshot: Type.Record(Type.String({ maxLength: 128 }), Type.Unknown(), { maxProperties: 256 })
})
export const ProgressState = Type.Union([Type.Literal('downloading'), Type.Literal('verifying'), Type.Literal('running')])
export const JobProgress = message('job-progress', {
  jobId: Id, attempt: Attempt, state: ProgressState, progress: Type.Number({ minimum: 0, maximum: 1 }), bytes: Size
})
export const AGENT_UP = [TunnelOpen, TunnelClosed, TunnelNeed, Snapshot, JobProgress] as const
export type AgentUp = Static<(typeof AGENT_UP)[number]>

// --- passed down: server -> agent -----------------------------------------------

export const TunnelOffer = message('tunnel-offer', {
  tunnelId: Id, blob: B64(512), target: Type.Union([NonEmpty(2048), Type.Null()]), idleTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 86_400 })
})
export const TunnelResult = message('tunnel-result', {
  tunnelId: Id, ok: Type.Boolean(), code: Type.Optional(Code), message: Type.Optional(Text(MAX_ERROR_MESSAGE))
})
export const TunnelKeepalive = message('tunnel-keepalive', { tunnelId: Id })
export const TunnelClose = message('tunnel-close', { tunnelId: Id, reason: Reason })
export const Job = message('job', {
  jobId: Id,
  attempt: Attempt,
  sha256: Sha256Hex,
  size: Size,
  path: NonEmpty(512),
  run: Type.Union([Type.Array(Text(4096), { minItems: 1, maxItems: 64 }), Type.Null()])
})
export const AGENT_DOWN = [TunnelOffer, TunnelResult, TunnelKeepalive, TunnelClose, Job] as const
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
  bytes: Type.Optional(Size)
})
export type JobResultBody = Static<typeof JobResultBody>
export const JobResult = message('job-result', JobResultBody.properties)

export const Proof = message('proof', { proof: B64(128) })
export const Challenge = message('challenge', { nonce: B64(64), relayId: Id })
export const Welcome = message('welcome', {
  endpointId: Id, relayId: Id, intervalSeconds: Seconds, snapshotIntervalSeconds: Type.Integer({ minimum: 1, maximum: 86_400 }), downloadToken: B64(64)
})
export const JobResultAck = message('job-result-ack', { jobId: Id, attempt: Attempt })

export const AgentToRelay = messageSet('agent message', [Proof, JobResult, ...AGENT_UP])
export type AgentToRelay = ReturnType<typeof AgentToRelay.parse>

export const RelayToAgent = messageSet('relay message', [Challenge, Welcome, JobResultAck, ...AGENT_DOWN])
export type RelayToAgent = ReturnType<typeof RelayToAgent.parse>

/** Kinds the relay passes up to the server (adding the sid) and down to the agent (removing it). */
export const AGENT_UP_KINDS: ReadonlySet<string> = new Set(AGENT_UP.map(s => s.properties.t.const))
export const AGENT_DOWN_KINDS: ReadonlySet<string> = new Set(AGENT_DOWN.map(s => s.properties.t.const))

export function isAgentUp (msg: AgentToRelay): msg is AgentUp {
  return AGENT_UP_KINDS.has(msg.t)
}
