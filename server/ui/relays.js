// The relays page.
import { useState } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api } from './api.js'
import { Badge, CopyButton, ErrorBox, attempt } from './components.js'
import { fmtAgo, fmtBytes, short } from './format.js'
import { useInterval, useNow, useResource } from './live.js'

export function CacheFigures ({ cache }) {
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

export function RelaysPage () {
  const now = useNow()
  const [relays, refresh] = useResource(async () => ({ data: await api('GET', '/api/relays') }), [], ['relays'])
  // A relay linking without agents sends no event: a slow poll keeps "connected" honest.
  useInterval(refresh, 15_000, true)
  const [adding, setAdding] = useState(false)
  const [name, setName] = useState('')
  const [created, setCreated] = useState(null)
  const [error, setError] = useState(null)
  const create = e => {
    e.preventDefault()
    void attempt(async () => { setCreated(await api('POST', '/api/relays', { name: name.trim() })); setName(''); setAdding(false) }, { then: refresh, onError: setError })
  }
  const revoke = r => attempt(() => api('DELETE', `/api/relays/${encodeURIComponent(r.id)}`), {
    question: `Revoke relay ${r.name}? Its link drops and its token is refused from now on.`, then: refresh, onError: setError
  })
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
