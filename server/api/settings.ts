import { SettingsSchema, type Settings } from '../../protocol/messages.js'
import { Type } from '@sinclair/typebox'
import { sendJson } from '../http-util.js'
import type { ApiContext } from './context.js'

/** Any of the settings, validated with the schema the relays validate them with: the API never stores what a relay would refuse. */
const SettingsPatch = Type.Partial(SettingsSchema, { additionalProperties: false, description: 'The settings to change' })

/** /api/settings: read, and change (pushed to every relay at once). */
export function settingsRoutes (ctx: ApiContext): void {
  const { store, hub, logger, route } = ctx
  route('GET', '/api/settings', { summary: 'The settings in force', role: 'viewer', responses: { 200: 'The settings' } }, async (_req, res) => sendJson(res, 200, await store.getSettings()))

  route('PATCH', '/api/settings', {
    summary: 'Change settings (pushed to every relay at once)',
    role: 'admin',
    audit: 'settings.change',
    body: SettingsPatch,
    responses: { 200: 'The settings now' }
  }, async (_req, res, _params, { body, note }) => {
    const patch: Partial<Settings> = body
    note.target = 'settings'
    note.detail = { ...patch }
    const settings = await store.updateSettings(patch)
    ctx.settings.current = settings
    hub.settingsChanged(settings)
    ctx.cluster?.announce({ kind: 'settings' })
    logger.info({ settings }, 'settings changed')
    ctx.publish('settings')
    sendJson(res, 200, settings)
  })
}
