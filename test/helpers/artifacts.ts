import { createHash } from 'node:crypto'
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import type { Api } from './cluster.js'
import { eventually } from './cluster.js'

export function sha256 (b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

/** PUT /api/artifacts/:name with a raw body. */
export async function uploadArtifact (api: Api, name: string, body: Buffer): Promise<{ status: number, body: any }> {
  const res = await fetch(`${api.baseUrl}/api/artifacts/${name}`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.status, body: parsed }
}

/** Waits until every target of a job is final; returns the job view. */
export async function waitJob (api: Api, id: string, timeoutMs = 30_000): Promise<any> {
  return await eventually(async () => {
    const v = await api.ok('GET', `/api/jobs/${id}`)
    return v.state === 'succeeded' || v.state === 'failed' ? v : undefined
  }, timeoutMs)
}

/** GET /api/relays, item of one relay, once `check` holds for it. */
export async function relayFigures (api: Api, relayId: string, check: (r: any) => boolean, timeoutMs = 10_000): Promise<any> {
  return await eventually(async () => {
    const list = await api.ok('GET', '/api/relays') as any[]
    const r = list.find(x => x.id === relayId)
    return r !== undefined && check(r) ? r : undefined
  }, timeoutMs)
}

/** Inverts one byte of a file in place (a damaged or swapped cache copy of the same size). */
export function flipByte (file: string, at: number): void {
  const fd = openSync(file, 'r+')
  try {
    const byte = Buffer.alloc(1)
    readSync(fd, byte, 0, 1, at)
    byte[0] ^= 0xff
    writeSync(fd, byte, 0, 1, at)
  } finally {
    closeSync(fd)
  }
}
