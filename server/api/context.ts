import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Store, SettingsRef } from '../store.js'
import type { RelayHub } from '../hub.js'
import type { TunnelManager } from '../tunnels.js'
import type { ArtifactStore } from '../artifacts.js'
import type { JobManager } from '../jobs.js'
import type { EventTopic } from '../events.js'
import type { SecurityLog } from '../security.js'
import type { CacheStatsMessage } from '../../protocol/messages.js'

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
  security: SecurityLog
  /** Latest figures a relay reported (cache, queued results). */
  relayStats: (relayId: string) => RelayFigures | undefined
  logger: Logger
  version: string
  adminTokenHash: string
  maxBodyBytes: number
  /** Server URL for join tokens. */
  publicUrl: () => string
  /** Change notifications for the dashboard. */
  events?: { publish: (topic: EventTopic) => void }
}

export type Params = Record<string, string | undefined>
export type Handler = (req: IncomingMessage, res: ServerResponse, params: Params) => Promise<void> | void
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** What each resource module gets: the options, and `route` to register its routes (all behind the admin token). */
export interface ApiContext extends ApiOptions {
  route: (method: Method, path: string, handler: Handler) => void
  publish: (topic: EventTopic) => void
}

export const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()
