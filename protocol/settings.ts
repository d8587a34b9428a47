import { Type, strict, compile, type Static } from './schema.js'

/**
 * Fleet-wide settings the server keeps and pushes to relays (hello and
 * `settings`). The ranges are the API's too (PATCH /api/settings), so the
 * server never stores a value a relay would refuse.
 */
export const SettingsSchema = strict({
  /** Carried in every check-in answer as u16 seconds. */
  checkinIntervalSeconds: Type.Integer({ minimum: 1, maximum: 300 }),
  tunnelIdleTimeoutSeconds: Type.Integer({ minimum: 2, maximum: 86_400 }),
  keepAliveSeconds: Type.Integer({ minimum: 1, maximum: 3600 }),
  snapshotIntervalSeconds: Type.Integer({ minimum: 10, maximum: 86_400 }),
  /** Largest artifact upload accepted (bytes). */
  maxUploadBytes: Type.Integer({ minimum: 1, maximum: 1024 ** 4 })
})
export type Settings = Static<typeof SettingsSchema>

export const DEFAULT_SETTINGS: Settings = {
  checkinIntervalSeconds: 5,
  tunnelIdleTimeoutSeconds: 300,
  keepAliveSeconds: 60,
  snapshotIntervalSeconds: 600,
  maxUploadBytes: 10 * 1024 ** 3
}

export const parseSettings = compile('settings', SettingsSchema)
