// The updates pages (issue 16): start a self-update rollout, list them, one rollout's targets with pause, resume, abort.
import { useState } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api } from './api.js'
import { Badge, ErrorBox, Progress } from './components.js'
import { fmtBytes, fmtTime } from './format.js'
import { useInterval, useResource } from './live.js'
import { go } from './route.js'

const activeStates = new Set(['running', 'paused'])

function countsLine (c) {
  return `${c.succeeded} of ${c.total} updated · ${c.inFlight} on their way · ${c.pending} waiting · ${c.failed} failed · ${c.cancelled} cancelled`
}

function NewUpdate ({ onCreated, onCancel }) {
  const [artifacts] = useResource(async () => ({ data: await api('GET', '/api/artifacts') }), [], ['artifacts'])
  const [form, setForm] = useState({ artifact: '', version: '', target: 'agents', canary: '1', healthSeconds: '120', maxParallel: '100' })
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const set = key => e => setForm({ ...form, [key]: e.target.value })
  const submit = async e => {
    e.preventDefault()
    setError(null)
    setBusy(true)
    try {
      const body = { artifact: form.artifact, version: form.version.trim(), target: form.target }
      for (const key of ['canary', 'healthSeconds', 'maxParallel']) if (form[key].trim() !== '') body[key] = Number(form[key])
      onCreated(await api('POST', '/api/updates', body))
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
    }
  }
  return html`<form class="card" onSubmit=${submit} data-testid="new-update">
    <h2>New update</h2>
    <div class="form-stack">
      <label>Executable <span class="hint">a one-file build uploaded as an artifact</span>
        <select name="artifact" value=${form.artifact} onChange=${set('artifact')} required>
          <option value="">Choose an artifact…</option>
          ${(artifacts.data ?? []).map(a => html`<option key=${a.name} value=${a.name}>${a.name} (${fmtBytes(a.size)})</option>`)}
        </select></label>
      <label>Version <span class="hint">what the executable's --version prints: each target checks it before switching</span>
        <input name="version" class="mono" value=${form.version} onInput=${set('version')} placeholder="0.3.1" required /></label>
      <label>Update
        <select name="target" value=${form.target} onChange=${set('target')}>
          <option value="agents">every endpoint's agent</option>
          <option value="relays">every relay</option>
        </select></label>
      <div class="form-row">
        <label>Canaries <span class="hint">go first; the rest only once they updated</span><input name="canary" type="number" min="0" value=${form.canary} onInput=${set('canary')} /></label>
        <label>Health deadline (s) <span class="hint">not online by then: rolled back</span><input name="healthSeconds" type="number" min="5" max="3600" value=${form.healthSeconds} onInput=${set('healthSeconds')} /></label>
        <label>At once <input name="maxParallel" type="number" min="1" value=${form.maxParallel} onInput=${set('maxParallel')} /></label>
      </div>
      <${ErrorBox} error=${error} what="updates" />
      <div class="btn-row">
        <button class="btn primary" type="submit" disabled=${busy || form.artifact === '' || form.version.trim() === ''}>Start rollout</button>
        <button class="btn" type="button" onClick=${onCancel}>Cancel</button>
      </div>
    </div>
  </form>`
}

export function UpdatesPage () {
  const [creating, setCreating] = useState(false)
  const [list, refresh] = useResource(async () => ({ data: await api('GET', '/api/updates') }), [], ['updates'])
  const rollouts = list.data ?? []
  useInterval(refresh, 3000, rollouts.some(r => activeStates.has(r.state)))
  return html`<section data-page="updates">
    <div class="page-head">
      <div><h1>Updates</h1><div class="sub muted">Roll a new executable out to agents or relays: canaries first, each rolls back by itself if the new version is not healthy.</div></div>
      <button class="btn primary" onClick=${() => setCreating(!creating)}>New update</button>
    </div>
    ${creating ? html`<${NewUpdate} onCreated=${u => go(`#/updates/${encodeURIComponent(u.id)}`)} onCancel=${() => setCreating(false)} />` : null}
    <${ErrorBox} error=${list.error} what="updates" />
    <div class="table-wrap">
      <table data-testid="updates-table">
        <thead><tr><th>Update</th><th>Target</th><th>Version</th><th>State</th><th>Progress</th><th>Created</th></tr></thead>
        <tbody>
          ${rollouts.length === 0 && !list.loading
            ? html`<tr><td class="empty" colspan="6">No updates yet.</td></tr>`
            : rollouts.map(r => html`<tr key=${r.id} data-update=${r.id}>
                <td><a class="mono" href=${`#/updates/${encodeURIComponent(r.id)}`}>${r.id}</a></td>
                <td>${r.target}</td><td class="mono">${r.version}</td><td><${Badge} value=${r.state} /></td>
                <td class="small">${countsLine(r.counts)}</td><td>${fmtTime(r.createdAt)}</td>
              </tr>`)}
        </tbody>
      </table>
    </div>
  </section>`
}

export function UpdateDetail ({ id }) {
  const [rollout, refresh] = useResource(async () => ({ data: await api('GET', `/api/updates/${encodeURIComponent(id)}`) }), [id], ['updates'])
  const [error, setError] = useState(null)
  const r = rollout.data
  useInterval(refresh, 2000, r !== undefined && activeStates.has(r.state))
  if (r === undefined) {
    return html`<section data-page="update"><p><a href="#/updates">← Updates</a></p>${rollout.error !== null ? html`<${ErrorBox} error=${rollout.error} what="updates" />` : html`<p class="muted">Loading…</p>`}</section>`
  }
  const act = action => async () => {
    setError(null)
    try {
      await api('POST', `/api/updates/${encodeURIComponent(r.id)}/${action}`)
      refresh()
    } catch (err) {
      setError(err)
    }
  }
  const link = t => r.target === 'agents' ? html`<a href=${`#/endpoints/${encodeURIComponent(t.id)}`}>${t.name ?? t.id}</a>` : html`<span>${t.name ?? t.id}</span>`
  return html`<section data-page="update" data-update=${r.id} data-state=${r.state}>
    <p><a href="#/updates">← Updates</a></p>
    <div class="page-head">
      <div><h1>Update <span class="mono">${r.id}</span> <${Badge} value=${r.state} /></h1>
        <div class="sub muted" data-testid="counts">${countsLine(r.counts)}</div></div>
      <div class="btn-row">
        ${r.state === 'running' ? html`<button class="btn" onClick=${act('pause')}>Pause</button>` : null}
        ${r.state === 'paused' ? html`<button class="btn primary" onClick=${act('resume')}>Resume</button>` : null}
        ${activeStates.has(r.state) ? html`<button class="btn danger" onClick=${act('abort')}>Abort</button>` : null}
      </div>
    </div>
    <${ErrorBox} error=${error ?? rollout.error} what="updates" />
    <div class="card">
      <dl class="facts">
        <dt>To</dt><dd class="mono">${r.version} (${r.artifact}, ${fmtBytes(r.size)})</dd>
        <dt>Targets</dt><dd>${r.target}</dd>
        ${r.reason !== null ? html`<dt>Why</dt><dd>${r.reason}</dd>` : null}
        <dt>Health deadline</dt><dd>${r.healthSeconds} s · at most ${r.maxParallel} at once</dd>
        <dt>Created</dt><dd>${fmtTime(r.createdAt)} · ends by ${fmtTime(r.deadline)}</dd>
      </dl>
    </div>
    <div class="table-wrap">
      <table data-testid="update-targets">
        <thead><tr><th>${r.target === 'agents' ? 'Endpoint' : 'Relay'}</th><th>State</th><th>Progress</th><th>From</th><th>Running</th><th>Result</th></tr></thead>
        <tbody>${r.targets.map(t => html`<tr key=${t.id} data-target=${t.id} data-state=${t.state}>
          <td>${link(t)}${t.canary ? html` <span class="badge warn">canary</span>` : null}</td>
          <td><${Badge} value=${t.state} /></td>
          <td><${Progress} value=${t.state === 'succeeded' ? 1 : t.progress} state=${t.state} /></td>
          <td class="mono">${t.fromVersion ?? '–'}</td><td class="mono">${t.version ?? '–'}</td>
          <td>${t.error ? html`<div class="error small">${t.error.message} <code>${t.error.code}</code></div>` : (t.note ? html`<span class="muted small">${t.note}</span>` : html`<span class="muted">–</span>`)}</td>
        </tr>`)}</tbody>
      </table>
    </div>
  </section>`
}
