import { Type } from '@sinclair/typebox'
import { sendJson, fail } from '../http-util.js'
import { Body, Field } from './route.js'
import { iso, type ApiContext } from './context.js'

export interface ArtifactView { name: string, sha256: string, size: number, createdAt: string | null }

export function artifactView (a: { name: string, sha256: string, size: number, createdAt: number }): ArtifactView {
  return { name: a.name, sha256: a.sha256, size: a.size, createdAt: iso(a.createdAt) }
}

/** /api/artifacts: upload (raw body), list, show, delete, prestage on relays. */
export function artifactRoutes (ctx: ApiContext): void {
  const { store, hub, artifacts, route } = ctx
  // An existing name is replaced only when asked (?replace=1): refused before any byte is read.
  route('PUT', '/api/artifacts/:name', {
    summary: 'Upload an artifact (the raw bytes as the body); an existing name only with ?replace=1',
    role: 'operator',
    audit: 'artifact.upload',
    rawBody: 'application/octet-stream',
    query: { replace: Type.String({ pattern: '^(1|true|yes|0|false|no)$', description: '1 (or true, yes): replace an artifact of that name' }) },
    responses: { 201: '{name, sha256, size, createdAt}', 409: 'RG_ERR_ARTIFACT_EXISTS: the name is taken and replace was not asked' }
  }, async (req, res, params, { query, note }) => {
    const replace = ['1', 'true', 'yes'].includes(query.get('replace') ?? '')
    const existing = replace ? undefined : await store.getArtifact(params.name ?? '')
    if (existing !== undefined) {
      res.setHeader('connection', 'close') // the body is not read
      fail('RG_ERR_ARTIFACT_EXISTS', `an artifact named ${existing.name} exists (sha256 ${existing.sha256.slice(0, 12)}…): upload with ?replace=1 to replace it, or use another name`)
    }
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length'])
    const record = await artifacts.upload(params.name ?? '', req, declared, ctx.settings.current.maxUploadBytes)
    note.detail = { sha256: record.sha256, size: record.size, replace }
    await ctx.installers?.refresh()
    ctx.publish('artifacts')
    sendJson(res, 201, artifactView(record))
  })

  route('GET', '/api/artifacts', { summary: 'List artifacts', role: 'viewer', responses: { 200: 'A list of artifacts' } }, async (_req, res) => sendJson(res, 200, (await store.listArtifacts()).map(artifactView)))

  route('GET', '/api/artifacts/:name', { summary: 'One artifact', role: 'viewer', responses: { 200: 'The artifact' } }, async (_req, res, params) => {
    const a = await store.getArtifact(params.name ?? '')
    if (a === undefined) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    sendJson(res, 200, artifactView(a))
  })

  route('DELETE', '/api/artifacts/:name', { summary: 'Delete an artifact', role: 'operator', audit: 'artifact.delete', responses: { 204: 'Deleted' } }, async (_req, res, params) => {
    if (!await artifacts.delete(params.name ?? '')) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    await ctx.installers?.refresh()
    ctx.publish('artifacts')
    res.writeHead(204).end()
  })

  route('POST', '/api/artifacts/:name/prestage', {
    summary: 'Fill relays\' caches with an artifact ahead of a job',
    role: 'operator',
    audit: 'artifact.prestage',
    body: Body({ relays: Type.Optional(Field.ids('relay', 100_000)) }),
    responses: { 202: '{name, sha256, relays}: how many relays were asked' }
  }, async (_req, res, params, { body }) => {
    const a = await store.getArtifact(params.name ?? '')
    if (a === undefined) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    const relays = body.relays
    const targets = relays ?? [undefined]
    let sent = 0
    for (const relayId of targets) sent += hub.sendToRelays({ t: 'prestage', sha256: a.sha256 }, relayId)
    if (ctx.cluster !== null) {
      // Relays linked to other replicas: those replicas send it down their links.
      const elsewhere = [...(await ctx.cluster.remoteRelays()).keys()].filter(id => relays === undefined || relays.includes(id))
      // A notification carries at most 8,000 bytes: 200 relay ids at a time.
      for (let at = 0; at < elsewhere.length; at += 200) ctx.cluster.announce({ kind: 'prestage', sha256: a.sha256, relays: elsewhere.slice(at, at + 200) })
      sent += elsewhere.length
    }
    sendJson(res, 202, { name: a.name, sha256: a.sha256, relays: sent })
  })
}
