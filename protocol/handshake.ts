/**
 * The hello exchange, the same on both links: each side's first frame is a
 * HELLO (u16 protocol version, then a JSON body with its role). A peer with
 * another version is refused with RG_ERR_VERSION; any other first frame or a
 * body that does not match the role's schema with RG_ERR_PROTOCOL.
 *
 *   agent  -> relay   {role:'agent', endpointId, edgeId, agentVersion}
 *   relay  -> agent   {role:'relay', version}
 *   relay  -> server  {role:'relay', token, name?, version, wsUrl?, wssUrl?, fingerprint?}
 *   server -> relay   {role:'server', relayId, settings, version}
 *   replica <-> replica {role:'replica', replicaId, proof, version}   the dialer first; the proof binds
 *                     the cluster secret to this TLS session (peer-auth.ts)
 */
import { Type, Id, EdgeId, NonEmpty, Sha256Hex, strict, compile, type Static } from './schema.js'
import { SettingsSchema } from './settings.js'
import { FrameType, PROTOCOL_VERSION, type Frame } from './frame.js'
import { RelaygateError } from './errors.js'
import { decodeHello } from './decode.js'
import { frames } from './encode.js'

const Version = NonEmpty(64)
const Url = Type.Optional(NonEmpty(2048))

export const AgentHelloSchema = strict({ role: Type.Literal('agent'), endpointId: Id, edgeId: EdgeId, agentVersion: Version })
export const RelayToAgentHelloSchema = strict({ role: Type.Literal('relay'), version: Version })
export const RelayHelloSchema = strict({
  role: Type.Literal('relay'),
  token: NonEmpty(512),
  name: Type.Optional(NonEmpty(128)),
  version: Version,
  wsUrl: Url,
  wssUrl: Url,
  fingerprint: Type.Optional(NonEmpty(128))
})
export const ServerHelloSchema = strict({ role: Type.Literal('server'), relayId: Id, settings: SettingsSchema, version: Version })
export const ReplicaHelloSchema = strict({ role: Type.Literal('replica'), replicaId: Id, proof: Sha256Hex, version: Version })

export type AgentHello = Static<typeof AgentHelloSchema>
export type RelayToAgentHello = Static<typeof RelayToAgentHelloSchema>
export type RelayHello = Static<typeof RelayHelloSchema>
export type ServerHello = Static<typeof ServerHelloSchema>
export type ReplicaHello = Static<typeof ReplicaHelloSchema>

/** Who says hello to whom: `self` and `peer` name the sides in errors. */
interface Side<T> { self: string, peer: string, parse: (value: unknown) => T }

export const Hellos = {
  /** The relay reading an agent's hello. */
  fromAgent: { self: 'relay', peer: 'agent', parse: compile('agent hello', AgentHelloSchema) } satisfies Side<AgentHello>,
  /** The agent reading the relay's answer. */
  fromRelayToAgent: { self: 'agent', peer: 'relay', parse: compile('relay hello', RelayToAgentHelloSchema) } satisfies Side<RelayToAgentHello>,
  /** The server reading a relay's hello. */
  fromRelay: { self: 'server', peer: 'relay', parse: compile('relay hello', RelayHelloSchema) } satisfies Side<RelayHello>,
  /** The relay reading the server's answer. */
  fromServer: { self: 'relay', peer: 'server', parse: compile('server hello', ServerHelloSchema) } satisfies Side<ServerHello>,
  /** A server replica reading a sibling's hello (either side of a peer link). */
  fromReplica: { self: 'replica', peer: 'replica', parse: compile('replica hello', ReplicaHelloSchema) } satisfies Side<ReplicaHello>
} as const

/** The HELLO frame carrying `body` at this build's protocol version. */
export function helloFrame (body: AgentHello | RelayToAgentHello | RelayHello | ServerHello | ReplicaHello): Buffer {
  return frames.hello(PROTOCOL_VERSION, body)
}

/** Reads a peer's hello: checks the frame type, the version, then the body against the side's schema. */
export function readHello<T> (frame: Frame, side: Side<T>): T {
  if (frame.type !== FrameType.HELLO) {
    throw new RelaygateError('RG_ERR_PROTOCOL', `the ${side.peer}'s first frame must be a hello, got 0x${frame.type.toString(16)}`)
  }
  const { version, body } = decodeHello(frame.payload)
  if (version !== PROTOCOL_VERSION) {
    throw new RelaygateError('RG_ERR_VERSION', `${side.self} speaks protocol ${PROTOCOL_VERSION}, ${side.peer} ${version}`)
  }
  if (body.role !== side.peer) throw new RelaygateError('RG_ERR_PROTOCOL', `only a ${side.peer} may say hello here, not ${JSON.stringify(body.role)?.slice(0, 32)}`)
  return side.parse(body)
}
