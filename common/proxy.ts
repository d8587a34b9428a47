/// <reference path="./proxy-from-env.d.ts" />
import http from 'node:http'
import net from 'node:net'
import tls from 'node:tls'
import { getProxyForUrl } from 'proxy-from-env'
import { RelaygateError } from '../protocol/errors.js'

/**
 * Corporate networks (issue 17): relays (to the server) and agents (to
 * relays, and their downloads) reach out through an HTTP CONNECT proxy, from
 * `--proxy` or the standard variables (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
 * NO_PROXY, read by proxy-from-env). The proxy only carries a tunnel: TLS and
 * the certificate pins are end to end, so a proxy sees host and port, and
 * nothing else.
 */

/** The proxy to reach `target` (ws, wss, http or https) through, or null for a direct connection. */
export function proxyFor (target: string, explicit?: string): URL | null {
  // proxy-from-env knows the http(s) schemes' variables; a WebSocket goes where its HTTP twin would.
  const asHttp = target.replace(/^ws:/, 'http:').replace(/^wss:/, 'https:')
  const fromEnv = getProxyForUrl(asHttp)
  // An explicit --proxy replaces the variables' proxy, not their NO_PROXY list.
  const chosen = explicit === undefined || explicit === '' ? fromEnv : (bypassed(asHttp) ? '' : explicit)
  if (chosen === '') return null
  return verifyProxyUrl(chosen)
}

/** True when NO_PROXY says to go direct to `url`. */
function bypassed (url: string): boolean {
  const saved = { https: process.env.HTTPS_PROXY, http: process.env.HTTP_PROXY, all: process.env.ALL_PROXY }
  // Asked with a placeholder proxy: an empty answer means NO_PROXY matched.
  process.env.HTTPS_PROXY = process.env.HTTP_PROXY = process.env.ALL_PROXY = 'http://placeholder.invalid:1'
  try {
    return getProxyForUrl(url) === ''
  } finally {
    for (const [k, v] of [['HTTPS_PROXY', saved.https], ['HTTP_PROXY', saved.http], ['ALL_PROXY', saved.all]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

/** An http:// proxy URL (credentials allowed), or RG_ERR_CONFIG. */
export function verifyProxyUrl (value: string): URL {
  let url: URL
  try {
    url = new URL(value.includes('://') ? value : `http://${value}`)
  } catch {
    throw new RelaygateError('RG_ERR_CONFIG', `--proxy is not a URL: ${redactProxy(value)}`)
  }
  if (url.protocol !== 'http:') throw new RelaygateError('RG_ERR_CONFIG', `--proxy must be an http:// proxy (HTTP CONNECT), got ${url.protocol}//…`)
  return url
}

/** The proxy URL without its password, for logs and messages. */
export function redactProxy (value: string | URL): string {
  try {
    const url = new URL(String(value))
    if (url.password !== '') url.password = '***'
    return url.toString()
  } catch {
    return '(unreadable proxy URL)'
  }
}

/**
 * A TCP tunnel to host:port through the proxy (HTTP CONNECT, with Basic
 * credentials from the proxy URL). Refused or failed: RG_ERR_PROXY.
 */
export async function connectThrough (proxy: URL, host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  const authority = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`
  const headers: Record<string, string> = { host: authority }
  if (proxy.username !== '') {
    const credentials = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`
    headers['proxy-authorization'] = `Basic ${Buffer.from(credentials).toString('base64')}`
  }
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: proxy.hostname.replace(/^\[|\]$/g, ''), port: Number(proxy.port === '' ? 80 : proxy.port), method: 'CONNECT', path: authority, headers, timeout: timeoutMs })
    const fail = (message: string): void => {
      req.destroy()
      reject(new RelaygateError('RG_ERR_PROXY', `proxy ${redactProxy(proxy)}: ${message}`))
    }
    req.once('connect', (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy()
        return fail(`CONNECT ${authority} answered ${res.statusCode ?? '?'} ${res.statusMessage ?? ''}${res.statusCode === 407 || res.statusCode === 401 ? ' (check the user and password in the proxy URL)' : ''}`.trim())
      }
      if (head.length > 0) socket.unshift(head)
      resolve(socket)
    })
    req.once('timeout', () => fail(`no answer to CONNECT ${authority} within ${timeoutMs} ms`))
    req.once('error', err => fail(`cannot reach it (${(err as NodeJS.ErrnoException).code ?? err.message})`))
    req.end()
  })
}

/** Through the tunnel, TLS to the target (certificate checked by the caller: pins or CA verdict). */
export function tlsOver (socket: net.Socket, host: string): tls.TLSSocket {
  return tls.connect({ socket, servername: net.isIP(host) === 0 ? host : undefined, rejectUnauthorized: false })
}
