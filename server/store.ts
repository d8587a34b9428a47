import type { Settings } from '../protocol/messages.js'

/**
 * Everything the server persists. The embedded implementation is SQLite
 * (sqlite-store.ts); the interface is what a PostgreSQL implementation for
 * several server replicas would provide.
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
  /** Runs `fn` as one transaction (nested calls join the outer one). */
  batch: <T>(fn: () => T) => T

  getSettings: () => Settings
  updateSettings: (patch: Partial<Settings>) => Settings
  getMeta: (key: string) => string | undefined
  setMeta: (key: string, value: string) => void

  createRelay: (relay: RelayRecord) => void
  getRelay: (id: string) => RelayRecord | undefined
  findRelayByTokenHash: (tokenHash: string) => RelayRecord | undefined
  listRelays: () => RelayRecord[]
  updateRelay: (id: string, patch: Partial<Omit<RelayRecord, 'id'>>) => void
  revokeRelay: (id: string, at: number) => boolean

  createEndpoint: (endpoint: EndpointRecord) => void
  getEndpoint: (id: string) => EndpointRecord | undefined
  listEndpoints: () => EndpointRecord[]
  /**
   * One page of the endpoints whose name, id or an admitted edge id contains
   * `q` (case-insensitive; '' matches all), in creation order, and how many
   * match: the search and the paging happen in the database.
   */
  findEndpoints: (query: { q: string, offset: number, limit: number }) => { total: number, page: EndpointRecord[] }
  /**
   * Admits an edge id for an endpoint: already admitted, or a free place
   * (fewer than maxAgents admitted) takes it. Returns false when refused.
   */
  admitEdgeId: (endpointId: string, edgeId: string, at: number) => boolean
  listEndpointAgents: (endpointId: string) => EndpointAgentRecord[]
  /** Frees an admitted edge id's place (a cluster node was replaced). */
  removeEndpointAgent: (endpointId: string, edgeId: string) => boolean
  saveSnapshot: (snapshot: SnapshotRecord) => void
  getSnapshot: (endpointId: string) => SnapshotRecord | undefined
  touchEndpoint: (id: string, lastSeen: number, relayId: string | null) => void
  deleteEndpoint: (id: string) => boolean
  /** The keys of a deleted endpoint (the last 10,000), to stop its agents verifiably when they return. */
  getTombstone: (id: string) => { authKey: Buffer, tunnelKey: Buffer, deletedAt: number } | undefined

  recordRefusal: (endpointId: string, edgeId: string, code: string, at: number) => void
  /** Tampering caught end to end, aggregated per (relay, endpoint, edge id, code, kind). */
  recordSecurityEvent: (e: SecurityEventRecord) => void
  listSecurityEvents: (limit: number, filter: { relayId?: string, endpointId?: string }) => SecurityEventRecord[]
  countSecurityEvents: (relayId: string) => number
  listRefusals: (endpointId: string) => RefusalRecord[]

  putArtifact: (artifact: ArtifactRecord) => void
  getArtifact: (name: string) => ArtifactRecord | undefined
  listArtifacts: () => ArtifactRecord[]
  deleteArtifact: (name: string) => boolean
  /** Whether a digest is still referenced (by a name or an unfinished job). */
  digestInUse: (sha256: string) => boolean

  createJob: (job: JobRecord, endpointIds: string[]) => void
  getJob: (id: string) => JobRecord | undefined
  listJobs: (limit: number) => JobRecord[]
  listJobTargets: (jobId: string) => JobTargetRecord[]
  /** One target, by its key (a single-row read: progress messages arrive from every agent). */
  getJobTarget: (jobId: string, endpointId: string) => JobTargetRecord | undefined
  /** How many job targets are in each state (for /metrics); optional for other stores. */
  countJobTargets?: () => Record<string, number>
  /** Targets of an endpoint not yet succeeded or failed, oldest job first. */
  unfinishedTargets: (endpointId: string) => JobTargetRecord[]
  /** Targets not yet succeeded or failed whose job's deadline is at or before `now` (at most `limit`). */
  overdueTargets: (now: number, limit: number) => JobTargetRecord[]
  updateJobTarget: (jobId: string, endpointId: string, patch: Partial<Omit<JobTargetRecord, 'jobId' | 'endpointId'>>) => void

  close: () => void
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
