import { randomBytes } from 'node:crypto'
import type { RelaygateError } from '../protocol/index.js'
import type { AgentSession } from './session.js'

/**
 * The relay's agents and the check-in flag table: sessions by sid (the
 * number the server knows them by), by endpoint (a cluster endpoint has
 * several) and by download token, and each endpoint's flags as the server
 * last pushed them. Check-ins are answered from here, without the server.
 */
export class AgentRegistry {
  readonly sessions = new Map<number, AgentSession>()
  private readonly byEndpoint = new Map<string, Set<AgentSession>>()
  private readonly byDownloadToken = new Map<string, AgentSession>()
  private readonly flags = new Map<string, number>()
  private nextSid = 1

  get size (): number {
    return this.sessions.size
  }

  /** The next session number, never 0, wrapping before 2^32. */
  allocateSid (): number {
    const sid = this.nextSid
    this.nextSid = sid >= 0xfffffffe ? 1 : sid + 1
    return sid
  }

  add (s: AgentSession): void {
    this.sessions.set(s.sid, s)
  }

  get (sid: number): AgentSession | undefined {
    return this.sessions.get(sid)
  }

  /** The session became ready for the first time: index it by endpoint and give it a download token. */
  admit (s: AgentSession): void {
    let set = this.byEndpoint.get(s.endpointId)
    if (set === undefined) {
      set = new Set()
      this.byEndpoint.set(s.endpointId, set)
    }
    set.add(s)
    s.downloadToken = randomBytes(24).toString('base64url')
    this.byDownloadToken.set(s.downloadToken, s)
  }

  remove (s: AgentSession): void {
    this.sessions.delete(s.sid)
    const set = this.byEndpoint.get(s.endpointId)
    if (set !== undefined && set.delete(s) && set.size === 0) this.byEndpoint.delete(s.endpointId)
    if (s.downloadToken !== '') this.byDownloadToken.delete(s.downloadToken)
  }

  /** True for the download token of a ready agent. */
  mayDownload (token: string): boolean {
    return token !== '' && this.byDownloadToken.get(token)?.ready === true
  }

  flagsOf (endpointId: string): number {
    return this.flags.get(endpointId) ?? 0
  }

  /** Records an endpoint's flags; with `push`, raised flags reach its ready agents at once. */
  setFlags (endpointId: string, flags: number, push = false): void {
    if (flags === 0) this.flags.delete(endpointId)
    else this.flags.set(endpointId, flags)
    if (push && flags !== 0) for (const s of this.byEndpoint.get(endpointId) ?? []) s.push(flags)
  }

  /** Disconnects every agent of an endpoint (deleted on the server) and forgets its flags. */
  kick (endpointId: string, err: RelaygateError): void {
    this.flags.delete(endpointId)
    for (const s of [...this.sessions.values()]) if (s.endpointId === endpointId) s.fail(err)
  }
}
