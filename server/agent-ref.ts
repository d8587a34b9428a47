import type { Mux, MuxStream } from '../protocol/index.js'
import {
  encodeStreamMeta, orderMac, verifyReportMac, type E2eKeys, type ServerToRelay, type TunnelStreamMeta, type UnsignedOrder
} from '../protocol/messages.js'

/** An authenticated agent as other server modules see it. */
export interface AgentRef {
  readonly relayId: string
  readonly sid: number
  readonly endpointId: string
  readonly edgeId: string
  /** Sends an order to the agent (through its relay), with its counter and end-to-end MAC. */
  order: (order: UnsignedOrder) => void
  /** True when a report carries this agent's end-to-end MAC. */
  verifies: (report: { mac?: unknown }) => boolean
  /** Opens a tunnel stream to the agent (through its relay, which adds nothing secret). */
  openStream: (meta: TunnelStreamMeta) => MuxStream
  readonly online: boolean
}

/** What an agent reference needs of its relay link and of its session on it. */
interface RefLink { readonly relayId: string, readonly mux: Mux, send: (message: ServerToRelay) => void }
interface RefSession { readonly endpointId: string, readonly edgeId: string, readonly online: boolean }

/**
 * An authenticated agent as other server modules see it: orders go down with
 * a counter and a MAC bound to the agent's nonce of this session; reports
 * come up with the agent's MAC.
 */
export function agentRef (link: RefLink, session: RefSession, sid: number, keys: E2eKeys, agentNonce: string): AgentRef {
  const party = { endpointId: session.endpointId, edgeId: session.edgeId }
  let counter = 0
  return {
    relayId: link.relayId,
    sid,
    endpointId: session.endpointId,
    edgeId: session.edgeId,
    order: order => {
      const body = { ...order, n: ++counter }
      link.send({ ...body, mac: orderMac(keys, party, agentNonce, body), sid } as ServerToRelay)
    },
    verifies: report => verifyReportMac(keys, party, report),
    openStream: meta => link.mux.openStream(encodeStreamMeta({ ...meta, sid })),
    get online () { return session.online && !link.mux.closed }
  }
}
