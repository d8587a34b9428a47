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
  edgeId: string | null
  createdAt: number
  lastSeen: number | null
  relayId: string | null
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
  /** Associates an edge id if none is; returns the edge id now associated. */
  associateEdgeId: (endpointId: string, edgeId: string) => string
  touchEndpoint: (id: string, lastSeen: number, relayId: string | null) => void
  deleteEndpoint: (id: string) => boolean

  recordRefusal: (endpointId: string, edgeId: string, code: string, at: number) => void
  listRefusals: (endpointId: string) => RefusalRecord[]

  close: () => void
}
