import type { Logger } from 'pino'
import { FailureLimiter } from '../common/failure-limiter.js'
import { newNonce, verifyProof } from '../protocol/auth.js'
import { deriveE2eKeys } from '../protocol/messages.js'
import { agentRef, type AgentRef } from './agent-ref.js'
import type { RelayLink, Session } from './relay-link.js'
import type { Store, SettingsRef, EndpointTouch } from './store.js'
import { presenceWriter, type WriteBehind } from './write-behind.js'

export type PresenceListener = (agent: AgentRef, online: boolean) => void

export interface AgentSessionsOptions {
  store: Store
  settings: SettingsRef
  logger: Logger
  /** Agent sessions one relay may hold. */
  maxSessionsPerRelay: number
  /** Wrong-secret proofs allowed per endpoint: a burst, then this many per second (over every relay). */
  authFailureBurst: number
  authFailuresPerSecond: number
  /** An endpoint's check-in flags (sent with a successful auth-result). */
  flagsOf: (endpointId: string) => number
  /** Whether a link is still its relay's link here (it may have gone while the store answered). */
  isLinked: (link: RelayLink) => boolean
}

type OnlineSession = Session & { link: RelayLink, ref: AgentRef }

/**
 * The agents behind the relays linked here: their authentication (a
 * challenge, a proof, admission of the edge id, a clone replacing the older
 * session, a returning agent of a deleted endpoint told to stop) and their
 * presence (who is online through which link, who is told, last-seen times
 * written in batches). RelayHub passes the relays' auth and offline messages here.
 */
export class AgentSessions {
  /** Agent authentications relays have asked for (auth-begin messages), for metrics. */
  authBegins = 0
  private readonly opts: AgentSessionsOptions
  /** endpointId -> sessions online for it, over any relay. */
  private readonly presence = new Map<string, Set<OnlineSession>>()
  private readonly listeners: PresenceListener[] = []
  /** Last seen times and relays of endpoints, written in batches. */
  private readonly writes: WriteBehind<EndpointTouch>
  /** Wrong-secret proofs per endpoint: a flood is refused before any proof is checked. */
  private readonly authFailures: FailureLimiter
  /** Shutting down: agents that drop now are not written as offline (the server is what went away). */
  private closing = false

  constructor (options: AgentSessionsOptions) {
    this.opts = options
    this.authFailures = new FailureLimiter({ burst: options.authFailureBurst, perSecond: options.authFailuresPerSecond, maxKeys: 100_000 })
    this.writes = presenceWriter(options.store, options.logger)
  }

  isOnline (endpointId: string): boolean {
    return (this.presence.get(endpointId)?.size ?? 0) > 0
  }

  /** Relay ids currently serving an endpoint. */
  relaysOf (endpointId: string): string[] {
    return [...new Set([...(this.presence.get(endpointId) ?? [])].map(s => s.link.relayId))]
  }

  /** Endpoints with an agent online through a relay linked here. */
  onlineEndpoints (): string[] {
    return [...this.presence.keys()].filter(id => (this.presence.get(id)?.size ?? 0) > 0)
  }

  /** The agents online for an endpoint (several for a cluster). */
  agentsOf (endpointId: string): AgentRef[] {
    return [...(this.presence.get(endpointId) ?? [])].map(s => s.ref)
  }

  /** Every agent online here. */
  * online (): IterableIterator<AgentRef> {
    for (const set of this.presence.values()) for (const s of set) yield s.ref
  }

  onPresence (listener: PresenceListener): void {
    this.listeners.push(listener)
  }

  /** The server is shutting down: from now on dropped agents are not written as offline. */
  shuttingDown (): void {
    this.closing = true
  }

  /** Writes what is still queued. */
  async close (): Promise<void> {
    this.closing = true
    await this.writes.close()
  }

  /** auth-begin: a challenge for the agent, unless the endpoint is unknown, the relay full or the endpoint's proofs rate-limited. */
  async begin (link: RelayLink, sid: number, endpointId: string, edgeId: string): Promise<void> {
    this.authBegins++
    const existing = link.sessions.get(sid)
    if (existing !== undefined) this.drop(link, existing)
    if (link.sessions.size >= this.opts.maxSessionsPerRelay) {
      link.send({ t: 'auth-result', sid, ok: false, code: 'RG_ERR_QUEUE_FULL', message: 'relay holds too many agents' })
      return
    }
    const found = await this.opts.store.getEndpointForAgent(endpointId, edgeId)
    // A deleted endpoint's agent is challenged too: once it proves itself it gets a verified stop order.
    if (found === undefined && await this.opts.store.getTombstone(endpointId) === undefined) {
      link.send({ t: 'auth-result', sid, ok: false, code: 'RG_ERR_ENDPOINT_UNKNOWN', message: `no endpoint ${endpointId}` })
      return
    }
    if (!this.authFailures.allows(endpointId)) {
      const wait = this.authFailures.retryAfter(endpointId)
      await this.opts.store.recordRefusal(endpointId, edgeId, 'RG_ERR_RATE_LIMIT', Date.now())
      link.send({ t: 'auth-result', sid, ok: false, code: 'RG_ERR_RATE_LIMIT', message: `too many wrong proofs for this endpoint; try again in ${wait} s` })
      return
    }
    const nonce = newNonce()
    link.sessions.set(sid, { sid, endpointId, edgeId, nonce, online: false, endpoint: found?.endpoint ?? null, admitted: found?.admitted === true })
    link.send({ t: 'auth-challenge', sid, nonce })
  }

  /** auth-proof: the agent online (or refused, or told to stop when its endpoint was deleted). */
  async prove (link: RelayLink, sid: number, proof: string, agentNonce: string): Promise<void> {
    const session = link.sessions.get(sid)
    if (session === undefined || session.nonce === null) {
      link.send({ t: 'auth-result', sid, ok: false, code: 'RG_ERR_AUTH', message: 'no challenge outstanding' })
      return
    }
    const nonce = session.nonce
    session.nonce = null // one proof per nonce
    const refuse = async (code: 'RG_ERR_AUTH' | 'RG_ERR_EDGE_ID_MISMATCH' | 'RG_ERR_ENDPOINT_UNKNOWN', message: string): Promise<void> => {
      link.sessions.delete(sid)
      if (code === 'RG_ERR_AUTH') this.authFailures.fail(session.endpointId)
      link.log.warn({ endpointId: session.endpointId, edgeId: session.edgeId, code }, 'agent refused')
      link.send({ t: 'auth-result', sid, ok: false, code, message })
      if (code !== 'RG_ERR_ENDPOINT_UNKNOWN') await this.opts.store.recordRefusal(session.endpointId, session.edgeId, code, Date.now())
    }
    // As read at auth-begin (a reconnect storm costs one read less per agent); null: deleted, challenged for a stop order.
    const endpoint = session.endpoint ?? undefined
    const input = { nonce, endpointId: session.endpointId, edgeId: session.edgeId, relayId: link.relayId }
    if (endpoint === undefined) {
      if (!await this.stopDeleted(link, session, sid, input, proof, agentNonce)) await refuse('RG_ERR_ENDPOINT_UNKNOWN', `no endpoint ${session.endpointId}`)
      return
    }
    if (!verifyProof(endpoint.authKey, input, proof)) return await refuse('RG_ERR_AUTH', 'wrong endpoint secret')
    // Known agents (every reconnect after the first) were found admitted at auth-begin: no second read.
    if (!session.admitted && !await this.opts.store.admitEdgeId(session.endpointId, session.edgeId, Date.now())) {
      // Say how to free the place: the admin API (or the agent's data dir, if this is the same machine reinstalled).
      const free = `if the machine that had it is gone, free its place: DELETE /api/endpoints/${session.endpointId}/agents/<its edge id> (the endpoint page lists them), then this agent is admitted`
      return await refuse('RG_ERR_EDGE_ID_MISMATCH', endpoint.maxAgents > 1
        ? `this cluster endpoint already has its ${endpoint.maxAgents} agents; ${free}`
        : `this endpoint is associated with another edge id (${endpoint.edgeId ?? 'another agent'}); ${free}, or start this agent with --edge-id ${endpoint.edgeId ?? '<that id>'} if it is the same machine`)
    }
    // The agent or its link may have gone while the store answered.
    if (link.sessions.get(sid) !== session || !this.opts.isLinked(link)) return
    this.replaceClones(session)
    session.online = true
    let set = this.presence.get(session.endpointId)
    if (set === undefined) {
      set = new Set()
      this.presence.set(session.endpointId, set)
    }
    const ref = agentRef(link, session, sid, deriveE2eKeys(endpoint.tunnelKey, session.edgeId), agentNonce)
    set.add(Object.assign(session, { link, ref }))
    this.writes.add({ id: session.endpointId, edgeId: session.edgeId, lastSeen: Date.now(), relayId: link.relayId })
    link.log.info({ endpointId: session.endpointId, edgeId: session.edgeId }, 'agent online')
    link.send({ t: 'auth-result', sid, ok: true, flags: this.opts.flagsOf(session.endpointId) })
    ref.order({ t: 'agent-settings', snapshotIntervalSeconds: this.opts.settings.current.snapshotIntervalSeconds })
    for (const listener of this.listeners) listener(ref, true)
  }

  /**
   * One edge id has one live session: a second agent with the same edge id
   * and secret (a cloned machine, or the same agent reconnecting through
   * another relay before the first link timed out) replaces the older
   * session, which its relay closes with RG_ERR_REPLACED. Each replacement
   * is recorded as a refusal of that edge id, so a clone shows on the endpoint.
   */
  private replaceClones (session: Session): void {
    for (const old of [...(this.presence.get(session.endpointId) ?? [])]) {
      if (old.edgeId !== session.edgeId) continue
      const message = 'a newer connection with the same edge id replaced this one (a cloned machine?)'
      old.link.send({ t: 'kick', endpointId: old.endpointId, sid: old.sid, code: 'RG_ERR_REPLACED', message })
      this.drop(old.link, old)
      this.opts.store.recordRefusal(session.endpointId, session.edgeId, 'RG_ERR_REPLACED', Date.now())
        .catch((err: Error) => old.link.log.warn({ err: err.message }, 'refusal not recorded'))
      old.link.log.warn({ endpointId: session.endpointId, edgeId: session.edgeId, relayId: old.link.relayId }, 'duplicate edge id: the older session is replaced')
    }
  }

  /**
   * An agent of a deleted endpoint came back (it was offline at deletion):
   * accept it for one moment on its relay, send it a stop order it can
   * verify (the relay's refusal alone no longer stops an agent that was
   * online), then have the relay drop it. False when the proof fails.
   */
  private async stopDeleted (link: RelayLink, session: Session, sid: number, input: { nonce: string, endpointId: string, edgeId: string, relayId: string }, proof: string, agentNonce: string): Promise<boolean> {
    const tomb = await this.opts.store.getTombstone(session.endpointId)
    if (tomb === undefined || !verifyProof(tomb.authKey, input, proof)) return false
    link.sessions.delete(sid)
    link.log.info({ endpointId: session.endpointId, edgeId: session.edgeId }, 'agent of a deleted endpoint returned: stopping it')
    link.send({ t: 'auth-result', sid, ok: true, flags: 0 })
    const message = 'endpoint deleted by the admin'
    agentRef(link, session, sid, deriveE2eKeys(tomb.tunnelKey, session.edgeId), agentNonce).order({ t: 'stop', code: 'RG_ERR_ENDPOINT_DELETED', message })
    link.send({ t: 'kick', endpointId: session.endpointId, code: 'RG_ERR_ENDPOINT_DELETED', message })
    return true
  }

  /** The agent is gone from its relay (offline, kicked, replaced, or its link closed). */
  drop (link: RelayLink, session: Session): void {
    link.sessions.delete(session.sid)
    if (!session.online) return
    session.online = false
    const set = this.presence.get(session.endpointId)
    let ref: AgentRef | undefined
    if (set !== undefined) {
      for (const s of set) {
        if (s.sid === session.sid && s.link === link) {
          set.delete(s)
          ref = s.ref
        }
      }
      if (set.size === 0) this.presence.delete(session.endpointId)
    }
    if (ref !== undefined) for (const listener of this.listeners) listener(ref, false)
    if (!this.closing) this.writes.add({ id: session.endpointId, edgeId: session.edgeId, lastSeen: Date.now(), relayId: null })
    link.log.info({ endpointId: session.endpointId }, 'agent offline')
  }
}
