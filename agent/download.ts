import fs from 'node:fs'
import http from 'node:http'
import tls from 'node:tls'
import net from 'node:net'
import { once } from 'node:events'
import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError, type ErrorCodeName } from '../protocol/errors.js'
import { normalizeFingerprint } from '../protocol/token.js'
import { TransferProgress } from '../common/progress.js'
import { connectThrough, tlsOver } from '../common/proxy.js'
import { Backoff } from '../common/backoff.js'

/**
 * An artifact's download from the agent's relay (GET /artifacts/<sha256> on
 * its HTTP port, authorised by the download token of the agent's link),
 * into a part file that later tries resume with Range.
 */

/** The relay link's URL (ws:// or wss://), its accepted fingerprints, and our download token. */
export interface RelayAccess { url: string, fingerprints: string[], downloadToken: string, proxy?: URL | null }

export interface DownloadJob { jobId: string, sha256: string, size: number, deadline: number }

export interface DownloadContext {
  /** The relay now, or null while the agent has none. */
  relay: () => RelayAccess | null
  closed: () => boolean
  /** Bytes on disk so far (reported as job progress). */
  progress: (bytes: number) => void
  /** Failed tries (while a relay is connected) before the download fails. */
  retries: number
  /** Progress as a redrawn line on stderr; else a log line every 5 s. */
  progressTty: boolean
}

/** How often a download waiting for a relay looks again (ms). */
const RELAY_POLL_MS = 250

/** Opens a connection to the relay's HTTP port, checking the certificate pin before any byte is sent. */
async function connectRelay (url: URL, fingerprints: string[], proxy: URL | null = null): Promise<net.Socket> {
  const port = Number(url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : url.port)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  // Through a proxy: a CONNECT tunnel, and TLS to the relay inside it (the pins apply end to end).
  const tunnel = proxy === null ? null : await connectThrough(proxy, host, port)
  if (url.protocol !== 'https:') {
    if (tunnel !== null) return tunnel
    const sock = net.connect({ host, port })
    await once(sock, 'connect')
    return sock
  }
  const pins = fingerprints.map(normalizeFingerprint)
  const sock = tunnel !== null
    ? tlsOver(tunnel, host)
    : tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, rejectUnauthorized: false })
  await once(sock, 'secureConnect')
  if (pins.length === 0 && !sock.authorized) {
    sock.destroy()
    throw new RelaygateError('RG_ERR_PIN_MISMATCH', `relay certificate is not one a trusted CA vouches for (${String(sock.authorizationError)})`)
  }
  if (pins.length > 0) {
    const fp = normalizeFingerprint(sock.getPeerCertificate().fingerprint256 ?? '')
    if (!pins.includes(fp)) {
      sock.destroy()
      throw new RelaygateError('RG_ERR_PIN_MISMATCH', `relay certificate ${fp} is not a pinned one`)
    }
  }
  return sock
}

/**
 * Downloads into `part`, resuming what is there; retries with jittered
 * backoff. Time without a relay is spent waiting for one (until the job's
 * deadline), not counted as failed tries: a relay outage longer than the
 * retry budget failed downloads for good.
 */
export async function download (job: DownloadJob, part: string, log: Logger, verify: boolean, ctx: DownloadContext): Promise<void> {
  let lastError: RelaygateError | null = null
  let failures = 0
  const backoff = new Backoff({ baseMs: 200, maxMs: 5000 })
  for (;;) {
    const relay = await waitForRelay(job, log, ctx)
    try {
      await fetchOnce(job, part, relay, log, verify, ctx)
      return
    } catch (err) {
      lastError = toRelaygateError(err, 'RG_ERR_DOWNLOAD_FAILED')
      const have = fs.existsSync(part) ? fs.statSync(part).size : 0
      log.info({ code: lastError.code, have, size: job.size }, 'download interrupted; will resume')
      if (lastError.code === 'RG_ERR_ARTIFACT_UNKNOWN' || lastError.code === 'RG_ERR_PIN_MISMATCH') break
    }
    await new Promise(r => setTimeout(r, backoff.next()))
    // The relay went away meanwhile: the cut was its, not the download's.
    if (ctx.relay() !== null && ++failures > ctx.retries) break
  }
  throw new RelaygateError(lastError?.code === 'RG_ERR_ARTIFACT_UNKNOWN' ? 'RG_ERR_ARTIFACT_UNKNOWN' : 'RG_ERR_DOWNLOAD_FAILED',
    `download failed: ${lastError?.message ?? 'unknown'}`)
}

/** The relay to download from, once there is one; RG_ERR_JOB_DEADLINE once the job's deadline passed. */
async function waitForRelay (job: DownloadJob, log: Logger, ctx: DownloadContext): Promise<RelayAccess> {
  let logged = false
  for (;;) {
    if (ctx.closed()) throw new RelaygateError('RG_ERR_CLOSED', 'agent stopping')
    if (Date.now() >= job.deadline) throw new RelaygateError('RG_ERR_JOB_DEADLINE', `the job's deadline (${new Date(job.deadline).toISOString()}) passed while the download waited for a relay`)
    const relay = ctx.relay()
    if (relay !== null) return relay
    if (!logged) log.info({ deadline: new Date(job.deadline).toISOString() }, 'download waits for a relay')
    logged = true
    await new Promise(r => setTimeout(r, Math.min(RELAY_POLL_MS, Math.max(1, job.deadline - Date.now()))))
  }
}

async function fetchOnce (job: DownloadJob, part: string, relay: RelayAccess, log: Logger, verify: boolean, ctx: DownloadContext): Promise<void> {
  const base = new URL(relay.url.replace(/^ws/, 'http'))
  let have = fs.existsSync(part) ? fs.statSync(part).size : 0
  if (job.size >= 0 && have > job.size) {
    fs.truncateSync(part, 0)
    have = 0
  }
  if (job.size >= 0 && have === job.size) return
  const socket = await connectRelay(base, relay.fingerprints, relay.proxy ?? null)
  const headers: Record<string, string> = { authorization: `Bearer ${relay.downloadToken}`, host: base.host }
  if (have > 0) {
    headers.range = `bytes=${have}-`
    headers['if-range'] = `"${job.sha256}"`
  }
  const res = await new Promise<http.IncomingMessage>((resolvePromise, reject) => {
    const req = http.request({ createConnection: () => socket, path: `/artifacts/${job.sha256}${verify ? '?verify=1' : ''}`, method: 'GET', headers })
    req.once('response', resolvePromise)
    req.once('error', reject)
    req.end()
  })
  if (res.statusCode === 416) {
    res.resume()
    fs.truncateSync(part, 0)
    throw new RelaygateError('RG_ERR_DOWNLOAD_FAILED', 'range not satisfiable; starting over')
  }
  if (res.statusCode !== 200 && res.statusCode !== 206) {
    const chunks: Buffer[] = []
    for await (const c of res) chunks.push(c as Buffer)
    let code: ErrorCodeName = 'RG_ERR_DOWNLOAD_FAILED'
    let message = `relay answered ${res.statusCode ?? '?'}`
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code?: string, message?: string } }
      if (body.error?.code === 'RG_ERR_ARTIFACT_UNKNOWN') code = 'RG_ERR_ARTIFACT_UNKNOWN'
      message = body.error?.message ?? message
    } catch {}
    throw new RelaygateError(code, message)
  }
  const append = res.statusCode === 206
  if (!append) have = 0
  log.debug({ status: res.statusCode, from: have }, append ? 'resuming download' : 'downloading')
  const out = fs.createWriteStream(part, { flags: append ? 'a' : 'w' })
  let received = have
  let lastReport = 0
  ctx.progress(received)
  const meter = new TransferProgress({
    label: `job ${job.jobId}`,
    total: job.size >= 0 ? job.size : null,
    start: have,
    tty: ctx.progressTty ? process.stderr : null,
    log: fields => log.info(fields, 'download progress')
  })
  try {
    for await (const chunk of res) {
      const buf = chunk as Buffer
      received += buf.length
      if (!out.write(buf)) await once(out, 'drain')
      meter.update(received)
      const now = Date.now()
      if (now - lastReport > 250) {
        lastReport = now
        ctx.progress(received)
      }
    }
  } finally {
    meter.done()
    await new Promise<void>(r => out.end(() => r()))
  }
  if (!res.complete || (job.size >= 0 && received < job.size)) {
    throw new RelaygateError('RG_ERR_DOWNLOAD_FAILED', `connection ended at ${received} of ${job.size} bytes`)
  }
  ctx.progress(received)
}
