import { RelaygateError } from './errors.js'

/** A relay as an agent knows it: where to dial and which certificates to accept. */
export interface RelayAddress {
  url: string
  /** sha256 fingerprints (lowercase hex) accepted for wss; several allow rotation. */
  fingerprints: string[]
}

/** What a join token carries. */
export interface JoinToken {
  serverUrl: string
  relays: RelayAddress[]
  endpointId: string
  /** The endpoint secret, base64url. Never leaves the agent after decoding. */
  secret: string
}

const PREFIX = 'rg1.'

export function encodeJoinToken (token: JoinToken): string {
  const body = {
    s: token.serverUrl,
    r: token.relays.map(r => ({ u: r.url, f: r.fingerprints })),
    e: token.endpointId,
    k: token.secret
  }
  return PREFIX + Buffer.from(JSON.stringify(body)).toString('base64url')
}

/** Decodes and validates a join token; throws RG_ERR_BAD_JOIN_TOKEN naming what is wrong. */
export function decodeJoinToken (text: string): JoinToken {
  const bad = (why: string): RelaygateError => new RelaygateError('RG_ERR_BAD_JOIN_TOKEN', `join token ${why}`)
  const trimmed = text.trim()
  if (!trimmed.startsWith(PREFIX)) throw bad(`must start with "${PREFIX}"`)
  let body: unknown
  try {
    body = JSON.parse(Buffer.from(trimmed.slice(PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw bad('is not valid base64url JSON')
  }
  if (body === null || typeof body !== 'object') throw bad('is not an object')
  const b = body as Record<string, unknown>
  if (typeof b.s !== 'string') throw bad('has no server URL')
  if (typeof b.e !== 'string' || b.e === '') throw bad('has no endpoint id')
  if (typeof b.k !== 'string' || Buffer.from(b.k, 'base64url').length < 16) throw bad('has no usable secret')
  if (!Array.isArray(b.r)) throw bad('has no relay list')
  const relays: RelayAddress[] = []
  for (const r of b.r) {
    if (r === null || typeof r !== 'object' || typeof r.u !== 'string') throw bad('has a malformed relay entry')
    const fps = Array.isArray(r.f) ? r.f.filter((f: unknown): f is string => typeof f === 'string').map(normalizeFingerprint) : []
    relays.push({ url: r.u, fingerprints: fps })
  }
  return { serverUrl: b.s, relays, endpointId: b.e, secret: b.k }
}

/** Accepts "AB:CD:..." or hex in any case; returns lowercase hex without colons. */
export function normalizeFingerprint (fp: string): string {
  return fp.replace(/:/g, '').trim().toLowerCase()
}
