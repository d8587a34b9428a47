// relaygate dashboard. Preact + htm as plain ES modules (no bundler, no
// network at run time). The admin token lives in sessionStorage and goes
// only into Authorization headers, never into a URL.
import { h, render } from '/ui/vendor/preact.mjs'
import { useState, useEffect, useRef, useCallback } from '/ui/vendor/hooks.mjs'
import htm from '/ui/vendor/htm.mjs'

const html = htm.bind(h)
const TOKEN_KEY = 'relaygate.adminToken'
const PAGE_SIZE = 50

// ---------------------------------------------------------------------------
// Session and API

const session = {
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

class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

function errorFrom (status, body, fallback) {
  const err = body !== null && typeof body === 'object' ? body.error : undefined
  return new ApiError(status, err?.code ?? `HTTP_${status}`, err?.message ?? fallback)
}

function parseBody (text) {
  if (text === '') return null
  try { return JSON.parse(text) } catch { return text }
}

/** Calls the admin API; resolves with the parsed body (and headers with `withHeaders`). */
async function api (method, path, body, { withHeaders = false } = {}) {
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
    session.signOut('The server refused the admin token (it may have changed). Sign in again.')
  }
  if (!res.ok) throw errorFrom(res.status, data, res.statusText)
  return withHeaders ? { data, headers: res.headers } : data
}

// ---------------------------------------------------------------------------
// Live updates: GET /api/events read with fetch() (EventSource cannot send headers)

const live = {
  status: 'connecting',
  statusListeners: new Set(),
  changeListeners: new Set(),
  setStatus (s) {
    this.status = s
    for (const l of this.statusListeners) l(s)
  },
  emit (topic) {
    for (const l of this.changeListeners) l(topic)
  }
}

function startEvents () {
  const ctl = new AbortController()
  let delay = 1000
  let connectedBefore = false
  const handleBlock = block => {
    let event = 'message'
    let data = ''
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'event') event = value
      else if (field === 'data') data += value
    }
    if (event === 'ready') {
      delay = 1000
      live.setStatus('live')
      // After a reconnect, anything may have changed while we were away.
      if (connectedBefore) live.emit('*')
      connectedBefore = true
    } else if (event === 'change') {
      try { live.emit(JSON.parse(data).topic) } catch {}
    }
  }
  ;(async () => {
    while (!ctl.signal.aborted) {
      try {
        const res = await fetch('/api/events', {
          headers: { authorization: `Bearer ${session.token}`, accept: 'text/event-stream' },
          cache: 'no-store',
          signal: ctl.signal
        })
        if (res.status === 401) {
          session.signOut('The server refused the admin token. Sign in again.')
          return
        }
        if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}`)
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
        let buffer = ''
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          buffer += value.replace(/\r\n?/g, '\n')
          let end
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            handleBlock(buffer.slice(0, end))
            buffer = buffer.slice(end + 2)
          }
        }
      } catch {
        if (ctl.signal.aborted) return
      }
      live.setStatus('reconnecting')
      await new Promise(resolve => setTimeout(resolve, delay))
      delay = Math.min(delay * 2, 15_000)
    }
  })()
  return () => ctl.abort()
}

/** Calls `fn` when one of `topics` changes (or on '*', after a reconnect). */
function useLive (topics, fn) {
  const ref = useRef(fn)
  ref.current = fn
  const key = topics.join(',')
  useEffect(() => {
    const wanted = key.split(',')
    const listener = topic => { if (topic === '*' || wanted.includes(topic)) ref.current() }
    live.changeListeners.add(listener)
    return () => live.changeListeners.delete(listener)
  }, [key])
}

function useLiveStatus () {
  const [status, setStatus] = useState(live.status)
  useEffect(() => {
    live.statusListeners.add(setStatus)
    return () => live.statusListeners.delete(setStatus)
  }, [])
  return status
}

/**
 * Loads data with `load()` now, whenever `deps` change and whenever one of
 * `topics` changes. At most one request runs at a time: changes that arrive
 * meanwhile cause one more load, not one per change.
 */
function useResource (load, deps, topics = []) {
  const [state, setState] = useState({ data: undefined, meta: undefined, error: null, loading: true })
  const loadRef = useRef(load)
  loadRef.current = load
  const run = useRef({ inflight: false, again: false, mounted: true })
  const refresh = useCallback(async () => {
    const r = run.current
    if (r.inflight) {
      r.again = true
      return
    }
    r.inflight = true
    try {
      do {
        r.again = false
        try {
          const out = await loadRef.current()
          if (r.mounted && !r.again) setState({ data: out?.data, meta: out?.meta, error: null, loading: false })
        } catch (err) {
          if (r.mounted && !r.again) setState(s => ({ ...s, error: err, loading: false }))
        }
      } while (r.again && r.mounted)
    } finally {
      r.inflight = false
    }
  }, [])
  useEffect(() => {
    run.current.mounted = true
    return () => { run.current.mounted = false }
  }, [])
  useEffect(() => { refresh() }, deps)
  useLive(topics, refresh)
  return [state, refresh]
}

/** Re-renders every `ms` (for "12 s ago"). */
function useNow (ms = 10_000) {
  const [now, setNow] = useState(Date.now())
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms)
    return () => clearInterval(timer)
  }, [ms])
  return now
}

/** Calls `fn` every `ms` while `active`. */
function useInterval (fn, ms, active) {
  const ref = useRef(fn)
  ref.current = fn
  useEffect(() => {
    if (!active) return
    const timer = setInterval(() => ref.current(), ms)
    return () => clearInterval(timer)
  }, [ms, active])
}

// ---------------------------------------------------------------------------
// Routing: #/endpoints, #/endpoints/:id, #/relays, #/artifacts, #/jobs, #/jobs/:id, #/settings

function parseRoute () {
  const parts = (location.hash.replace(/^#\/?/, '') || 'endpoints').split('/').map(decodeURIComponent)
  return { page: parts[0], id: parts[1] ?? null }
}

function useRoute () {
  const [route, setRoute] = useState(parseRoute())
  useEffect(() => {
    const onChange = () => setRoute(parseRoute())
    window.addEventListener('hashchange', onChange)
    return () => window.removeEventListener('hashchange', onChange)
  }, [])
  return route
}

const go = hash => { location.hash = hash }

// ---------------------------------------------------------------------------
// Formatting

function fmtBytes (n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`
}

function fmtAgo (iso, now) {
  if (iso === null || iso === undefined) return 'never'
  const s = Math.round((now - Date.parse(iso)) / 1000)
  if (s < 5) return 'just now'
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86_400)} d ago`
}

function fmtTime (iso) {
  if (iso === null || iso === undefined) return '–'
  return new Date(iso).toLocaleString()
}

function fmtDuration (seconds) {
  if (typeof seconds !== 'number') return '–'
  if (seconds < 120) return `${seconds} s`
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`
  return `${(seconds / 86_400).toFixed(1)} d`
}

const short = (s, n = 8) => s === null || s === undefined ? '–' : (s.length > n + 1 ? `${s.slice(0, n)}…` : s)

/** Splits a command line into argv: whitespace separates, quotes group, backslash escapes. */
function splitArgs (line) {
  const out = []
  let cur = null
  let quote = null
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (quote !== null) {
      if (c === quote) quote = null
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i]
      else cur += c
    } else if (c === '"' || c === "'") {
      quote = c
      cur ??= ''
    } else if (c === '\\' && i + 1 < line.length) {
      cur = (cur ?? '') + line[++i]
    } else if (/\s/.test(c)) {
      if (cur !== null) out.push(cur)
      cur = null
    } else {
      cur = (cur ?? '') + c
    }
  }
  if (quote !== null) throw new Error(`unclosed ${quote} quote`)
  if (cur !== null) out.push(cur)
  return out
}

// ---------------------------------------------------------------------------
// Small components

const badgeKinds = {
  online: 'ok', offline: '', open: 'ok', requested: 'warn', closed: '',
  queued: '', downloading: 'info', verifying: 'info', running: 'info', pending: '', dispatched: 'info',
  succeeded: 'ok', done: 'ok', completed: 'ok', failed: 'bad', error: 'bad', cancelled: '', canceled: '',
  connected: 'ok', disconnected: '', revoked: 'bad'
}

function Badge ({ value, label }) {
  return html`<span class=${`badge ${badgeKinds[value] ?? ''}`} data-value=${value}>${label ?? value}</span>`
}

function ErrorBox ({ error, what }) {
  if (error === null || error === undefined) return null
  const missing = error.status === 404 && error.code === 'RG_ERR_NOT_FOUND' && what !== undefined
  return html`<div class="error" role="alert">
    ${missing ? html`The ${what} API is not available on this server yet. ` : ''}
    ${error.message}${error.code !== undefined ? html` <code>${error.code}</code>` : ''}
  </div>`
}

function Progress ({ value, state }) {
  const pct = Math.max(0, Math.min(100, Math.round((value ?? 0) * 100)))
  const cls = state === 'succeeded' ? 'done' : (state === 'failed' ? 'failed' : '')
  return html`<div class="progress-line"><progress class=${cls} max="100" value=${pct}></progress><span>${pct}%</span></div>`
}

function CopyButton ({ text }) {
  const [copied, setCopied] = useState(false)
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text)
      setCopied(true)
      setTimeout(() => setCopied(false), 1500)
    } catch {
      setCopied(false)
    }
  }
  return html`<button type="button" class="btn small" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button>`
}

function Pager ({ offset, limit, total, onOffset }) {
  if (total === 0) return null
  const page = Math.floor(offset / limit) + 1
  const pages = Math.max(1, Math.ceil(total / limit))
  return html`<div class="pager">
    <span class="muted" data-testid="range">${offset + 1}–${Math.min(offset + limit, total)} of ${total.toLocaleString()}</span>
    <div class="btn-row">
      <button class="btn small" disabled=${offset === 0} onClick=${() => onOffset(0)}>First</button>
      <button class="btn small" disabled=${offset === 0} onClick=${() => onOffset(Math.max(0, offset - limit))}>Previous</button>
      <span class="muted">page ${page} of ${pages}</span>
      <button class="btn small" disabled=${offset + limit >= total} onClick=${() => onOffset(offset + limit)}>Next</button>
      <button class="btn small" disabled=${offset + limit >= total} onClick=${() => onOffset((pages - 1) * limit)}>Last</button>
    </div>
  </div>`
}

// ---------------------------------------------------------------------------
// Login

function Login ({ message }) {
  const [token, setToken] = useState('')
  const [error, setError] = useState(message)
  const [busy, setBusy] = useState(false)
  const submit = async e => {
    e.preventDefault()
    const value = token.trim()
    if (value === '') {
      setError('Enter the admin token.')
      return
    }
    setBusy(true)
    setError(null)
    try {
      const res = await fetch('/api/settings', { headers: { authorization: `Bearer ${value}` }, cache: 'no-store' })
      if (res.status === 401) {
        setError('That admin token was refused by the server. Check <data-dir>/admin-token on the server and try again.')
      } else if (!res.ok) {
        const body = parseBody(await res.text())
        setError(`The server answered ${res.status}: ${body?.error?.message ?? res.statusText}`)
      } else {
        session.signIn(value)
      }
    } catch (err) {
      setError(`Cannot reach the server: ${err.message}`)
    } finally {
      setBusy(false)
    }
  }
  return html`<div class="login">
    <form class="card" onSubmit=${submit} autocomplete="off">
      <div class="brand"><img src="/ui/favicon.svg" alt="" /> relaygate</div>
      <p>Sign in with the server's admin token. It is kept for this browser tab only.</p>
      <div class="form-stack">
        <label>Admin token
          <input id="token" type="password" name="token" value=${token} onInput=${e => setToken(e.target.value)} autofocus spellcheck="false" autocomplete="off" />
          <span class="hint">The file <code>admin-token</code> in the server's data dir.</span>
        </label>
        ${error !== null && error !== undefined ? html`<div class="error" role="alert" data-testid="login-error">${error}</div>` : null}
        <button class="btn primary" type="submit" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button>
      </div>
    </form>
  </div>`
}

// ---------------------------------------------------------------------------
// Endpoints

function useRelayNames () {
  const [relays] = useResource(async () => ({ data: await api('GET', '/api/relays') }), [], ['relays'])
  const names = new Map()
  for (const r of relays.data ?? []) names.set(r.id, r.name)
  return names
}

function AgentCommand ({ created, onClose }) {
  return html`<div class="card highlight" data-testid="agent-command">
    <div class="page-head"><h2>Endpoint “${created.name}” created</h2><button class="btn small" onClick=${onClose}>Done</button></div>
    <p>Run this on the machine to manage. The join token inside is shown only now: copy it before you leave this page.</p>
    ${created.warning !== undefined ? html`<div class="notice">${created.warning}</div>` : null}
    <pre class="command" data-testid="command">${created.command}</pre>
    <div class="btn-row"><${CopyButton} text=${created.command} /><a class="btn small" href=${`#/endpoints/${encodeURIComponent(created.id)}`}>Open endpoint</a></div>
  </div>`
}

function AddEndpoint ({ onCreated, onCancel }) {
  const [name, setName] = useState('')
  const [target, setTarget] = useState('')
  const [maxAgents, setMaxAgents] = useState('1')
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const submit = async e => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try {
      const body = { name: name.trim() }
      if (target.trim() !== '') body.tunnelTarget = target.trim()
      if (maxAgents !== '1') body.maxAgents = Number(maxAgents)
      onCreated(await api('POST', '/api/endpoints', body))
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
    }
  }
  return html`<form class="card" onSubmit=${submit}>
    <h2>Add an endpoint</h2>
    <div class="form-row">
      <label>Name<input name="name" required maxlength="128" value=${name} onInput=${e => setName(e.target.value)} placeholder="db-01" /></label>
      <label>Tunnel target <span class="hint">optional, e.g. http://127.0.0.1:2375 or unix:/var/run/docker.sock</span>
        <input name="tunnelTarget" value=${target} onInput=${e => setTarget(e.target.value)} placeholder="http://127.0.0.1:2375" /></label>
      <label>Agents <span class="hint">more than 1: a cluster</span>
        <input name="maxAgents" type="number" min="1" max="64" value=${maxAgents} onInput=${e => setMaxAgents(e.target.value)} /></label>
    </div>
    <div class="btn-row" style=${{ marginTop: '14px' }}>
      <button class="btn primary" type="submit" disabled=${busy || name.trim() === ''}>Create endpoint</button>
      <button class="btn" type="button" onClick=${onCancel}>Cancel</button>
    </div>
    ${error !== null ? html`<div style=${{ marginTop: '12px' }}><${ErrorBox} error=${error} /></div>` : null}
  </form>`
}

function TunnelBadge ({ tunnel }) {
  const state = tunnel?.state ?? 'closed'
  return html`<${Badge} value=${state} label=${state === 'requested' ? 'connecting…' : state} />`
}

function EndpointsPage () {
  const [q, setQ] = useState('')
  const [query, setQuery] = useState('')
  const [offset, setOffset] = useState(0)
  const [adding, setAdding] = useState(false)
  const [created, setCreated] = useState(null)
  const [actionError, setActionError] = useState(null)
  const now = useNow()
  const relayNames = useRelayNames()

  // Search as you type, without a request per key.
  useEffect(() => {
    const timer = setTimeout(() => { setQuery(q.trim()); setOffset(0) }, 250)
    return () => clearTimeout(timer)
  }, [q])

  const [list] = useResource(async () => {
    const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE_SIZE) })
    if (query !== '') params.set('q', query)
    const { data, headers } = await api('GET', `/api/endpoints?${params}`, undefined, { withHeaders: true })
    const total = Number(headers.get('x-total-count') ?? data.length)
    return { data, meta: { total } }
  }, [query, offset], ['endpoints'])

  const connect = async ep => {
    setActionError(null)
    try {
      await api('POST', `/api/endpoints/${encodeURIComponent(ep.id)}/tunnel`)
      go(`#/endpoints/${encodeURIComponent(ep.id)}`)
    } catch (err) {
      setActionError(err)
    }
  }

  const rows = list.data ?? []
  const total = list.meta?.total ?? 0
  return html`<section data-page="endpoints">
    <div class="page-head">
      <div><h1>Endpoints</h1><div class="sub muted">Machines whose agents check in through a relay.</div></div>
      <button class="btn primary" onClick=${() => { setAdding(!adding); setCreated(null) }}>Add endpoint</button>
    </div>
    ${created !== null ? html`<${AgentCommand} created=${created} onClose=${() => setCreated(null)} />` : null}
    ${adding && created === null ? html`<${AddEndpoint} onCreated=${c => { setCreated(c); setAdding(false) }} onCancel=${() => setAdding(false)} />` : null}
    <div class="toolbar">
      <input type="search" placeholder="Search by name, id or edge id" value=${q} onInput=${e => setQ(e.target.value)} aria-label="Search endpoints" />
      <span class="spacer"></span>
      <span class="muted">${list.loading ? 'Loading…' : `${total.toLocaleString()} endpoint${total === 1 ? '' : 's'}${query !== '' ? ' match' : ''}`}</span>
    </div>
    <${ErrorBox} error=${list.error ?? actionError} />
    <div class="table-wrap">
      <table data-testid="endpoints-table">
        <thead><tr><th>Name</th><th>Status</th><th>Relay</th><th>Edge id</th><th>Last seen</th><th>Tunnel</th><th>Refused edge ids</th><th></th></tr></thead>
        <tbody>
          ${rows.length === 0 && !list.loading
            ? html`<tr><td class="empty" colspan="8">${query === '' ? 'No endpoints yet. Add one to get the command for its agent.' : 'No endpoint matches.'}</td></tr>`
            : rows.map(ep => html`<tr key=${ep.id} data-endpoint=${ep.id} data-name=${ep.name} data-status=${ep.status}>
                <td><div class="name-cell"><a href=${`#/endpoints/${encodeURIComponent(ep.id)}`}>${ep.name}</a><span class="mono">${ep.id}</span></div></td>
                <td><${Badge} value=${ep.status} />${ep.maxAgents > 1 ? html` <span class="muted small">${ep.agents.filter(a => a.status === 'online').length}/${ep.maxAgents}</span>` : null}</td>
                <td>${ep.relayId === null ? html`<span class="muted">–</span>` : (relayNames.get(ep.relayId) ?? ep.relayId)}</td>
                <td class="mono" title=${ep.edgeId ?? ''}>${short(ep.edgeId)}</td>
                <td class="nowrap" title=${ep.lastSeen ?? ''}>${ep.status === 'online' ? 'now' : fmtAgo(ep.lastSeen, now)}</td>
                <td><${TunnelBadge} tunnel=${ep.tunnel} /></td>
                <td>${(ep.refusedEdgeIds ?? []).length === 0
                  ? html`<span class="muted">none</span>`
                  : html`<span class="badge bad" title=${ep.refusedEdgeIds.map(r => `${r.edgeId} (${r.code}, ${r.count}×)`).join('\n')}>${ep.refusedEdgeIds.length} refused</span>`}</td>
                <td class="actions">
                  ${ep.tunnel?.state === 'open'
                    ? html`<a class="btn small" href=${`#/endpoints/${encodeURIComponent(ep.id)}`}>Browse</a>`
                    : html`<button class="btn small" onClick=${() => connect(ep)}>Connect</button>`}
                </td>
              </tr>`)}
        </tbody>
      </table>
    </div>
    <${Pager} offset=${offset} limit=${PAGE_SIZE} total=${total} onOffset=${setOffset} />
  </section>`
}

/** Fetches through the tunnel with the Authorization header and shows the answer. */
function TunnelBrowser ({ endpointId }) {
  const [path, setPath] = useState('/')
  const [result, setResult] = useState(null)
  const [busy, setBusy] = useState(false)
  const fetchPath = async p => {
    const rel = p.startsWith('/') ? p : `/${p}`
    setBusy(true)
    const started = performance.now()
    try {
      const res = await fetch(`/api/endpoints/${encodeURIComponent(endpointId)}/proxy${rel}`, {
        headers: { authorization: `Bearer ${session.token}` },
        cache: 'no-store'
      })
      const type = res.headers.get('content-type') ?? ''
      const buf = await res.arrayBuffer()
      const ms = Math.round(performance.now() - started)
      let body
      let kind = 'text'
      if (/^(image|audio|video)\/|octet-stream|zip|gzip/.test(type)) {
        kind = 'binary'
        body = `(${fmtBytes(buf.byteLength)} of ${type || 'binary data'})`
      } else {
        const text = new TextDecoder().decode(buf.byteLength > 512 * 1024 ? buf.slice(0, 512 * 1024) : buf)
        body = text
        if (type.includes('json') || /^\s*[[{]/.test(text)) {
          try {
            body = JSON.stringify(JSON.parse(text), null, 2)
            kind = 'json'
          } catch {}
        }
        if (buf.byteLength > 512 * 1024) body += `\n… (${fmtBytes(buf.byteLength)} in all; first 512 KB shown)`
      }
      setResult({ path: rel, status: res.status, statusText: res.statusText, type, size: buf.byteLength, ms, body, kind })
    } catch (err) {
      setResult({ path: rel, status: 0, statusText: 'network error', type: '', size: 0, ms: 0, body: err.message, kind: 'text' })
    } finally {
      setBusy(false)
    }
  }
  useEffect(() => { fetchPath('/') }, [endpointId])
  return html`<div data-testid="tunnel-browser">
    <form class="form-row" onSubmit=${e => { e.preventDefault(); fetchPath(path) }}>
      <label>Path on the tunnel target<input name="path" class="mono" value=${path} onInput=${e => setPath(e.target.value)} spellcheck="false" /></label>
      <button class="btn primary" type="submit" disabled=${busy}>${busy ? 'Fetching…' : 'Fetch'}</button>
    </form>
    ${result === null
      ? html`<p class="muted">Fetching / …</p>`
      : html`<div style=${{ marginTop: '12px' }}>
          <div class="btn-row small">
            <${Badge} value=${result.status >= 200 && result.status < 400 ? 'succeeded' : 'failed'} label=${`${result.status} ${result.statusText}`} />
            <span class="mono">GET ${result.path}</span>
            <span class="muted">${result.type || 'no content type'} · ${fmtBytes(result.size)} · ${result.ms} ms</span>
          </div>
          <pre class="response" data-testid="tunnel-response" data-kind=${result.kind}>${result.body}</pre>
        </div>`}
  </div>`
}

function EndpointDetail ({ id }) {
  const now = useNow()
  const relayNames = useRelayNames()
  const [error, setError] = useState(null)
  const [ep, refresh] = useResource(async () => ({ data: await api('GET', `/api/endpoints/${encodeURIComponent(id)}`) }), [id], ['endpoints'])
  const e = ep.data
  const state = e?.tunnel?.state ?? 'closed'
  // Events drive updates; a slow poll while connecting covers a dropped event stream.
  useInterval(refresh, 2000, state === 'requested')

  const act = async (method, path, then) => {
    setError(null)
    try {
      await api(method, path)
      if (then !== undefined) then()
      else refresh()
    } catch (err) {
      setError(err)
    }
  }
  const base = `/api/endpoints/${encodeURIComponent(id)}`
  if (e === undefined) {
    return html`<section data-page="endpoint"><p><a href="#/endpoints">← Endpoints</a></p>${ep.error !== null ? html`<${ErrorBox} error=${ep.error} />` : html`<p class="muted">Loading…</p>`}</section>`
  }
  const snap = e.snapshot
  return html`<section data-page="endpoint" data-endpoint=${e.id}>
    <p><a href="#/endpoints">← Endpoints</a></p>
    <div class="page-head">
      <div>
        <h1>${e.name} <${Badge} value=${e.status} /></h1>
        <div class="sub muted mono">${e.id}</div>
      </div>
      <button class="btn danger" onClick=${() => { if (confirm(`Delete endpoint ${e.name}? Its agents are disconnected and refused.`)) act('DELETE', base, () => go('#/endpoints')) }}>Delete endpoint</button>
    </div>
    <${ErrorBox} error=${error ?? ep.error} />
    <div class="card">
      <h2>Tunnel</h2>
      <div class="tunnel-bar">
        ${state === 'closed' ? html`<${Badge} value="closed" /><button class="btn primary" onClick=${() => act('POST', `${base}/tunnel`)}>Connect</button>
          <span class="muted">${e.tunnelTarget === null ? 'The agent’s --tunnel-target is used.' : html`Target <code>${e.tunnelTarget}</code>`}</span>` : null}
        ${state === 'requested' ? html`<span class="connecting" data-testid="connecting"><span class="spinner"></span>connecting…</span>
          <span class="muted">${e.status === 'online' ? 'The agent is opening the tunnel.' : 'Waiting for an agent of this endpoint to come online.'}</span>
          <button class="btn small" onClick=${() => act('DELETE', `${base}/tunnel`)}>Cancel</button>` : null}
        ${state === 'open' ? html`<${Badge} value="open" />
          <span class="muted">through ${relayNames.get(e.tunnel.relayId) ?? e.tunnel.relayId ?? 'a relay'}, edge id <span class="mono">${short(e.tunnel.edgeId)}</span>, opened ${fmtAgo(e.tunnel.openedAt, now)}</span>
          <span class="spacer"></span>
          <button class="btn small" onClick=${() => act('DELETE', `${base}/tunnel`)}>Close tunnel</button>` : null}
      </div>
      ${state === 'open' ? html`<div style=${{ marginTop: '14px' }}><${TunnelBrowser} endpointId=${e.id} /></div>` : null}
    </div>
    <div class="grid">
      <div class="card">
        <h2>Endpoint</h2>
        <dl class="facts">
          <dt>Status</dt><dd><${Badge} value=${e.status} /></dd>
          <dt>Edge id</dt><dd class="mono">${e.edgeId ?? '– (no agent yet)'}</dd>
          <dt>Relay</dt><dd>${e.relayId === null ? '–' : (relayNames.get(e.relayId) ?? e.relayId)}</dd>
          <dt>Last seen</dt><dd>${e.status === 'online' ? 'now' : fmtAgo(e.lastSeen, now)}</dd>
          <dt>Tunnel target</dt><dd class="mono">${e.tunnelTarget ?? '– (agent flag)'}</dd>
          <dt>Agents</dt><dd>${e.maxAgents > 1 ? `cluster of up to ${e.maxAgents}` : 'one'}</dd>
          <dt>Created</dt><dd>${fmtTime(e.createdAt)}</dd>
        </dl>
      </div>
      <div class="card" data-testid="snapshot">
        <h2>Snapshot</h2>
        ${snap === null || snap === undefined
          ? html`<p class="muted">No snapshot yet: agents send one when they connect.</p>`
          : html`<dl class="facts">
              <dt>Host</dt><dd>${snap.hostname ?? '–'}</dd>
              <dt>OS</dt><dd>${typeof snap.os === 'object' && snap.os !== null ? Object.values(snap.os).join(' ') : (snap.os ?? '–')}</dd>
              <dt>Agent version</dt><dd>${snap.agentVersion ?? '–'}</dd>
              <dt>Uptime</dt><dd>${fmtDuration(snap.uptimeSeconds)}</dd>
              <dt>Received</dt><dd>${fmtAgo(snap.receivedAt, now)} (${snap.reason})</dd>
            </dl>`}
      </div>
    </div>
    <div class="card">
      <h2>Agents</h2>
      ${(e.agents ?? []).length === 0
        ? html`<p class="muted">No agent has checked in yet. Run the command shown when the endpoint was created.</p>`
        : html`<div class="table-wrap"><table>
            <thead><tr><th>Edge id</th><th>Status</th><th>Relay</th><th>Admitted</th><th>Last seen</th><th></th></tr></thead>
            <tbody>${e.agents.map(a => html`<tr key=${a.edgeId}>
              <td class="mono">${a.edgeId}</td><td><${Badge} value=${a.status} /></td>
              <td>${a.relayId === null ? '–' : (relayNames.get(a.relayId) ?? a.relayId)}</td>
              <td>${fmtTime(a.admittedAt)}</td><td>${a.status === 'online' ? 'now' : fmtAgo(a.lastSeen, now)}</td>
              <td class="actions">${a.status === 'offline' ? html`<button class="btn small" title="Free this place for a replacement node" onClick=${() => { if (confirm(`Free the place of ${a.edgeId}?`)) act('DELETE', `${base}/agents/${encodeURIComponent(a.edgeId)}`) }}>Free place</button>` : null}</td>
            </tr>`)}</tbody>
          </table></div>`}
    </div>
    <div class="card">
      <h2>Refused edge ids</h2>
      ${(e.refusedEdgeIds ?? []).length === 0
        ? html`<p class="muted">None: no other machine has tried this endpoint’s join token.</p>`
        : html`<div class="table-wrap"><table>
            <thead><tr><th>Edge id</th><th>Code</th><th>Attempts</th><th>First</th><th>Last</th></tr></thead>
            <tbody>${e.refusedEdgeIds.map(r => html`<tr key=${r.edgeId}><td class="mono">${r.edgeId}</td><td><code>${r.code}</code></td><td>${r.count}</td><td>${fmtTime(r.firstAt)}</td><td>${fmtAgo(r.lastAt, now)}</td></tr>`)}</tbody>
          </table></div>`}
    </div>
  </section>`
}

// ---------------------------------------------------------------------------
// Relays

function CacheFigures ({ cache }) {
  if (cache === null || typeof cache !== 'object') return html`<span class="muted">–</span>`
  const lookups = (cache.hits ?? 0) + (cache.misses ?? 0)
  const ratio = lookups === 0 ? null : Math.round(100 * (cache.hits ?? 0) / lookups)
  const fill = typeof cache.maxBytes === 'number' && cache.maxBytes > 0 ? (cache.bytesUsed ?? 0) / cache.maxBytes : null
  return html`<div class="small" data-testid="cache">
    <div>${cache.hits ?? 0} hits · ${cache.misses ?? 0} misses${ratio === null ? '' : ` (${ratio}% hits)`}</div>
    <div class="muted">served ${fmtBytes(cache.bytesServed)} · fetched ${fmtBytes(cache.bytesFetched)}</div>
    <div class="muted">${cache.entries ?? 0} entries · ${fmtBytes(cache.bytesUsed)} of ${fmtBytes(cache.maxBytes)}</div>
    ${fill === null ? null : html`<progress max="100" value=${Math.round(fill * 100)}></progress>`}
  </div>`
}

function RelaysPage () {
  const now = useNow()
  const [relays, refresh] = useResource(async () => ({ data: await api('GET', '/api/relays') }), [], ['relays'])
  // A relay linking without agents sends no event: a slow poll keeps "connected" honest.
  useInterval(refresh, 15_000, true)
  const [adding, setAdding] = useState(false)
  const [name, setName] = useState('')
  const [created, setCreated] = useState(null)
  const [error, setError] = useState(null)
  const create = async e => {
    e.preventDefault()
    setError(null)
    try {
      setCreated(await api('POST', '/api/relays', { name: name.trim() }))
      setName('')
      setAdding(false)
      refresh()
    } catch (err) {
      setError(err)
    }
  }
  const revoke = async r => {
    if (!confirm(`Revoke relay ${r.name}? Its link drops and its token is refused from now on.`)) return
    try {
      await api('DELETE', `/api/relays/${encodeURIComponent(r.id)}`)
      refresh()
    } catch (err) {
      setError(err)
    }
  }
  const list = relays.data ?? []
  const withCache = list.some(r => r.cache !== undefined)
  return html`<section data-page="relays">
    <div class="page-head">
      <div><h1>Relays</h1><div class="sub muted">One link each to this server; agents at a site dial their relay.</div></div>
      <button class="btn primary" onClick=${() => { setAdding(!adding); setCreated(null) }}>Add relay</button>
    </div>
    ${adding ? html`<form class="card" onSubmit=${create}>
      <h2>Add a relay</h2>
      <div class="form-row">
        <label>Name<input value=${name} onInput=${e => setName(e.target.value)} placeholder="site-a" required maxlength="128" /></label>
        <button class="btn primary" type="submit" disabled=${name.trim() === ''}>Create relay</button>
      </div>
    </form>` : null}
    ${created !== null ? html`<div class="card highlight" data-testid="relay-command">
      <div class="page-head"><h2>Relay “${created.name}” created</h2><button class="btn small" onClick=${() => setCreated(null)}>Done</button></div>
      <p>Start it at the site with this command. The token is shown only now.</p>
      <pre class="command">relaygate relay --server ${location.origin} --token ${created.token}</pre>
      <${CopyButton} text=${`relaygate relay --server ${location.origin} --token ${created.token}`} />
    </div>` : null}
    <${ErrorBox} error=${error ?? relays.error} />
    <div class="table-wrap">
      <table data-testid="relays-table">
        <thead><tr><th>Name</th><th>Link</th><th>Agents</th><th>Version</th><th>Fingerprint</th><th>Addresses</th><th>Last seen</th>${withCache ? html`<th>Cache</th>` : null}<th></th></tr></thead>
        <tbody>
          ${list.length === 0 && !relays.loading
            ? html`<tr><td class="empty" colspan=${withCache ? 9 : 8}>No relays yet. Add one, then start it at a site.</td></tr>`
            : list.map(r => html`<tr key=${r.id} data-relay=${r.id}>
                <td><div class="name-cell"><span>${r.name}</span><span class="mono">${r.id}</span></div></td>
                <td>${r.revoked ? html`<${Badge} value="revoked" />` : html`<${Badge} value=${r.connected ? 'connected' : 'disconnected'} />`}</td>
                <td>${r.agents}</td>
                <td>${r.version ?? '–'}</td>
                <td class="mono" title=${r.fingerprint ?? ''}>${short(r.fingerprint, 16)}</td>
                <td class="mono small">${[r.wssUrl, r.wsUrl].filter(Boolean).map(u => html`<div>${u}</div>`)}</td>
                <td class="nowrap">${r.connected ? 'now' : fmtAgo(r.lastSeen, now)}</td>
                ${withCache ? html`<td class="cache-cell"><${CacheFigures} cache=${r.cache} /></td>` : null}
                <td class="actions">${r.revoked ? null : html`<button class="btn small danger" onClick=${() => revoke(r)}>Revoke</button>`}</td>
              </tr>`)}
        </tbody>
      </table>
    </div>
  </section>`
}

// ---------------------------------------------------------------------------
// Artifacts

/** PUT with XMLHttpRequest: fetch() has no upload progress. */
function uploadArtifact (name, file, onProgress) {
  const xhr = new XMLHttpRequest()
  const done = new Promise((resolve, reject) => {
    xhr.open('PUT', `/api/artifacts/${encodeURIComponent(name)}`)
    xhr.setRequestHeader('authorization', `Bearer ${session.token}`)
    xhr.setRequestHeader('content-type', 'application/octet-stream')
    xhr.upload.onprogress = e => { if (e.lengthComputable) onProgress(e.loaded, e.total) }
    xhr.onload = () => {
      const body = parseBody(xhr.responseText)
      if (xhr.status === 401) session.signOut('The server refused the admin token. Sign in again.')
      if (xhr.status >= 200 && xhr.status < 300) resolve(body)
      else reject(errorFrom(xhr.status, body, xhr.statusText))
    }
    xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'the upload failed (network error)'))
    xhr.onabort = () => reject(new ApiError(0, 'ABORTED', 'upload cancelled'))
    xhr.send(file)
  })
  return { done, abort: () => xhr.abort() }
}

function ArtifactsPage () {
  const [list, refresh] = useResource(async () => ({ data: await api('GET', '/api/artifacts') }), [], ['artifacts'])
  const [file, setFile] = useState(null)
  const [name, setName] = useState('')
  const [upload, setUpload] = useState(null)
  const [error, setError] = useState(null)
  const inputRef = useRef(null)

  const start = async e => {
    e.preventDefault()
    if (file === null) return
    const target = name.trim() || file.name
    setError(null)
    const state = { name: target, loaded: 0, total: file.size, events: 0, done: false, result: null }
    const job = uploadArtifact(target, file, (loaded, total) => {
      state.loaded = loaded
      state.total = total
      state.events++
      setUpload({ ...state, abort: job.abort })
    })
    setUpload({ ...state, abort: job.abort })
    try {
      const result = await job.done
      setUpload({ ...state, loaded: state.total, done: true, result })
      setFile(null)
      setName('')
      if (inputRef.current !== null) inputRef.current.value = ''
      refresh()
    } catch (err) {
      setUpload(null)
      setError(err)
    }
  }
  const remove = async a => {
    if (!confirm(`Delete artifact ${a.name}?`)) return
    try {
      await api('DELETE', `/api/artifacts/${encodeURIComponent(a.name)}`)
      refresh()
    } catch (err) {
      setError(err)
    }
  }
  const pct = upload === null || upload.total === 0 ? 0 : upload.loaded / upload.total
  const busy = upload !== null && !upload.done
  return html`<section data-page="artifacts">
    <div class="page-head"><div><h1>Artifacts</h1><div class="sub muted">Files the server stores by sha256; relays cache them for their agents.</div></div></div>
    <form class="card" onSubmit=${start}>
      <h2>Upload</h2>
      <div class="form-row">
        <label>File<input type="file" name="file" ref=${inputRef} onChange=${e => { setFile(e.target.files[0] ?? null); setUpload(null) }} /></label>
        <label>Name <span class="hint">defaults to the file name</span><input name="artifactName" value=${name} onInput=${e => setName(e.target.value)} placeholder=${file?.name ?? 'app-1.2.tar.gz'} /></label>
        <button class="btn primary" type="submit" disabled=${file === null || busy}>Upload</button>
        ${busy ? html`<button class="btn" type="button" onClick=${() => upload.abort()}>Cancel</button>` : null}
      </div>
      ${upload !== null ? html`<div style=${{ marginTop: '14px' }} data-testid="upload" data-done=${String(upload.done)} data-progress-events=${upload.events}>
        <div class="btn-row small"><strong>${upload.name}</strong><span class="muted">${fmtBytes(upload.loaded)} of ${fmtBytes(upload.total)}</span></div>
        <${Progress} value=${pct} state=${upload.done ? 'succeeded' : 'running'} />
        ${upload.done ? html`<div class="success" style=${{ marginTop: '8px' }}>Uploaded ${upload.result?.name ?? upload.name}: ${fmtBytes(upload.result?.size)}, sha256 <span class="mono">${short(upload.result?.sha256, 16)}</span></div>` : null}
      </div>` : null}
    </form>
    <${ErrorBox} error=${error ?? list.error} what="artifacts" />
    <div class="table-wrap">
      <table data-testid="artifacts-table">
        <thead><tr><th>Name</th><th>Size</th><th>sha256</th><th>Uploaded</th><th></th></tr></thead>
        <tbody>
          ${(list.data ?? []).length === 0 && !list.loading
            ? html`<tr><td class="empty" colspan="5">No artifacts yet.</td></tr>`
            : (list.data ?? []).map(a => html`<tr key=${a.name} data-artifact=${a.name}>
                <td>${a.name}</td><td>${fmtBytes(a.size)}</td>
                <td class="mono" title=${a.sha256}>${short(a.sha256, 16)}</td>
                <td>${fmtTime(a.createdAt)}</td>
                <td class="actions"><button class="btn small danger" onClick=${() => remove(a)}>Delete</button></td>
              </tr>`)}
        </tbody>
      </table>
    </div>
  </section>`
}

// ---------------------------------------------------------------------------
// Jobs

const finalStates = new Set(['succeeded', 'failed', 'done', 'completed', 'cancelled', 'canceled', 'error'])

function targetSummary (targets) {
  const counts = {}
  for (const t of targets ?? []) counts[t.state] = (counts[t.state] ?? 0) + 1
  return Object.entries(counts).map(([state, n]) => `${n} ${state}`).join(' · ') || 'no targets'
}

function NewJob ({ onCreated, onCancel }) {
  const [artifacts] = useResource(async () => ({ data: await api('GET', '/api/artifacts') }), [], ['artifacts'])
  const [artifact, setArtifact] = useState('')
  const [search, setSearch] = useState('')
  const [picked, setPicked] = useState(new Map())
  const [path, setPath] = useState('')
  const [run, setRun] = useState('')
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const [found] = useResource(async () => {
    const params = new URLSearchParams({ limit: '20', offset: '0' })
    if (search.trim() !== '') params.set('q', search.trim())
    return { data: await api('GET', `/api/endpoints?${params}`) }
  }, [search], ['endpoints'])
  const toggle = ep => {
    const next = new Map(picked)
    if (next.has(ep.id)) next.delete(ep.id)
    else next.set(ep.id, ep.name)
    setPicked(next)
  }
  let argv = null
  let argvError = null
  try { argv = run.trim() === '' ? null : splitArgs(run) } catch (err) { argvError = err.message }
  const submit = async e => {
    e.preventDefault()
    setError(null)
    setBusy(true)
    try {
      const body = { artifact, endpoints: [...picked.keys()] }
      if (path.trim() !== '') body.path = path.trim()
      if (argv !== null) body.run = argv
      const created = await api('POST', '/api/jobs', body)
      onCreated(created)
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
    }
  }
  const chosenArtifact = artifact || ''
  return html`<form class="card" onSubmit=${submit} data-testid="new-job">
    <h2>New job</h2>
    <div class="form-stack">
      <label>Artifact
        <select name="artifact" value=${chosenArtifact} onChange=${e => setArtifact(e.target.value)} required>
          <option value="">Choose an artifact…</option>
          ${(artifacts.data ?? []).map(a => html`<option key=${a.name} value=${a.name}>${a.name} (${fmtBytes(a.size)})</option>`)}
        </select>
      </label>
      <${ErrorBox} error=${artifacts.error} what="artifacts" />
      <div>
        <label>Endpoints<input type="search" name="endpointSearch" placeholder="Search endpoints" value=${search} onInput=${e => setSearch(e.target.value)} /></label>
        <div class="picker" style=${{ marginTop: '6px' }}>
          ${(found.data ?? []).map(ep => html`<label key=${ep.id} data-pick=${ep.id}>
            <input type="checkbox" checked=${picked.has(ep.id)} onChange=${() => toggle(ep)} />
            <span>${ep.name}</span> <${Badge} value=${ep.status} /> <span class="mono muted small">${ep.id}</span>
          </label>`)}
          ${(found.data ?? []).length === 0 ? html`<p class="muted" style=${{ padding: '8px 10px', margin: 0 }}>No endpoint matches.</p>` : null}
        </div>
        ${picked.size > 0 ? html`<div class="chips" style=${{ marginTop: '8px' }}>${[...picked].map(([id, n]) => html`<span class="chip" key=${id}>${n}<button type="button" title="Remove" onClick=${() => toggle({ id })}>×</button></span>`)}</div>` : null}
      </div>
      <label>Path on the agent <span class="hint">optional: relative to the agent's files dir; the artifact's name by default</span>
        <input name="path" class="mono" value=${path} onInput=${e => setPath(e.target.value)} placeholder="releases/app.tar.gz" /></label>
      <label>Run after delivery <span class="hint">optional command line, split like a shell would (quotes group words); agents run only allow-listed commands</span>
        <input name="run" class="mono" value=${run} onInput=${e => setRun(e.target.value)} placeholder="sh install.sh --quiet" /></label>
      ${argvError !== null ? html`<div class="error">${argvError}</div>` : (argv !== null ? html`<div class="muted small">argv: <code>${JSON.stringify(argv)}</code></div>` : null)}
      <${ErrorBox} error=${error} what="jobs" />
      <div class="btn-row">
        <button class="btn primary" type="submit" disabled=${busy || artifact === '' || picked.size === 0 || argvError !== null}>Start job on ${picked.size} endpoint${picked.size === 1 ? '' : 's'}</button>
        <button class="btn" type="button" onClick=${onCancel}>Cancel</button>
      </div>
    </div>
  </form>`
}

function JobsPage () {
  const [creating, setCreating] = useState(false)
  const [list, refresh] = useResource(async () => ({ data: await api('GET', '/api/jobs') }), [], ['jobs'])
  const jobs = list.data ?? []
  useInterval(refresh, 3000, jobs.some(j => !finalStates.has(j.state)))
  return html`<section data-page="jobs">
    <div class="page-head">
      <div><h1>Jobs</h1><div class="sub muted">Deliver an artifact (and optionally run a command) on endpoints.</div></div>
      <button class="btn primary" onClick=${() => setCreating(!creating)}>New job</button>
    </div>
    ${creating ? html`<${NewJob} onCreated=${j => go(`#/jobs/${encodeURIComponent(j.id)}`)} onCancel=${() => setCreating(false)} />` : null}
    <${ErrorBox} error=${list.error} what="jobs" />
    <div class="table-wrap">
      <table data-testid="jobs-table">
        <thead><tr><th>Job</th><th>Artifact</th><th>State</th><th>Targets</th><th>Created</th></tr></thead>
        <tbody>
          ${jobs.length === 0 && !list.loading
            ? html`<tr><td class="empty" colspan="5">No jobs yet.</td></tr>`
            : [...jobs].reverse().map(j => html`<tr key=${j.id} data-job=${j.id}>
                <td><a class="mono" href=${`#/jobs/${encodeURIComponent(j.id)}`}>${j.id}</a></td>
                <td>${j.artifact}</td><td><${Badge} value=${j.state} /></td>
                <td class="small">${targetSummary(j.targets)}</td><td>${fmtTime(j.createdAt)}</td>
              </tr>`)}
        </tbody>
      </table>
    </div>
  </section>`
}

function JobDetail ({ id }) {
  const [job, refresh] = useResource(async () => ({ data: await api('GET', `/api/jobs/${encodeURIComponent(id)}`) }), [id], ['jobs'])
  const j = job.data
  const active = j !== undefined && !finalStates.has(j.state)
  // Progress arrives as events; a poll while the job runs covers a dropped event stream.
  useInterval(refresh, 2000, active)
  if (j === undefined) {
    return html`<section data-page="job"><p><a href="#/jobs">← Jobs</a></p>${job.error !== null ? html`<${ErrorBox} error=${job.error} what="jobs" />` : html`<p class="muted">Loading…</p>`}</section>`
  }
  return html`<section data-page="job" data-job=${j.id} data-state=${j.state}>
    <p><a href="#/jobs">← Jobs</a></p>
    <div class="page-head">
      <div><h1>Job <span class="mono">${j.id}</span> <${Badge} value=${j.state} /></h1>
        <div class="sub muted">${targetSummary(j.targets)}</div></div>
    </div>
    <${ErrorBox} error=${job.error} what="jobs" />
    <div class="card">
      <dl class="facts">
        <dt>Artifact</dt><dd>${j.artifact}</dd>
        <dt>Path</dt><dd class="mono">${j.path ?? '– (agent default)'}</dd>
        <dt>Run</dt><dd class="mono">${Array.isArray(j.run) && j.run.length > 0 ? JSON.stringify(j.run) : '–'}</dd>
        <dt>Created</dt><dd>${fmtTime(j.createdAt)}</dd>
      </dl>
    </div>
    <div class="table-wrap">
      <table data-testid="job-targets">
        <thead><tr><th>Endpoint</th><th>State</th><th>Progress</th><th>Bytes</th><th>Exit</th><th>Result</th></tr></thead>
        <tbody>${(j.targets ?? []).map(t => html`<tr key=${t.endpointId} data-target=${t.endpointId} data-state=${t.state}>
          <td><a class="mono" href=${`#/endpoints/${encodeURIComponent(t.endpointId)}`}>${t.endpointId}</a></td>
          <td><${Badge} value=${t.state} /></td>
          <td><${Progress} value=${t.state === 'succeeded' ? 1 : t.progress} state=${t.state} /></td>
          <td>${t.bytes === undefined ? '–' : fmtBytes(t.bytes)}</td>
          <td>${t.exitCode === undefined || t.exitCode === null ? '–' : t.exitCode}</td>
          <td>
            ${t.error ? html`<div class="error small">${t.error.message} <code>${t.error.code}</code></div>` : null}
            ${t.output ? html`<details><summary class="small">output</summary><pre class="output">${t.output}</pre></details>` : null}
            ${!t.error && !t.output ? html`<span class="muted">–</span>` : null}
          </td>
        </tr>`)}</tbody>
      </table>
    </div>
  </section>`
}

// ---------------------------------------------------------------------------
// Settings

const settingFields = [
  { key: 'checkinIntervalSeconds', label: 'Check-in interval', hint: 'How often agents check in. Relays answer check-ins; the server pays only for changes.', choices: [5, 10, 30] },
  { key: 'tunnelIdleTimeoutSeconds', label: 'Tunnel idle timeout (s)', hint: 'An agent closes its tunnel after this long without admin traffic (sending a snapshot first).' },
  { key: 'keepAliveSeconds', label: 'Keep-alive (s)', hint: 'While an admin session is open, the server sends a keep-alive this often.' },
  { key: 'snapshotIntervalSeconds', label: 'Snapshot interval (s)', hint: 'Agents send a snapshot of their state this often.' },
  { key: 'maxUploadBytes', label: 'Largest artifact upload (bytes)', hint: 'Uploads larger than this are refused.', bytes: true }
]

function SettingsPage () {
  const [settings, refresh] = useResource(async () => ({ data: await api('GET', '/api/settings') }), [], [])
  // `base` is what the form was filled from; edits are the difference between the two.
  const [base, setBase] = useState(null)
  const [form, setForm] = useState(null)
  const [saved, setSaved] = useState(null)
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const current = settings.data
  const dirty = form !== null && base !== null && Object.keys(form).some(k => Number(form[k]) !== base[k])
  // Someone else saved: show it, unless this form has unsaved edits.
  useLive(['settings'], () => { if (!dirty) refresh() })
  useEffect(() => {
    if (current === undefined || dirty) return
    setBase(current)
    setForm({ ...current })
  }, [current])
  if (current === undefined || form === null) {
    return html`<section data-page="settings"><div class="page-head"><h1>Settings</h1></div>${settings.error ? html`<${ErrorBox} error=${settings.error} />` : html`<p class="muted">Loading…</p>`}</section>`
  }
  const known = new Set(settingFields.map(f => f.key))
  const others = Object.keys(current).filter(k => !known.has(k) && typeof current[k] === 'number')
  const set = (key, value) => { setForm({ ...form, [key]: value }); setSaved(null) }
  const save = async e => {
    e.preventDefault()
    setError(null)
    setSaved(null)
    const patch = {}
    for (const key of Object.keys(form)) {
      if (Number(form[key]) !== base[key]) patch[key] = Number(form[key])
    }
    if (Object.keys(patch).length === 0) return
    setBusy(true)
    try {
      const next = await api('PATCH', '/api/settings', patch)
      setBase(next)
      setForm({ ...next })
      setSaved(`Saved. Agents use the new values from their next check-in.`)
      refresh()
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
    }
  }
  return html`<section data-page="settings">
    <div class="page-head"><div><h1>Settings</h1><div class="sub muted">Fleet-wide; relays pass changes on to their agents at once.</div></div></div>
    <form class="card" onSubmit=${save}>
      <div class="form-stack">
        ${settingFields.filter(f => f.key in current).map(f => html`<label key=${f.key}>${f.label}
          ${f.choices !== undefined
            ? html`<select name=${f.key} value=${String(form[f.key])} onChange=${e => set(f.key, e.target.value)}>
                ${[...new Set([...f.choices, current[f.key]])].sort((a, b) => a - b).map(c => html`<option value=${String(c)}>${c} s${f.choices.includes(c) ? '' : ' (custom)'}</option>`)}
              </select>`
            : html`<input type="number" name=${f.key} min="1" value=${form[f.key]} onInput=${e => set(f.key, e.target.value)} />`}
          <span class="hint">${f.hint}${f.choices === undefined ? ` Now ${f.bytes === true ? fmtBytes(Number(form[f.key])) : fmtDuration(Number(form[f.key]))}.` : ''}</span>
        </label>`)}
        ${others.map(key => html`<label key=${key}>${key}<input type="number" name=${key} value=${form[key]} onInput=${e => set(key, e.target.value)} /></label>`)}
        <${ErrorBox} error=${error} />
        ${saved !== null ? html`<div class="success" role="status" data-testid="saved">${saved}</div>` : null}
        <div class="btn-row">
          <button class="btn primary" type="submit" disabled=${busy || !dirty}>${busy ? 'Saving…' : 'Save'}</button>
          <button class="btn" type="button" disabled=${!dirty} onClick=${() => { setBase(current); setForm({ ...current }); setError(null) }}>Reset</button>
        </div>
      </div>
    </form>
  </section>`
}

// ---------------------------------------------------------------------------
// Shell

const pages = [
  { id: 'endpoints', label: 'Endpoints' },
  { id: 'relays', label: 'Relays' },
  { id: 'artifacts', label: 'Artifacts' },
  { id: 'jobs', label: 'Jobs' },
  { id: 'settings', label: 'Settings' }
]

function Shell () {
  const route = useRoute()
  const status = useLiveStatus()
  let page
  switch (route.page) {
    case 'endpoints': page = route.id === null ? html`<${EndpointsPage} />` : html`<${EndpointDetail} id=${route.id} key=${route.id} />`; break
    case 'relays': page = html`<${RelaysPage} />`; break
    case 'artifacts': page = html`<${ArtifactsPage} />`; break
    case 'jobs': page = route.id === null ? html`<${JobsPage} />` : html`<${JobDetail} id=${route.id} key=${route.id} />`; break
    case 'settings': page = html`<${SettingsPage} />`; break
    default: page = html`<div class="card">No page “${route.page}”. <a href="#/endpoints">Endpoints</a></div>`
  }
  return html`<div class="shell">
    <aside class="sidebar">
      <div class="brand"><img src="/ui/favicon.svg" alt="" /> relaygate</div>
      <nav class="nav">
        ${pages.map(p => html`<a key=${p.id} href=${`#/${p.id}`} class=${route.page === p.id ? 'active' : ''}>${p.label}</a>`)}
      </nav>
      <div class="side-foot">
        <span class="live" data-testid="live" data-status=${status} title="Pages update by themselves while live">
          <span class=${`dot ${status === 'live' ? 'live-on' : 'live-off'}`}></span>${status === 'live' ? 'Live' : (status === 'connecting' ? 'Connecting…' : 'Reconnecting…')}
        </span>
        <button class="btn small" onClick=${() => session.signOut(null)}>Sign out</button>
      </div>
    </aside>
    <main class="content">${page}</main>
  </div>`
}

function App () {
  const [token, setToken] = useState(session.token)
  const [message, setMessage] = useState(null)
  useEffect(() => {
    const listener = msg => { setToken(session.token); setMessage(msg) }
    session.listeners.add(listener)
    return () => session.listeners.delete(listener)
  }, [])
  useEffect(() => {
    if (token === null) return
    live.setStatus('connecting')
    return startEvents()
  }, [token])
  if (token === null) return html`<${Login} message=${message} key=${message ?? 'login'} />`
  return html`<${Shell} />`
}

render(html`<${App} />`, document.getElementById('app'))
