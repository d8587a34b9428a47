import type { Logger } from 'pino'
import { RelaygateError, toRelaygateError, isErrorCode, type MuxStream } from '../protocol/index.js'
import { parseStreamMeta, ServerStreams, encodeStreamMeta, type ServerToRelay, type AgentDownWithSid } from '../protocol/messages.js'
import type { InstallerFile } from '../protocol/relay-messages.js'
import { Transform } from 'node:stream'
import { spliceStreams } from '../protocol/splice.js'
import type { ArtifactCache } from '../cache/index.js'
import type { AgentRegistry } from './agents.js'
import type { ResultQueue } from './results.js'
import type { UpdateOrder } from '../common/updater.js'

/** What the handlers of server messages act on. */
export interface ServerMessageContext {
  readonly agents: AgentRegistry
  readonly cache: ArtifactCache
  readonly results: ResultQueue
  readonly logger: Logger
  readonly relayId: string | null
  readonly intervalSeconds: number
  /** The server changed the fleet settings. */
  settingsChanged: (checkinIntervalSeconds: number) => void
  /** The one-file executables to serve at /install/ (the server's whole list). */
  installersChanged: (files: InstallerFile[]) => void
  /** A tunnel stream was joined (for /metrics). */
  countStream: () => void
  /** The server refused an agent (counted per peer address: see RelayCore.accept). */
  countAuthFailure: (remote: string, code: string) => void
  /** The server orders this relay to replace its executable (issue 16). */
  update: (order: UpdateOrder) => void
  /** Tests of hostile relays only (RelayTaps.tunnelChunk). */
  tunnelChunk?: (chunk: Buffer, direction: 'to-agent' | 'to-server') => Buffer
}

/** Handles one validated message from the server: parse first, then one call per kind. */
export function onServerMessage (ctx: ServerMessageContext, msg: ServerToRelay): void {
  switch (msg.t) {
    case 'auth-challenge': return onAuthChallenge(ctx, msg.sid, msg.nonce)
    case 'auth-result': return msg.ok ? onAuthAccepted(ctx, msg.sid, msg.flags) : onAuthRefused(ctx, msg.sid, msg.code, msg.message)
    case 'flags': return onFlags(ctx, msg.set)
    case 'settings': return ctx.settingsChanged(msg.settings.checkinIntervalSeconds)
    case 'kick': return onKick(ctx, msg.endpointId, msg.sid, msg.code, msg.message)
    case 'prestage': return onPrestage(ctx, msg.sha256)
    case 'job-result-ack': return ctx.results.remove(msg.key)
    case 'installers': return ctx.installersChanged(msg.files)
    case 'relay-update': {
      const { t: _t, ...order } = msg
      return ctx.update(order)
    }
    default: return toAgent(ctx, msg)
  }
}

function onAuthChallenge (ctx: ServerMessageContext, sid: number, nonce: string): void {
  const s = ctx.agents.get(sid)
  if (s === undefined || ctx.relayId === null) return
  s.challenge(nonce, ctx.relayId)
}

function onAuthAccepted (ctx: ServerMessageContext, sid: number, flags: number): void {
  const s = ctx.agents.get(sid)
  if (s === undefined || ctx.relayId === null) return
  ctx.agents.setFlags(s.endpointId, flags)
  const first = !s.ready
  if (first) ctx.agents.admit(s)
  s.accepted({
    t: 'welcome',
    endpointId: s.endpointId,
    relayId: ctx.relayId,
    intervalSeconds: ctx.intervalSeconds,
    downloadToken: s.downloadToken
  })
  if (first) s.log.info({ endpointId: s.endpointId }, 'agent authenticated')
  if (flags !== 0) s.push(flags)
}

function onAuthRefused (ctx: ServerMessageContext, sid: number, code: string, message: string): void {
  const s = ctx.agents.get(sid)
  if (s === undefined) return
  const coded = isErrorCode(code) ? code : 'RG_ERR_AUTH'
  ctx.countAuthFailure(s.remote, coded)
  s.log.warn({ endpointId: s.endpointId, code: coded }, 'agent refused by the server')
  s.fail(new RelaygateError(coded, message))
}

function onFlags (ctx: ServerMessageContext, set: Array<[string, number]>): void {
  // Push at once instead of waiting for the next check-in.
  for (const [endpointId, flags] of set) ctx.agents.setFlags(endpointId, flags, true)
}

function onKick (ctx: ServerMessageContext, endpointId: string, sid: number | undefined, code: string, message: string): void {
  const err = new RelaygateError(isErrorCode(code) ? code : 'RG_ERR_ENDPOINT_DELETED', message)
  if (sid === undefined) return ctx.agents.kick(endpointId, err)
  const s = ctx.agents.get(sid)
  if (s !== undefined && s.endpointId === endpointId) s.fail(err)
}

function onPrestage (ctx: ServerMessageContext, sha256: string): void {
  ctx.cache.prestage(sha256).then(
    () => ctx.logger.info({ sha256 }, 'prestaged'),
    err => ctx.logger.warn({ sha256, code: toRelaygateError(err).code }, 'prestage failed'))
}

/** A server message for one agent: passed down without the sid. */
function toAgent (ctx: ServerMessageContext, msg: AgentDownWithSid): void {
  const { sid, ...down } = msg
  ctx.agents.get(sid)?.deliver(down)
}

/** A tunnel stream from the server for one of our agents: open one to the agent and join them. */
export function onServerStream (ctx: ServerMessageContext, up: MuxStream): void {
  const { sid, ...forAgent } = parseStreamMeta(up, ServerStreams)
  const s = ctx.agents.get(sid)
  if (s === undefined || !s.ready) {
    up.destroy(new RelaygateError('RG_ERR_TUNNEL_CLOSED', 'that agent is not connected to this relay'))
    return
  }
  let down: MuxStream
  try {
    down = s.mux.openStream(encodeStreamMeta(forAgent))
  } catch (err) {
    up.destroy(toRelaygateError(err, 'RG_ERR_TUNNEL_CLOSED'))
    return
  }
  ctx.countStream()
  s.log.trace({ meta: forAgent, streamId: down.id }, 'tunnel stream')
  if (ctx.tunnelChunk === undefined) return spliceStreams(up, down)
  up.pipe(tapStream(ctx.tunnelChunk, 'to-agent')).pipe(down)
  down.pipe(tapStream(ctx.tunnelChunk, 'to-server')).pipe(up)
  up.once('error', err => down.destroy(err))
  down.once('error', err => up.destroy(err))
}

/** A pass-through that lets a hostile-relay test change tunnel bytes (see RelayTaps). */
function tapStream (fn: (chunk: Buffer, direction: 'to-agent' | 'to-server') => Buffer, direction: 'to-agent' | 'to-server'): Transform {
  return new Transform({ transform: (chunk: Buffer, _enc, cb) => cb(null, fn(chunk, direction)) })
}
