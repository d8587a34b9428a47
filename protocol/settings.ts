import { Type, Seconds, Size, strict, compile, type Static } from './schema.js'

/** Fleet-wide settings the server keeps and pushes to relays (hello and `settings`). */
export const SettingsSchema = strict({
  checkinIntervalSeconds: Seconds,
  tunnelIdleTimeoutSeconds: Seconds,
  keepAliveSeconds: Seconds,
  snapshotIntervalSeconds: Type.Integer({ minimum: 1, maximum: 7 * 24 * 3600 }),
  /** Largest artifact upload accepted (bytes). */
  maxUploadBytes: Size
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
