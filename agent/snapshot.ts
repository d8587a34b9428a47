import os from 'node:os'
import http from 'node:http'
import { statfs } from 'node:fs/promises'
import { VERSION } from '../common/version.js'

export interface SnapshotOptions {
  edgeId: string
  dataDir: string
  tunnelTarget?: string
  startedAt: number
  /** The version the agent reports (default: the build's). */
  version?: string
  /** Whether jobs may run commands here (--allow-exec): the job form shows it. */
  allowExec?: boolean
  /** --tag: tags the agent adds to its endpoint. */
  tags?: string[]
}

/** Asks an HTTP (or unix socket) target about itself: Docker's /info when it is a Docker API. */
async function describeTarget (target: string, timeoutMs = 2000): Promise<Record<string, unknown>> {
  const base: http.RequestOptions = { path: '/info', method: 'GET', timeout: timeoutMs, headers: { accept: 'application/json' } }
  if (target.startsWith('unix:')) base.socketPath = target.slice('unix:'.length)
  else if (target.startsWith('http://')) {
    const u = new URL(target)
    base.host = u.hostname
    base.port = u.port === '' ? 80 : Number(u.port)
  } else {
    return { target, kind: target.split(':')[0] }
  }
  return await new Promise(resolve => {
    const req = http.request(base, res => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size <= 256 * 1024) chunks.push(c)
      })
      res.on('end', () => {
        const out: Record<string, unknown> = { target, status: res.statusCode, server: res.headers.server ?? null }
        try {
          const info = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>
          if (typeof info.ServerVersion === 'string') {
            out.docker = Object.fromEntries(['ID', 'Name', 'ServerVersion', 'OperatingSystem', 'Architecture', 'NCPU', 'MemTotal',
              'Containers', 'ContainersRunning', 'ContainersPaused', 'ContainersStopped', 'Images', 'Swarm']
              .filter(k => k in info).map(k => [k, k === 'Swarm' ? { LocalNodeState: (info.Swarm as Record<string, unknown>)?.LocalNodeState } : info[k]]))
          }
        } catch {}
        resolve(out)
      })
      res.on('error', () => resolve({ target, error: 'read failed' }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', err => resolve({ target, error: (err as NodeJS.ErrnoException).code ?? err.message }))
    req.end()
  })
}

/** What an agent reports about its machine: small, no secrets. */
export async function takeSnapshot (options: SnapshotOptions): Promise<Record<string, unknown>> {
  let disk: Record<string, number> | null = null
  try {
    const s = await statfs(options.dataDir)
    disk = { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize }
  } catch {}
  const cpus = os.cpus()
  const snapshot: Record<string, unknown> = {
    takenAt: new Date().toISOString(),
    edgeId: options.edgeId,
    hostname: os.hostname(),
    os: `${os.type()} ${os.release()}`,
    platform: os.platform(),
    arch: os.arch(),
    cpus: { count: cpus.length, model: cpus[0]?.model ?? null },
    loadAverage: os.loadavg(),
    memory: { totalBytes: os.totalmem(), freeBytes: os.freemem() },
    disk,
    uptimeSeconds: Math.round(os.uptime()),
    agentUptimeSeconds: Math.round((Date.now() - options.startedAt) / 1000),
    agentVersion: options.version ?? VERSION,
    allowExec: options.allowExec === true,
    ...((options.tags ?? []).length > 0 ? { tags: options.tags } : {}),
    node: process.version
  }
  if (options.tunnelTarget !== undefined) snapshot.target = await describeTarget(options.tunnelTarget)
  return snapshot
}
