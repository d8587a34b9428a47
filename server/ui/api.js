// The API token (sessionStorage, this tab only) and calls to the REST API.

const TOKEN_KEY = 'relaygate.adminToken'

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  listeners: new Set(),
  signIn (token) {
    this.token = token
    sessionStorage.setItem(TOKEN_KEY, token)
    for (const l of this.listeners) l(null)
  },
  signOut (message = null) {
    this.token = null
    sessionStorage.removeItem(TOKEN_KEY)
    for (const l of this.listeners) l(message)
  }
}

export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

export function errorFrom (status, body, fallback) {
  const err = body !== null && typeof body === 'object' ? body.error : undefined
  return new ApiError(status, err?.code ?? `HTTP_${status}`, err?.message ?? fallback)
}

export function parseBody (text) {
  if (text === '') return null
  try { return JSON.parse(text) } catch { return text }
}

/** Calls the admin API; resolves with the parsed body (and headers with `withHeaders`). */
export async function api (method, path, body, { withHeaders = false } = {}) {
  const headers = { authorization: `Bearer ${session.token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' })
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `cannot reach the server (${err.message})`)
  }
  const data = parseBody(await res.text())
  if (res.status === 401) {
    session.signOut('The server refused the token (it may have been revoked). Sign in again.')
  }
  if (!res.ok) throw errorFrom(res.status, data, res.statusText)
  return withHeaders ? { data, headers: res.headers } : data
}
