import { sendJson, fail, readJson, rejectUnknownFields } from '../http-util.js'
import { iso, type ApiContext } from './context.js'

export interface ArtifactView { name: string, sha256: string, size: number, createdAt: string | null }

export function artifactView (a: { name: string, sha256: string, size: number, createdAt: number }): ArtifactView {
  return { name: a.name, sha256: a.sha256, size: a.size, createdAt: iso(a.createdAt) }
}

/** /api/artifacts: upload (raw body), list, show, delete, prestage on relays. */
export function artifactRoutes (ctx: ApiContext): void {
  const { store, hub, artifacts, route } = ctx
  // An existing name is replaced only when asked (?replace=1): refused before any byte is read.
  route('PUT', '/api/artifacts/:name', async (req, res, params) => {
    const replace = ['1', 'true', 'yes'].includes(new URL(req.url ?? '/', 'http://x').searchParams.get('replace') ?? '')
    const existing = replace ? undefined : await store.getArtifact(params.name ?? '')
    if (existing !== undefined) {
      res.setHeader('connection', 'close') // the body is not read
      fail('RG_ERR_ARTIFACT_EXISTS', `an artifact named ${existing.name} exists (sha256 ${existing.sha256.slice(0, 12)}…): upload with ?replace=1 to replace it, or use another name`)
    }
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length'])
    const record = await artifacts.upload(params.name ?? '', req, declared, ctx.settings.current.maxUploadBytes)
    await ctx.installers?.refresh()
    ctx.publish('artifacts')
    sendJson(res, 201, artifactView(record))
  })

  route('GET', '/api/artifacts', async (_req, res) => sendJson(res, 200, (await store.listArtifacts()).map(artifactView)))

  route('GET', '/api/artifacts/:name', async (_req, res, params) => {
    const a = await store.getArtifact(params.name ?? '')
    if (a === undefined) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    sendJson(res, 200, artifactView(a))
  })

  route('DELETE', '/api/artifacts/:name', async (_req, res, params) => {
    if (!await artifacts.delete(params.name ?? '')) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    await ctx.installers?.refresh()
    ctx.publish('artifacts')
    res.writeHead(204).end()
  })

  route('POST', '/api/artifacts/:name/prestage', async (req, res, params) => {
    const a = await store.getArtifact(params.name ?? '')
    if (a === undefined) fail('RG_ERR_ARTIFACT_UNKNOWN', `no artifact named ${params.name}`)
    const body = await readJson(req, ctx.maxBodyBytes)
    rejectUnknownFields(body, ['relays'])
    const relays = body.relays
    if (relays !== undefined && (!Array.isArray(relays) || relays.some(r => typeof r !== 'string'))) fail('RG_ERR_BAD_REQUEST', 'field "relays" must be a list of relay ids')
    const targets = (relays as string[] | undefined) ?? [undefined]
    let sent = 0
    for (const relayId of targets) sent += hub.sendToRelays({ t: 'prestage', sha256: a.sha256 }, relayId)
    if (ctx.cluster !== null) {
      // Relays linked to other replicas: those replicas send it down their links.
      const elsewhere = [...(await ctx.cluster.remoteRelays()).keys()].filter(id => relays === undefined || (relays as string[]).includes(id))
      // A notification carries at most 8,000 bytes: 200 relay ids at a time.
      for (let at = 0; at < elsewhere.length; at += 200) ctx.cluster.announce({ kind: 'prestage', sha256: a.sha256, relays: elsewhere.slice(at, at + 200) })
      sent += elsewhere.length
    }
    sendJson(res, 202, { name: a.name, sha256: a.sha256, relays: sent })
  })
}
