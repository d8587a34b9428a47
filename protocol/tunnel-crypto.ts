import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import { RelaygateError } from './errors.js'

/**
 * One-time tunnel credentials. The server makes a random credential per
 * tunnel offer and seals it with AES-256-GCM for each agent that may take the
 * tunnel, under a key derived (HKDF) from the endpoint secret and that
 * agent's edge id. Relays carry the sealed blob and cannot read it. To open
 * the tunnel the agent proves possession (HMAC bound to the tunnel, its edge
 * id and its relay), so the credential itself never crosses the relay either.
 */

/** What the server keeps instead of the endpoint secret (HKDF, one-way). */
export function deriveTunnelRoot (secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'base64url'), Buffer.alloc(0), 'relaygate tunnel key v1', 32))
}

/** The sealing key for one agent of the endpoint. */
export function deriveCredentialKey (tunnelRoot: Buffer, edgeId: string): Buffer {
  return Buffer.from(hkdfSync('sha256', tunnelRoot, Buffer.from(edgeId, 'utf8'), 'relaygate tunnel credentials v1', 32))
}

export interface TunnelCredential {
  tunnelId: string
  /** 32 random bytes, base64url. */
  credential: string
}

function aad (endpointId: string, edgeId: string, tunnelId: string): Buffer {
  return Buffer.from(`relaygate-tunnel-v1\n${endpointId}\n${edgeId}\n${tunnelId}`)
}

export function newCredential (): TunnelCredential {
  return { tunnelId: randomBytes(12).toString('base64url'), credential: randomBytes(32).toString('base64url') }
}

/** base64url(iv 12 | ciphertext | tag 16); tunnel id, endpoint and edge id are authenticated. */
export function sealCredential (key: Buffer, endpointId: string, edgeId: string, cred: TunnelCredential): string {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  cipher.setAAD(aad(endpointId, edgeId, cred.tunnelId))
  const ct = Buffer.concat([cipher.update(Buffer.from(cred.credential, 'base64url')), cipher.final()])
  return Buffer.concat([iv, ct, cipher.getAuthTag()]).toString('base64url')
}

export function openCredential (key: Buffer, endpointId: string, edgeId: string, tunnelId: string, blob: string): TunnelCredential {
  const raw = Buffer.from(blob, 'base64url')
  if (raw.length < 12 + 16 + 1) throw new RelaygateError('RG_ERR_PROTOCOL', 'sealed credential too short')
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12))
    decipher.setAAD(aad(endpointId, edgeId, tunnelId))
    decipher.setAuthTag(raw.subarray(raw.length - 16))
    const plain = Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()])
    return { tunnelId, credential: plain.toString('base64url') }
  } catch {
    throw new RelaygateError('RG_ERR_AUTH', 'sealed credential does not open with this agent\'s key')
  }
}

export function tunnelProof (credential: string, input: { tunnelId: string, endpointId: string, edgeId: string, relayId: string }): string {
  const text = ['relaygate-tunnel-open-v1', input.tunnelId, input.endpointId, input.edgeId, input.relayId].join('\n')
  return createHmac('sha256', Buffer.from(credential, 'base64url')).update(text).digest('base64url')
}

export function verifyTunnelProof (credential: string, input: { tunnelId: string, endpointId: string, edgeId: string, relayId: string }, proof: unknown): boolean {
  if (typeof proof !== 'string') return false
  const expected = Buffer.from(tunnelProof(credential, input))
  const given = Buffer.from(proof)
  return expected.length === given.length && timingSafeEqual(expected, given)
}
