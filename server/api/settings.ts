import { SettingsSchema, type Settings } from '../../protocol/messages.js'
import { Type } from '@sinclair/typebox'
import { sendJson } from '../http-util.js'
import type { ApiContext } from './context.js'

/** The server's own settings (not sent to relays). */
const ServerSettings = {
  auditRetentionDays: Type.Integer({ minimum: 1, maximum: 36_500, description: 'audit log entries older than this many days are deleted' })
}

/**
 * Any of the settings: the fleet's validated with the schema the relays
 * validate them with (the API never stores what a relay would refuse), and
 * the server's own.
 */
const SettingsPatch = Type.Partial(Type.Object({ ...SettingsSchema.properties, ...ServerSettings }), { additionalProperties: false, description: 'The settings to change' })

/** /api/settings: read, and change (pushed to every relay at once). */
export function settingsRoutes (ctx: ApiContext): void {
  const { store, hub, logger, route } = ctx
  const all = async (): Promise<Settings & { auditRetentionDays: number }> => ({ ...await store.getSettings(), auditRetentionDays: ctx.audit.retentionDays })
  route('GET', '/api/settings', { summary: 'The settings in force', role: 'viewer', responses: { 200: 'The settings' } }, async (_req, res) => sendJson(res, 200, await all()))

  route('PATCH', '/api/settings', {
    summary: 'Change settings (pushed to every relay at once)',
    role: 'admin',
    audit: 'settings.change',
    body: SettingsPatch,
    responses: { 200: 'The settings now' }
  }, async (_req, res, _params, { body, note }) => {
    const { auditRetentionDays, ...patch } = body
    note.target = 'settings'
    note.detail = { ...body }
    if (auditRetentionDays !== undefined) await ctx.audit.setRetention(auditRetentionDays)
    if (Object.keys(patch).length > 0) {
      // The fleet's settings: pushed to every relay at once.
      const settings = await store.updateSettings(patch as Partial<Settings>)
      ctx.settings.current = settings
      hub.settingsChanged(settings)
    }
    ctx.cluster?.announce({ kind: 'settings' })
    logger.info({ settings: ctx.settings.current, auditRetentionDays: ctx.audit.retentionDays }, 'settings changed')
    ctx.publish('settings')
    sendJson(res, 200, await all())
  })
}
