// API tokens with a role, and the audit log (admin pages); who is signed in.
import { useState, useEffect } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api } from './api.js'
import { Badge, CopyButton, ErrorBox, attempt } from './components.js'
import { fmtAgo, fmtBytes, fmtTime } from './format.js'
import { useNow, useResource } from './live.js'

/** The signed-in token's name and role (GET /api/whoami), null while loading. */
export function useWhoami () {
  const [me, setMe] = useState(null)
  useEffect(() => {
    let gone = false
    api('GET', '/api/whoami').then(v => { if (!gone) setMe(v) }, () => {})
    return () => { gone = true }
  }, [])
  return me
}

const ROLES = [
  ['viewer', 'reads everything but tokens and the audit log; no tunnels'],
  ['operator', 'also tunnels, jobs, artifacts, endpoints and updates'],
  ['admin', 'also tokens, relays, settings and the audit log']
]

export function TokensPage () {
  const now = useNow()
  const [tokens, refresh] = useResource(async () => ({ data: await api('GET', '/api/tokens') }), [], ['tokens'])
  const [name, setName] = useState('')
  const [role, setRole] = useState('viewer')
  const [created, setCreated] = useState(null)
  const [error, setError] = useState(null)
  const create = e => {
    e.preventDefault()
    void attempt(async () => { setCreated(await api('POST', '/api/tokens', { name: name.trim(), role })); setName('') }, { then: refresh, onError: setError })
  }
  const revoke = t => attempt(() => api('DELETE', `/api/tokens/${encodeURIComponent(t.id)}`), {
    question: `Revoke the token “${t.name}”? Whoever uses it is refused from the next request on.`, then: refresh, onError: setError
  })
  const list = tokens.data ?? []
  return html`<section data-page="tokens">
    <div class="page-head">
      <div><h1>API tokens</h1><div class="sub muted">One per person or script, each with a role. Only their hashes are kept.</div></div>
    </div>
    <form class="card" onSubmit=${create} data-testid="token-form">
      <h2>New token</h2>
      <div class="form-row">
        <label>Name<input name="name" value=${name} onInput=${e => setName(e.target.value)} placeholder="ci-deploy" required maxlength="64" pattern="[A-Za-z0-9._@\\-]+" /></label>
        <label>Role<select name="role" value=${role} onChange=${e => setRole(e.target.value)}>${ROLES.map(([r]) => html`<option key=${r} value=${r}>${r}</option>`)}</select></label>
        <button class="btn primary" type="submit" disabled=${name.trim() === ''}>Create token</button>
      </div>
      <p class="muted small">${ROLES.map(([r, what]) => html`<span key=${r}><b>${r}</b>: ${what}. </span>`)}</p>
    </form>
    ${created !== null ? html`<div class="card highlight" data-testid="token-created">
      <div class="page-head"><h2>Token “${created.name}” (${created.role}) created</h2><button class="btn small" onClick=${() => setCreated(null)}>Done</button></div>
      <p>Copy it now: it is shown only this once.</p>
      <pre class="command" data-testid="token-value">${created.token}</pre>
      <${CopyButton} text=${created.token} />
    </div>` : null}
    <${ErrorBox} error=${error ?? tokens.error} />
    <div class="table-wrap">
      <table data-testid="tokens-table">
        <thead><tr><th>Name</th><th>Role</th><th>Created</th><th>By</th><th>Last used</th><th>State</th><th></th></tr></thead>
        <tbody>${list.map(t => html`<tr key=${t.id} data-token=${t.name} class=${t.revokedAt === null ? '' : 'muted'}>
          <td><div class="name-cell"><span>${t.name}</span><span class="mono">${t.id}</span></div></td>
          <td><${Badge} value=${t.role} /></td>
          <td>${fmtTime(t.createdAt)}</td>
          <td>${t.builtin ? 'first start' : (t.createdBy ?? '–')}</td>
          <td>${t.lastUsedAt === null ? 'never' : fmtAgo(t.lastUsedAt, now)}</td>
          <td>${t.revokedAt === null ? 'active' : `revoked ${fmtAgo(t.revokedAt, now)}`}</td>
          <td class="actions">${t.revokedAt === null ? html`<button class="btn small danger" onClick=${() => revoke(t)}>Revoke</button>` : null}</td>
        </tr>`)}</tbody>
      </table>
    </div>
  </section>`
}

/** An audit entry's details in a few words: bytes of tunnel sessions, names, roles. */
function Detail ({ detail }) {
  if (detail === null || detail === undefined) return null
  const parts = []
  if (detail.bytesToAgent !== undefined) parts.push(`↑ ${fmtBytes(detail.bytesToAgent)} ↓ ${fmtBytes(detail.bytesFromAgent)} in ${detail.seconds} s`)
  for (const [k, v] of Object.entries(detail)) {
    if (['bytesToAgent', 'bytesFromAgent', 'seconds', 'tunnelId', 'edgeId', 'relayId'].includes(k)) continue
    parts.push(`${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
  }
  return html`<span class="small">${parts.join(' · ')}</span>`
}

export function AuditPage () {
  const [filters, setFilters] = useState({ action: '', token: '', target: '' })
  const [draft, setDraft] = useState(filters)
  const [pages, setPages] = useState([])
  const query = before => {
    const q = new URLSearchParams({ limit: '50' })
    for (const [k, v] of Object.entries(filters)) if (v.trim() !== '') q.set(k, v.trim())
    if (before !== undefined) q.set('before', String(before))
    return `/api/audit?${q}`
  }
  const [first] = useResource(async () => ({ data: await api('GET', query()) }), [filters.action, filters.token, filters.target], ['audit'])
  const [error, setError] = useState(null)
  const entries = [...(first.data ?? []), ...pages.flat()]
  const older = async () => {
    setError(null)
    try { setPages([...pages, await api('GET', query(entries[entries.length - 1].id))]) } catch (err) { setError(err) }
  }
  const apply = e => { e.preventDefault(); setPages([]); setFilters(draft) }
  const field = (key, label, placeholder) => html`<label>${label}<input name=${key} value=${draft[key]} placeholder=${placeholder} onInput=${e => setDraft({ ...draft, [key]: e.target.value })} /></label>`
  return html`<section data-page="audit">
    <div class="page-head">
      <div><h1>Audit log</h1><div class="sub muted">Every change and tunnel session, newest first: who, what, to what, from where, and how it ended.</div></div>
    </div>
    <form class="card form-row" onSubmit=${apply} data-testid="audit-filters">
      ${field('action', 'Action', 'endpoint, tunnel.close …')}
      ${field('token', 'Token', 'ops')}
      ${field('target', 'Target', 'e… / r… / t…')}
      <button class="btn" type="submit">Filter</button>
    </form>
    <${ErrorBox} error=${error ?? first.error} />
    <div class="table-wrap">
      <table data-testid="audit-table">
        <thead><tr><th>Time</th><th>Token</th><th>Action</th><th>Target</th><th>Source</th><th>Result</th><th>Detail</th></tr></thead>
        <tbody>
          ${entries.length === 0 && !first.loading
            ? html`<tr><td class="empty" colspan="7">No entries${Object.values(filters).some(v => v !== '') ? ' match these filters' : ' yet'}.</td></tr>`
            : entries.map(e => html`<tr key=${e.id} data-action=${e.action}>
                <td class="nowrap">${fmtTime(e.at)}</td><td>${e.token ?? '–'}</td><td><code>${e.action}</code></td>
                <td class="mono">${e.target ?? '–'}</td><td class="mono">${e.source ?? '–'}</td>
                <td>${e.result === 'ok' ? html`<${Badge} value="ok" />` : html`<code class="bad">${e.result}</code>`}</td>
                <td><${Detail} detail=${e.detail} /></td>
              </tr>`)}
        </tbody>
      </table>
    </div>
    ${entries.length > 0 && (pages.length === 0 ? (first.data ?? []).length === 50 : pages[pages.length - 1].length === 50)
      ? html`<p><button class="btn" data-testid="audit-older" onClick=${older}>Older entries</button></p>` : null}
  </section>`
}
