import { createHmac, hkdfSync, randomBytes, timingSafeEqual, createHash } from 'node:crypto'

/**
 * Agent authentication: the agent proves it holds the endpoint secret by an
 * HMAC over a nonce the server chose. The relay carries nonce and proof but
 * never the secret; the server keeps only a key derived from the secret.
 */
export function deriveAuthKey (secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'base64url'), Buffer.alloc(0), 'relaygate agent auth v1', 32))
}

export interface ProofInput {
  nonce: string
  endpointId: string
  edgeId: string
  relayId: string
}

export function computeProof (authKey: Buffer, input: ProofInput): string {
  const text = ['relaygate-auth-v1', input.nonce, input.endpointId, input.edgeId, input.relayId].join('\n')
  return createHmac('sha256', authKey).update(text).digest('base64url')
}

export function verifyProof (authKey: Buffer, input: ProofInput, proof: unknown): boolean {
  if (typeof proof !== 'string') return false
  const expected = Buffer.from(computeProof(authKey, input))
  const given = Buffer.from(proof)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

export function newNonce (): string {
  return randomBytes(24).toString('base64url')
}

export function newSecret (bytes = 32): string {
  return randomBytes(bytes).toString('base64url')
}

/** Hash for stored bearer tokens (admin and relay tokens are long random values). */
export function hashToken (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

export function tokenMatches (token: string, storedHash: string): boolean {
  const a = Buffer.from(hashToken(token), 'hex')
  const b = Buffer.from(storedHash, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}

/** What may appear of a secret in a log line. */
export function redact (secret: string): string {
  return secret.length <= 8 ? '***' : `${secret.slice(0, 4)}…(${secret.length} chars)`
}
