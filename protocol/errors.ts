/**
 * Every error relaygate reports has a stable code. Codes that end a
 * connection carry a WebSocket close code (4000-4999, the range for
 * applications); codes answered over HTTP carry a status.
 * docs/errors.md documents each one (a test checks that).
 */
export const ErrorCode = {
  RG_ERR_PROTOCOL: { close: 4000, status: 400, message: 'malformed or unexpected frame' },
  RG_ERR_FRAME_TOO_LARGE: { close: 4001, status: 413, message: 'frame larger than the limit' },
  RG_ERR_VERSION: { close: 4002, status: 400, message: 'incompatible protocol version' },
  RG_ERR_AUTH: { close: 4003, status: 401, message: 'authentication failed' },
  RG_ERR_EDGE_ID_MISMATCH: { close: 4004, status: 403, message: 'edge id differs from the one associated with the endpoint' },
  RG_ERR_ENDPOINT_UNKNOWN: { close: 4005, status: 404, message: 'unknown or deleted endpoint' },
  RG_ERR_RATE_LIMIT: { close: 4006, status: 429, message: 'too many requests' },
  RG_ERR_TOO_MANY_STREAMS: { close: 4007, status: 429, message: 'too many streams' },
  RG_ERR_LIVENESS: { close: 4008, status: 504, message: 'peer stopped answering' },
  RG_ERR_GOING_AWAY: { close: 4009, status: 503, message: 'peer is shutting down' },
  RG_ERR_FLOW_CONTROL: { close: 4010, status: 400, message: 'peer sent more than its window' },
  RG_ERR_DRAIN_TIMEOUT: { close: 4011, status: 503, message: 'peer stopped reading' },
  RG_ERR_REPLACED: { close: 4012, status: 409, message: 'connection replaced by a newer one' },
  RG_ERR_ENDPOINT_DELETED: { close: 4013, status: 410, message: 'endpoint deleted' },
  RG_ERR_UPSTREAM_UNAVAILABLE: { close: 4014, status: 503, message: 'relay has no link to the server' },
  RG_ERR_RELAY_REVOKED: { close: 4015, status: 401, message: 'relay token unknown or revoked' },
  RG_ERR_QUEUE_FULL: { close: 4016, status: 503, message: 'queue limit reached' },
  RG_ERR_STREAM_RESET: { close: 4017, status: 502, message: 'stream reset by peer' },
  RG_ERR_PIN_MISMATCH: { close: 4018, status: 495, message: 'TLS certificate does not match the pinned fingerprint' },
  RG_ERR_INTERNAL: { close: 4019, status: 500, message: 'internal error' },
  RG_ERR_STREAM_REFUSED: { close: 4020, status: 502, message: 'peer does not accept this kind of stream' },
  RG_ERR_TUNNEL_CLOSED: { close: 4021, status: 502, message: 'the tunnel closed' },
  RG_ERR_CREDENTIAL_USED: { close: 4022, status: 409, message: 'tunnel credentials already used or retired' },
  RG_ERR_TCP_NOT_ALLOWED: { close: 4023, status: 403, message: 'the agent does not allow this TCP port' },
  RG_ERR_TARGET_UNREACHABLE: { close: 4024, status: 502, message: 'the agent could not reach its tunnel target' },
  RG_ERR_ARTIFACT_UNKNOWN: { close: 4025, status: 404, message: 'no artifact with that name or digest' },
  RG_ERR_DIGEST_MISMATCH: { close: 4026, status: 502, message: 'bytes do not match their sha256' },
  RG_ERR_TUNNEL_TAMPERED: { close: 4027, status: 502, message: 'tunnel bytes failed end-to-end authentication' },
  RG_ERR_BAD_REQUEST: { close: 0, status: 400, message: 'bad request' },
  RG_ERR_BAD_JSON: { close: 0, status: 400, message: 'request body is not valid JSON' },
  RG_ERR_UNAUTHORIZED: { close: 0, status: 401, message: 'missing, unknown or revoked API token' },
  RG_ERR_NOT_FOUND: { close: 0, status: 404, message: 'not found' },
  RG_ERR_METHOD_NOT_ALLOWED: { close: 0, status: 405, message: 'method not allowed' },
  RG_ERR_BODY_TOO_LARGE: { close: 0, status: 413, message: 'request body too large' },
  RG_ERR_CONFIG: { close: 0, status: 400, message: 'invalid configuration' },
  RG_ERR_PORT_IN_USE: { close: 0, status: 409, message: 'another process listens on the port' },
  RG_ERR_LISTEN: { close: 0, status: 503, message: 'could not listen on the address for a while' },
  RG_ERR_BAD_JOIN_TOKEN: { close: 0, status: 400, message: 'join token cannot be decoded' },
  RG_ERR_CLOSED: { close: 0, status: 503, message: 'already closed' },
  RG_ERR_NO_RELAY: { close: 0, status: 503, message: 'no relay could be reached' },
  RG_ERR_TUNNEL_TIMEOUT: { close: 0, status: 504, message: 'the tunnel did not open in time' },
  RG_ERR_NO_TARGET: { close: 0, status: 409, message: 'no tunnel target configured for this endpoint' },
  RG_ERR_DISK_FULL: { close: 0, status: 507, message: 'not enough disk space' },
  RG_ERR_PATH_ESCAPE: { close: 0, status: 400, message: 'path leaves the agent\'s files directory' },
  RG_ERR_EXEC_NOT_ALLOWED: { close: 0, status: 403, message: 'the agent does not allow running commands' },
  RG_ERR_EXEC_FAILED: { close: 0, status: 500, message: 'the command failed' },
  RG_ERR_DOWNLOAD_FAILED: { close: 0, status: 502, message: 'the artifact download failed' },
  RG_ERR_JOB_DEADLINE: { close: 0, status: 504, message: 'the job\'s deadline passed before it finished here' },
  RG_ERR_ORDER_FORGED: { close: 0, status: 403, message: 'the agent refused an order that does not verify end to end' },
  RG_ERR_ORDER_REPLAYED: { close: 0, status: 409, message: 'the agent refused an order it had already seen' },
  RG_ERR_REPORT_FORGED: { close: 0, status: 403, message: 'the server refused a report that does not verify end to end' },
  RG_ERR_STORE_UNAVAILABLE: { close: 0, status: 503, message: 'the server\'s database cannot be reached' },
  RG_ERR_PEER_UNAVAILABLE: { close: 0, status: 503, message: 'the server replica that holds the relay cannot be reached' },
  RG_ERR_TUNNEL_MOVED: { close: 0, status: 503, message: 'the endpoint\'s tunnel is now held by another server replica' },
  RG_ERR_UPDATE_UNSUPPORTED: { close: 0, status: 409, message: 'this process cannot update itself' },
  RG_ERR_UPDATE_BAD_BINARY: { close: 0, status: 422, message: 'the update\'s executable does not run or is not the version ordered' },
  RG_ERR_UPDATE_ROLLED_BACK: { close: 0, status: 500, message: 'the new version did not come up healthy and was rolled back' },
  RG_ERR_UPDATE_TIMEOUT: { close: 0, status: 504, message: 'the update did not finish before its deadline' },
  RG_ERR_UPDATE_ABORTED: { close: 0, status: 409, message: 'the rollout was aborted before this target updated' },
  RG_ERR_UPDATE_STATE: { close: 0, status: 409, message: 'the rollout is not in a state that allows this' },
  RG_ERR_ARTIFACT_EXISTS: { close: 0, status: 409, message: 'an artifact with that name exists' },
  RG_ERR_SERVER_UNREACHABLE: { close: 0, status: 503, message: 'the server cannot be reached' },
  RG_ERR_PROXY: { close: 0, status: 502, message: 'the HTTP proxy refused or failed the connection' },
  RG_ERR_FORBIDDEN: { close: 0, status: 403, message: 'the token\'s role does not allow this' },
  RG_ERR_NAME_TAKEN: { close: 0, status: 409, message: 'the name is taken' },
  RG_ERR_LAST_ADMIN: { close: 0, status: 409, message: 'the last admin token cannot be revoked' },
  RG_ERR_BAD_GATEWAY: { close: 0, status: 502, message: 'the tunnel target answered with a malformed HTTP response' }
} as const

export type ErrorCodeName = keyof typeof ErrorCode

export class RelaygateError extends Error {
  readonly code: ErrorCodeName
  readonly closeCode: number
  readonly status: number

  constructor (code: ErrorCodeName, message?: string, options?: { cause?: unknown }) {
    super(message ?? ErrorCode[code].message, options)
    this.name = 'RelaygateError'
    this.code = code
    this.closeCode = ErrorCode[code].close
    this.status = ErrorCode[code].status
  }
}

const byCloseCode = new Map<number, ErrorCodeName>()
for (const [name, info] of Object.entries(ErrorCode)) {
  if (info.close !== 0) byCloseCode.set(info.close, name as ErrorCodeName)
}

/** The error code a close code stands for, or undefined for non-relaygate codes. */
export function codeForClose (closeCode: number): ErrorCodeName | undefined {
  return byCloseCode.get(closeCode)
}

export function isErrorCode (value: unknown): value is ErrorCodeName {
  return typeof value === 'string' && Object.hasOwn(ErrorCode, value)
}

/** Wraps anything thrown into a RelaygateError, keeping coded errors as they are. */
export function toRelaygateError (err: unknown, fallback: ErrorCodeName = 'RG_ERR_INTERNAL'): RelaygateError {
  if (err instanceof RelaygateError) return err
  const message = err instanceof Error ? err.message : String(err)
  // A full disk is the same condition wherever it is met (cache, results, an agent's files).
  const errno = (err as { code?: unknown } | null)?.code
  if (errno === 'ENOSPC' || errno === 'EDQUOT') return new RelaygateError('RG_ERR_DISK_FULL', message, { cause: err })
  return new RelaygateError(fallback, message, { cause: err })
}

/**
 * Close codes that mean "do not come back with the same credentials":
 * a reconnect loop stops on them instead of retrying.
 */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  ErrorCode.RG_ERR_VERSION.close,
  ErrorCode.RG_ERR_AUTH.close,
  ErrorCode.RG_ERR_EDGE_ID_MISMATCH.close,
  ErrorCode.RG_ERR_ENDPOINT_UNKNOWN.close,
  ErrorCode.RG_ERR_ENDPOINT_DELETED.close,
  ErrorCode.RG_ERR_RELAY_REVOKED.close
])

/**
 * Close codes that mean "this peer, not you": an agent moves on to the next
 * relay of its list (one shutting down, one whose certificate is not pinned).
 */
export const NEXT_PEER_CLOSE_CODES: ReadonlySet<number> = new Set([
  ErrorCode.RG_ERR_GOING_AWAY.close,
  ErrorCode.RG_ERR_PIN_MISMATCH.close
])
