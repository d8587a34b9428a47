import type { Installers } from '../installers.js'
import type { Logger } from 'pino'
import type { Store, SettingsRef } from '../store.js'
import type { RelayHub } from '../hub.js'
import type { TunnelManager } from '../tunnels.js'
import type { ArtifactStore } from '../artifacts.js'
import type { JobManager } from '../jobs.js'
import type { UpdateManager } from '../updates.js'
import type { EventTopic } from '../events.js'
import type { SecurityLog } from '../security.js'
import type { CacheStatsMessage } from '../../protocol/messages.js'
import type { ClusterMessage } from '../cluster.js'
import type { LivePresence, RelayLocation } from '../cluster-store.js'
import type { TunnelInfo } from '../tunnels.js'
import type { TSchema, Static } from '@sinclair/typebox'
import type { AccessControl, AuditLog, Authorize } from '../access.js'
import type { Method, RouteHandler, RouteSpec } from './route.js'

/** What the API needs of the other replicas when the server is one of several (null when alone). */
export interface ClusterView {
  readonly replicaId: string
  /** Tells the other replicas about a change written to the database. */
  announce: (msg: ClusterMessage) => void
  /** Agents online at other replicas, by endpoint. */
  remotePresence: (endpointIds: string[]) => Promise<Map<string, LivePresence[]>>
  /** Relays linked to other replicas. */
  remoteRelays: () => Promise<Map<string, RelayLocation>>
  /** Tunnels held by other replicas, by endpoint. */
  remoteTunnels: (endpointIds: string[]) => Promise<Map<string, TunnelInfo>>
}

/** The figures a relay last reported. */
export interface RelayFigures { agents: number, queuedResults: number, cache: CacheStatsMessage }

export interface ApiOptions {
  store: Store
  /** The settings in force (PATCH /api/settings replaces them). */
  settings: SettingsRef
  hub: RelayHub
  tunnels: TunnelManager
  artifacts: ArtifactStore
  jobs: JobManager
  updates: UpdateManager
  security: SecurityLog
  /** Latest figures a relay reported (cache, queued results). */
  relayStats: (relayId: string) => RelayFigures | undefined
  logger: Logger
  version: string
  /** The caller's token (RG_ERR_UNAUTHORIZED without a valid one, RG_ERR_FORBIDDEN below the role). */
  authorize: Authorize
  /** The API tokens (issue 17); absent in some API tests. */
  access?: AccessControl
  /** The audit log (issue 17). */
  audit: AuditLog
  /** A token was created or revoked: other replicas read the tokens again. */
  tokensChanged?: () => void
  cluster: ClusterView | null
  maxBodyBytes: number
  /** Server URL for join tokens. */
  publicUrl: () => string
  /** Change notifications for the dashboard. */
  events?: { publish: (topic: EventTopic) => void }
  /** The one-file executables and the install commands made from them (absent in some API tests). */
  installers?: Installers
}

export type { Params, Method } from './route.js'

/** What each resource module gets: the options, and `route` to register its routes (each with its spec: role, body schema, audit action). */
export interface ApiContext extends ApiOptions {
  route: <B extends TSchema = TSchema>(method: Method, path: string, spec: RouteSpec<B>, handler: RouteHandler<Static<B>>) => void
  publish: (topic: EventTopic) => void
}

export const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()
