/**
 * CONTROL frames: every control message of every link is framed here and
 * read back here, against the schema of its direction.
 */
import { FrameType, type Frame } from './frame.js'
import { RelaygateError } from './errors.js'
import { decodeJson } from './decode.js'
import { frames } from './encode.js'
import type { AgentToRelay, RelayToAgent } from './agent-messages.js'
import type { RelayToServer, ServerToRelay } from './relay-messages.js'

export type ControlMessage = AgentToRelay | RelayToAgent | RelayToServer | ServerToRelay

/** The CONTROL frame carrying one message. */
export function controlFrame (msg: ControlMessage): Buffer {
  return frames.control(msg)
}

/** Decodes a CONTROL frame's JSON and validates it against one direction's schema (throws RG_ERR_PROTOCOL). */
export function readControl<T> (frame: Frame, set: { parse: (value: unknown) => T }): T {
  if (frame.type !== FrameType.CONTROL) throw new RelaygateError('RG_ERR_PROTOCOL', `expected a control frame, got 0x${frame.type.toString(16)}`)
  return set.parse(decodeJson(frame.payload))
}
