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

export interface Store {
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

  recordRefusal: (endpointId: string, edgeId: string, code: string, at: number) => void
  listRefusals: (endpointId: string) => RefusalRecord[]

  close: () => void
}
