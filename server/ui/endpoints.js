// The endpoints page and an endpoint's page (snapshot, agents, tunnel browser).
import { useState, useEffect } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api, session } from './api.js'
import { Badge, CopyButton, ErrorBox, Pager } from './components.js'
import { fmtAgo, fmtBytes, fmtDuration, fmtTime, short } from './format.js'
import { useInterval, useNow, useResource } from './live.js'
import { go } from './route.js'

const PAGE_SIZE = 50

export function useRelayNames () {
  const [relays] = useResource(async () => ({ data: await api('GET', '/api/relays') }), [], ['relays'])
  const names = new Map()
  for (const r of relays.data ?? []) names.set(r.id, r.name)
  return names
}

export function AgentCommand ({ created, onClose }) {
  return html`<div class="card highlight" data-testid="agent-command">
    <div class="page-head"><h2>${created.warning?.includes('old join token') ? html`New join token for “${created.name}”` : html`Endpoint “${created.name}” created`}</h2><button class="btn small" onClick=${onClose}>Done</button></div>
    <p>Run this on the machine to manage. The join token inside is shown only now: copy it before you leave this page.</p>
    ${created.warning !== undefined ? html`<div class="notice">${created.warning}</div>` : null}
    <pre class="command" data-testid="command">${created.command}</pre>
    ${created.installCommand
      ? html`<p>Or install it on that machine from its site's relay, as root (no Node needed; the line checks the download against the sha256 in it, so a relay cannot swap it):</p>
        <pre class="command" data-testid="install-command">${created.installCommand}</pre>
        ${Object.entries(created.installCommands ?? {}).filter(([, line]) => line !== created.installCommand).map(([kind, line]) => html`<p key=${kind}>On a ${kind} machine:</p><pre class="command" data-testid=${`install-command-${kind}`}>${line}</pre>`)}`
      : null}
    <div class="btn-row"><${CopyButton} text=${created.command} /><a class="btn small" href=${`#/endpoints/${encodeURIComponent(created.id)}`}>Open endpoint</a></div>
  </div>`
}

export function AddEndpoint ({ onCreated, onCancel }) {
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

export function TunnelBadge ({ tunnel }) {
  const state = tunnel?.state ?? 'closed'
  return html`<${Badge} value=${state} label=${state === 'requested' ? 'connecting…' : state} />`
}

export function EndpointsPage () {
  const [q, setQ] = useState('')
  const [query, setQuery] = useState('')
  const [offset, setOffset] = useState(0)
  const [tag, setTag] = useState(null)
  const [adding, setAdding] = useState(false)
  const [created, setCreated] = useState(null)
  const [actionError, setActionError] = useState(null)
  const now = useNow()
  const relayNames = useRelayNames()

  // Search as you type, without a request per key. Only a changed search
  // goes back to the first page: a timer armed at every render took a user
  // who pressed "Last" in the first 250 ms back to page 1.
  useEffect(() => {
    if (q.trim() === query) return
    const timer = setTimeout(() => { setQuery(q.trim()); setOffset(0) }, 250)
    return () => clearTimeout(timer)
  }, [q, query])

  const [list] = useResource(async () => {
    const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE_SIZE) })
    if (query !== '') params.set('q', query)
    if (tag !== null) params.set('tag', tag)
    const { data, headers } = await api('GET', `/api/endpoints?${params}`, undefined, { withHeaders: true })
    const total = Number(headers.get('x-total-count') ?? data.length)
    return { data, meta: { total } }
  }, [query, offset, tag], ['endpoints'])
  const filterTag = value => { setTag(value); setOffset(0) }

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
      ${tag !== null ? html`<span class="chip" data-testid="tag-filter">tag: ${tag}<button type="button" title="Show every tag" onClick=${() => filterTag(null)}>×</button></span>` : null}
      <span class="spacer"></span>
      <span class="muted">${list.loading ? 'Loading…' : `${total.toLocaleString()} endpoint${total === 1 ? '' : 's'}${query !== '' || tag !== null ? ' match' : ''}`}</span>
    </div>
    <${ErrorBox} error=${list.error ?? actionError} />
    <div class="table-wrap">
      <table data-testid="endpoints-table">
        <thead><tr><th>Name</th><th>Status</th><th>Relay</th><th>Edge id</th><th>Last seen</th><th>Version</th><th>Tunnel</th><th>Refused edge ids</th><th></th></tr></thead>
        <tbody>
          ${rows.length === 0 && !list.loading
            ? html`<tr><td class="empty" colspan="9">${query === '' ? 'No endpoints yet. Add one to get the command for its agent.' : 'No endpoint matches.'}</td></tr>`
            : rows.map(ep => html`<tr key=${ep.id} data-endpoint=${ep.id} data-name=${ep.name} data-status=${ep.status}>
                <td><div class="name-cell"><a href=${`#/endpoints/${encodeURIComponent(ep.id)}`}>${ep.name}</a><span class="mono">${ep.id}</span>
                  ${(ep.tags ?? []).length > 0 ? html`<span class="chips">${ep.tags.map(x => html`<button type="button" class="chip tag" key=${x} data-tag=${x} title="Show only endpoints with this tag" onClick=${() => filterTag(x)}>${x}</button>`)}</span>` : null}</div></td>
                <td><${Badge} value=${ep.status} />${ep.maxAgents > 1 ? html` <span class="muted small">${ep.agents.filter(a => a.status === 'online').length}/${ep.maxAgents}</span>` : null}</td>
                <td>${ep.relayId === null ? html`<span class="muted">–</span>` : (relayNames.get(ep.relayId) ?? ep.relayId)}</td>
                <td class="mono" title=${ep.edgeId ?? ''}>${short(ep.edgeId)}</td>
                <td class="nowrap" title=${ep.lastSeen ?? ''}>${ep.status === 'online' ? 'now' : fmtAgo(ep.lastSeen, now)}</td>
                <td class="mono" data-testid="agent-version">${ep.agentVersion ?? html`<span class="muted">–</span>`}</td>
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
export function TunnelBrowser ({ endpointId }) {
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

export function EndpointDetail ({ id }) {
  const now = useNow()
  const relayNames = useRelayNames()
  const [error, setError] = useState(null)
  const [reissued, setReissued] = useState(null)
  const [editing, setEditing] = useState(null)
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
      <div class="btn-row">
        <button class="btn" data-testid="edit-endpoint" onClick=${() => setEditing(editing === null ? { name: e.name, tags: (e.tags ?? []).join(' ') } : null)}>Rename / tags</button>
        <button class="btn" data-testid="reissue-token" onClick=${async () => {
          if (!confirm(`Re-issue the join token of ${e.name}? The old token stops working at once: agents that use it are stopped and refused until they get the new one.`)) return
          setError(null)
          try { setReissued(await api('POST', `${base}/join-token`)) } catch (err) { setError(err) }
        }}>Re-issue join token</button>
        <button class="btn danger" onClick=${() => { if (confirm(`Delete endpoint ${e.name}? Its agents are disconnected and refused.`)) act('DELETE', base, () => go('#/endpoints')) }}>Delete endpoint</button>
      </div>
    </div>
    ${editing !== null ? html`<form class="card" data-testid="edit-form" onSubmit=${async ev => {
      ev.preventDefault()
      setError(null)
      try {
        await api('PATCH', base, { name: editing.name.trim(), tags: [...new Set(editing.tags.split(/[\s,]+/).filter(x => x !== ''))] })
        setEditing(null)
        refresh()
      } catch (err) { setError(err) }
    }}>
      <h2>Rename, tags</h2>
      <div class="form-row">
        <label>Name<input name="name" value=${editing.name} required maxlength="128" onInput=${ev => setEditing({ ...editing, name: ev.target.value })} /></label>
        <label>Tags<input name="tags" value=${editing.tags} placeholder="site-a db" onInput=${ev => setEditing({ ...editing, tags: ev.target.value })} /></label>
        <button class="btn primary" type="submit" disabled=${editing.name.trim() === ''}>Save</button>
        <button class="btn" type="button" onClick=${() => setEditing(null)}>Cancel</button>
      </div>
      <p class="muted small">Names are unique. Tags (letters, digits, . _ : -, separated by spaces) pick endpoints for jobs, updates and tunnels.</p>
    </form>` : null}
    ${reissued !== null ? html`<${AgentCommand} created=${reissued} onClose=${() => setReissued(null)} />` : null}
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
          <dt>Tags</dt><dd data-testid="endpoint-tags">${(e.tags ?? []).length === 0 ? '–' : html`<span class="chips">${e.tags.map(x => html`<span class="chip tag" key=${x}>${x}</span>`)}</span>`}</dd>
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
