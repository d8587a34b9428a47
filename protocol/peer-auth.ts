/**
 * How two server replicas prove to each other that they hold the cluster
 * secret: each sends HMAC-SHA256(secret, label, its replica id, keying
 * material exported from this TLS session). The keying material differs on
 * every TLS session, so a proof seen (or relayed by a man in the middle,
 * who holds two sessions) is worth nothing anywhere else; the secret itself
 * never crosses the wire.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'

/** The label and length of the TLS exporter (RFC 5705) both sides use. */
export const PEER_EXPORTER_LABEL = 'EXPORTER-relaygate-peer-v1'
export const PEER_EXPORTER_LENGTH = 32
export const PEER_EXPORTER_CONTEXT = Buffer.from('relaygate cluster', 'utf8')

export type PeerSide = 'dialer' | 'listener'

export function peerProof (secret: Buffer, keyingMaterial: Buffer, side: PeerSide, replicaId: string): string {
  return createHmac('sha256', secret).update(`relaygate peer ${side} v1\n${replicaId}\n`).update(keyingMaterial).digest('hex')
}

export function verifyPeerProof (secret: Buffer, keyingMaterial: Buffer, side: PeerSide, replicaId: string, proof: string): boolean {
  const expected = Buffer.from(peerProof(secret, keyingMaterial, side, replicaId), 'hex')
  const given = Buffer.from(proof, 'hex')
  return given.length === expected.length && timingSafeEqual(given, expected)
}
