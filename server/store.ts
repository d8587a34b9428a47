import type { Settings } from '../protocol/messages.js'
import type { UpdateStore } from './update-store.js'
import type { AccessStore } from './access-store.js'

/**
 * Everything the server persists, asynchronous and transactional. One set
 * of queries (sql-store.ts) over two drivers: the embedded SQLite file in
 * the data dir (sqlite-store.ts, the default) and PostgreSQL
 * (pg-store.ts, `--database-url`).
 */
export interface RelayRecord {
  id: string
  name: string
  tokenHash: string
  createdAt: number
  revokedAt: number | null
  fingerprint: string | null
  wsUrl: string | null
  wssUrl: string | null
  version: string | null
  lastSeen: number | null
}

export interface EndpointRecord {
  id: string
  name: string
  tunnelTarget: string | null
  /** HKDF of the endpoint secret for agent authentication (the secret itself is never stored). */
  authKey: Buffer
  /** HKDF of the endpoint secret for tunnel credentials (issue 3). */
  tunnelKey: Buffer
  /** The first edge id admitted (the only one unless the endpoint is a cluster). */
  edgeId: string | null
  createdAt: number
  lastSeen: number | null
  relayId: string | null
  /** How many distinct edge ids (agents) may serve this endpoint: 1, or more for a cluster. */
  maxAgents: number
  /** Labels to target groups of endpoints (jobs, updates, lists): site-a, db, … (absent = none). */
  tags?: string[]
}

export interface EndpointAgentRecord {
  endpointId: string
  edgeId: string
  admittedAt: number
  lastSeen: number | null
}

export interface SnapshotRecord {
  endpointId: string
  edgeId: string
  receivedAt: number
  /** Why it was sent: connect, interval, tunnel-close. */
  reason: string
  snapshot: Record<string, unknown>
}

export interface RefusalRecord {
  endpointId: string
  edgeId: string
  code: string
  count: number
  firstAt: number
  lastAt: number
}

export interface ArtifactRecord {
  name: string
  sha256: string
  size: number
  createdAt: number
}

export type JobTargetState = 'queued' | 'downloading' | 'verifying' | 'running' | 'succeeded' | 'failed'

/** A job's deadline when its creator names none: a day. */
export const DEFAULT_JOB_DEADLINE_MS = 24 * 3600 * 1000

export interface JobRecord {
  id: string
  artifact: string
  sha256: string
  size: number
  /** Where to place it, relative to the agent's files dir. */
  path: string
  run: string[] | null
  createdAt: number
  /** Targets not finished by then fail with RG_ERR_JOB_DEADLINE; agents stop waiting for a relay then (ms since the epoch). */
  deadline: number
}

export interface JobTargetRecord {
  jobId: string
  endpointId: string
  state: JobTargetState
  progress: number
  bytes: number
  /** Dispatch attempt; a result is applied once per (job, endpoint, attempt). */
  attempt: number
  /** The relay the current attempt went through (only it may report the result). */
  relayId: string | null
  exitCode: number | null
  errorCode: string | null
  errorMessage: string | null
  output: string | null
  updatedAt: number
}

export interface Store {
  /**
   * Runs `fn` as one transaction on `tx` (a store bound to it): all of its
   * writes or none. Calls on `tx` inside a transaction join it.
   */
  transaction: <T>(fn: (tx: Store) => Promise<T>) => Promise<T>

  getSettings: () => Promise<Settings>
  updateSettings: (patch: Partial<Settings>) => Promise<Settings>
  getMeta: (key: string) => Promise<string | undefined>
  setMeta: (key: string, value: string) => Promise<void>

  createRelay: (relay: RelayRecord) => Promise<void>
  getRelay: (id: string) => Promise<RelayRecord | undefined>
  findRelayByTokenHash: (tokenHash: string) => Promise<RelayRecord | undefined>
  listRelays: () => Promise<RelayRecord[]>
  updateRelay: (id: string, patch: Partial<Omit<RelayRecord, 'id'>>) => Promise<void>
  revokeRelay: (id: string, at: number) => Promise<boolean>

  createEndpoint: (endpoint: EndpointRecord) => Promise<void>
  getEndpoint: (id: string) => Promise<EndpointRecord | undefined>
  /** An endpoint and whether `edgeId` is admitted to it, in one read (an agent beginning to authenticate). */
  getEndpointForAgent: (id: string, edgeId: string) => Promise<{ endpoint: EndpointRecord, admitted: boolean } | undefined>
  listEndpoints: () => Promise<EndpointRecord[]>
  /**
   * One page of the endpoints whose name, id or an admitted edge id contains
   * `q` (case-insensitive; '' matches all) and that carry every one of
   * `tags`, in creation order, and how many match: the search and the paging
   * happen in the database.
   */
  findEndpoints: (query: { q: string, offset: number, limit: number, tags?: string[] }) => Promise<{ total: number, page: EndpointRecord[] }>
  /** Renames an endpoint, replaces its tags or its keys (a re-issued join token); false when there is no such endpoint. */
  updateEndpoint: (id: string, patch: { name?: string, tags?: string[], authKey?: Buffer, tunnelKey?: Buffer }) => Promise<boolean>
  /**
   * Admits an edge id for an endpoint: already admitted (a read: its last
   * seen time is written with presence, touchEndpoints), or a free place
   * (fewer than maxAgents admitted) takes it. Returns false when refused.
   * Atomic under concurrent callers: the first ones win the places.
   */
  admitEdgeId: (endpointId: string, edgeId: string, at: number) => Promise<boolean>
  /** The admitted agents of these endpoints (one query per 500 ids: a page of endpoints costs one round trip, not one per endpoint). */
  listEndpointAgents: (endpointIds: string[]) => Promise<EndpointAgentRecord[]>
  /** Frees an admitted edge id's place (a cluster node was replaced). */
  removeEndpointAgent: (endpointId: string, edgeId: string) => Promise<boolean>
  /**
   * Keeps each endpoint's snapshot (one per endpoint in the batch): it
   * replaces the kept one unless that one is from the same agent and was
   * taken at or after it (`snapshot.takenAt`, ms): a replay does not win.
   */
  saveSnapshots: (snapshots: SnapshotRecord[]) => Promise<void>
  getSnapshot: (endpointId: string) => Promise<SnapshotRecord | undefined>
  /** Presence, many endpoints in one write: last seen, and the relay (null keeps the one recorded). */
  touchEndpoints: (touches: EndpointTouch[]) => Promise<void>
  deleteEndpoint: (id: string) => Promise<boolean>
  /** The keys of a deleted endpoint (the last 10,000), to stop its agents verifiably when they return. */
  getTombstone: (id: string) => Promise<{ authKey: Buffer, tunnelKey: Buffer, deletedAt: number } | undefined>

  recordRefusal: (endpointId: string, edgeId: string, code: string, at: number) => Promise<void>
  /** Tampering caught end to end, aggregated per (relay, endpoint, edge id, code, kind). */
  recordSecurityEvent: (e: SecurityEventRecord) => Promise<void>
  listSecurityEvents: (limit: number, filter: { relayId?: string, endpointId?: string }) => Promise<SecurityEventRecord[]>
  countSecurityEvents: (relayId: string) => Promise<number>
  /** The refusals recorded for these endpoints, newest first (batched as listEndpointAgents). */
  listRefusals: (endpointIds: string[]) => Promise<RefusalRecord[]>
  /** The agent version in each endpoint's latest snapshot (endpoints without one are absent). */
  listAgentVersions: (endpointIds: string[]) => Promise<Map<string, string>>
  /** What each endpoint's latest snapshot says of its agent: version, whether it runs commands (endpoints without one are absent). */
  listAgentFacts: (endpointIds: string[]) => Promise<Map<string, AgentFacts>>

  /**
   * Spends a one-time tunnel credential: true for the first caller only,
   * whichever server process it is. Spent ids are kept a day.
   */
  spendCredential: (tunnelId: string, at: number) => Promise<boolean>

  putArtifact: (artifact: ArtifactRecord) => Promise<void>
  getArtifact: (name: string) => Promise<ArtifactRecord | undefined>
  listArtifacts: () => Promise<ArtifactRecord[]>
  deleteArtifact: (name: string) => Promise<boolean>
  /** Whether a digest is still referenced (by a name or an unfinished job). */
  digestInUse: (sha256: string) => Promise<boolean>

  createJob: (job: JobRecord, endpointIds: string[]) => Promise<void>
  getJob: (id: string) => Promise<JobRecord | undefined>
  listJobs: (limit: number) => Promise<JobRecord[]>
  listJobTargets: (jobId: string) => Promise<JobTargetRecord[]>
  /** One target, by its key (a single-row read: progress messages arrive from every agent). */
  getJobTarget: (jobId: string, endpointId: string) => Promise<JobTargetRecord | undefined>
  /**
   * Starts the next attempt of an unfinished target through `relayId`
   * (one statement: concurrent dispatches get distinct attempts); its
   * number, or undefined when the target is finished or gone.
   */
  nextAttempt: (jobId: string, endpointId: string, relayId: string, at: number) => Promise<number | undefined>
  /** How many job targets are in each state (for /metrics). */
  countJobTargets: () => Promise<Record<string, number>>
  /** Targets of these endpoints not yet succeeded or failed, oldest job first (batched as listEndpointAgents). */
  unfinishedTargets: (endpointIds: string[]) => Promise<JobTargetRecord[]>
  /** Targets not yet succeeded or failed whose job's deadline is at or before `now` (at most `limit`). */
  overdueTargets: (now: number, limit: number) => Promise<JobTargetRecord[]>
  /**
   * Changes a target. With `onlyAttempt`, only while it is unfinished and at
   * that attempt (false otherwise): a result is applied once per (job,
   * endpoint, attempt), whoever else writes.
   */
  updateJobTarget: (jobId: string, endpointId: string, patch: Partial<Omit<JobTargetRecord, 'jobId' | 'endpointId'>>, onlyAttempt?: number) => Promise<boolean>

  /** Self-update rollouts (issue 16). */
  readonly updates: UpdateStore

  /** API tokens and the audit log (issue 17). */
  readonly access: AccessStore

  close: () => Promise<void>
}

/** What an agent's snapshot says of it (absent: an older agent did not say). */
export interface AgentFacts { version?: string, allowExec?: boolean }

/** The settings in force, kept in memory (read on every agent and tunnel), replaced when they change. */
export interface SettingsRef {
  current: Settings
}

/** Of two touches of one endpoint, the one that stands: the later, naming the relay of either (null keeps the one named). */
export function laterTouch (a: EndpointTouch, b: EndpointTouch): EndpointTouch {
  const [older, newer] = a.lastSeen > b.lastSeen ? [b, a] : [a, b]
  return { ...newer, relayId: newer.relayId ?? older.relayId }
}

export interface EndpointTouch {
  id: string
  /** The admitted agent seen (its last seen time too), or null for the endpoint only. */
  edgeId: string | null
  lastSeen: number
  relayId: string | null
}

/** Tampering caught end to end: one row per (relay, endpoint, edge id, code, kind), counted, with the latest ref and message. */
export interface SecurityEventRecord {
  relayId: string
  endpointId: string | null
  edgeId: string | null
  /** RG_ERR_REPORT_FORGED, RG_ERR_ORDER_FORGED, RG_ERR_ORDER_REPLAYED, RG_ERR_TUNNEL_TAMPERED. */
  code: string
  /** The message kind: job, job-result, snapshot, tunnel-offer, tunnel-stream, ... */
  kind: string
  /** What the latest one was about: a job id, a tunnel id, or ''. */
  ref: string
  message: string
  count: number
  firstAt: number
  lastAt: number
}
