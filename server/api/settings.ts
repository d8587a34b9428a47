import { SettingsSchema, type Settings } from '../../protocol/messages.js'
import { sendJson, fail, readJson } from '../http-util.js'
import type { ApiContext } from './context.js'

/** Each setting's range, from the schema the relays validate it with: the API never stores what a relay would refuse. */
const settingRules = Object.fromEntries(Object.entries(SettingsSchema.properties).map(([key, schema]) =>
  [key, { min: (schema as { minimum: number }).minimum, max: (schema as { maximum: number }).maximum }])) as Record<keyof Settings, { min: number, max: number }>

/** /api/settings: read, and change (pushed to every relay at once). */
export function settingsRoutes (ctx: ApiContext): void {
  const { store, hub, logger, route } = ctx
  route('GET', '/api/settings', async (_req, res) => sendJson(res, 200, await store.getSettings()))

  route('PATCH', '/api/settings', async (req, res) => {
    const body = await readJson(req, ctx.maxBodyBytes)
    const patch: Partial<Settings> = {}
    for (const [key, value] of Object.entries(body)) {
      const rule = settingRules[key as keyof Settings]
      if (rule === undefined) fail('RG_ERR_BAD_REQUEST', `unknown setting "${key}" (known: ${Object.keys(settingRules).join(', ')})`)
      if (typeof value !== 'number' || !Number.isInteger(value) || value < rule.min || value > rule.max) {
        fail('RG_ERR_BAD_REQUEST', `setting "${key}" must be an integer from ${rule.min} to ${rule.max}`)
      }
      patch[key as keyof Settings] = value
    }
    const settings = await store.updateSettings(patch)
    ctx.settings.current = settings
    hub.settingsChanged(settings)
    ctx.cluster?.announce({ kind: 'settings' })
    logger.info({ settings }, 'settings changed')
    ctx.publish('settings')
    sendJson(res, 200, settings)
  })
}
