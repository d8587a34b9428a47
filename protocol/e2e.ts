/**
 * End-to-end authentication between the server and an agent, through a
 * relay that holds none of the keys (zero-trust relays).
 *
 * Both ends derive two keys per agent (endpoint and edge id) from the
 * endpoint's tunnel root (HKDF of the endpoint secret; the server keeps the
 * root, the agent the secret):
 *
 * - orders, server -> agent (every message the relay passes down): HMAC with
 *   the down key over the order and the agent's nonce of the current
 *   authentication round, plus a counter that only grows. The agent makes a
 *   fresh nonce for every proof, so an order recorded in an earlier session
 *   (or an earlier process) never verifies again, and a counter seen once is
 *   refused after that: no replay, no reordering of one session's orders;
 * - reports, agent -> server (every message the relay passes up, and job
 *   results it stores and replays): HMAC with the up key over the report.
 *   Reports outlive sessions (results are replayed after outages), so their
 *   replay protection is in what they say: a result names its job attempt,
 *   a snapshot the time it was taken, a tunnel event its one-time tunnel.
 *
 * The relay may delay or drop either; it cannot forge, alter or replay them.
 */
import { createHmac, hkdfSync, timingSafeEqual, randomBytes } from 'node:crypto'

export interface E2eKeys {
  /** Server -> agent orders. */
  down: Buffer
  /** Agent -> server reports. */
  up: Buffer
}

export function deriveE2eKeys (tunnelRoot: Buffer, edgeId: string): E2eKeys {
  const salt = Buffer.from(edgeId, 'utf8')
  return {
    down: Buffer.from(hkdfSync('sha256', tunnelRoot, salt, 'relaygate e2e orders v1', 32)),
    up: Buffer.from(hkdfSync('sha256', tunnelRoot, salt, 'relaygate e2e reports v1', 32))
  }
}

/** A fresh nonce for one authentication round (the agent sends it with its proof). */
export function newAgentNonce (): string {
  return randomBytes(18).toString('base64url')
}

/**
 * JSON with object keys sorted at every level: the same bytes on both ends
 * for the same message, whatever order its fields were written in.
 */
export function canonicalJson (value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(v => canonicalJson(v === undefined ? null : v)).join(',')}]`
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
}

/** The message without the fields the relay adds or that carry the MAC. */
function signedPart (msg: object): Record<string, unknown> {
  const { mac: _mac, sid: _sid, ...rest } = msg as Record<string, unknown>
  return rest
}

function hmac (key: Buffer, text: string): string {
  return createHmac('sha256', key).update(text).digest('base64url')
}

function same (a: string, b: unknown): boolean {
  if (typeof b !== 'string') return false
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** Who an order or report is about. */
export interface E2eParty { endpointId: string, edgeId: string }

function orderText (party: E2eParty, agentNonce: string, msg: object): string {
  return ['relaygate-order-v1', party.endpointId, party.edgeId, agentNonce, canonicalJson(signedPart(msg))].join('\n')
}

function reportText (party: E2eParty, msg: object): string {
  return ['relaygate-report-v1', party.endpointId, party.edgeId, canonicalJson(signedPart(msg))].join('\n')
}

/** The MAC of an order (the message carries its counter `n`); the server adds it as `mac`. */
export function orderMac (keys: E2eKeys, party: E2eParty, agentNonce: string, msg: object): string {
  return hmac(keys.down, orderText(party, agentNonce, msg))
}

export function verifyOrderMac (keys: E2eKeys, party: E2eParty, agentNonce: string, msg: { mac?: unknown, [field: string]: unknown }): boolean {
  return same(orderMac(keys, party, agentNonce, msg), msg.mac)
}

/** The MAC of a report; the agent adds it as `mac`. */
export function reportMac (keys: E2eKeys, party: E2eParty, msg: object): string {
  return hmac(keys.up, reportText(party, msg))
}

export function verifyReportMac (keys: E2eKeys, party: E2eParty, msg: { mac?: unknown, [field: string]: unknown }): boolean {
  return same(reportMac(keys, party, msg), msg.mac)
}

/**
 * The agent's check of incoming orders: the MAC under one of its recent
 * nonces (the current round's, and a few before it, for orders in flight
 * across a re-authentication), and a counter not seen before under that
 * nonce. Counters may arrive out of order (a relay in polling mode holds a
 * tunnel offer until the next check-in while later orders pass), so, as
 * IPsec's anti-replay window does, any counter within WINDOW of the highest
 * is accepted once; older ones are refused. Bounded: the oldest nonce is
 * forgotten first, and each keeps at most WINDOW counters.
 */
export class OrderGate {
  static readonly WINDOW = 1024
  private readonly seen = new Map<string, { highest: number, used: Set<number> }>()

  constructor (private readonly keys: E2eKeys, private readonly party: E2eParty, private readonly keep = 4) {}

  /** A new authentication round: orders will be bound to this nonce. */
  addNonce (nonce: string): void {
    this.seen.set(nonce, { highest: 0, used: new Set() })
    while (this.seen.size > this.keep) this.seen.delete(this.seen.keys().next().value!)
  }

  /** 'ok', or why the order is refused ('forged': no nonce of ours verifies it; 'replayed': its counter was used or is too old). */
  check (msg: { n: number, mac: string }): 'ok' | 'forged' | 'replayed' {
    for (const [nonce, state] of this.seen) {
      if (!verifyOrderMac(this.keys, this.party, nonce, msg)) continue
      if (state.used.has(msg.n) || msg.n <= state.highest - OrderGate.WINDOW) return 'replayed'
      state.used.add(msg.n)
      if (msg.n > state.highest) {
        state.highest = msg.n
        for (const n of state.used) if (n <= state.highest - OrderGate.WINDOW) state.used.delete(n)
      }
      return 'ok'
    }
    return 'forged'
  }
}
