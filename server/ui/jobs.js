// The jobs pages: new job, list, one job's targets.
import { useState } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api } from './api.js'
import { Badge, ErrorBox, Progress } from './components.js'
import { fmtBytes, fmtTime, splitArgs } from './format.js'
import { useInterval, useResource } from './live.js'
import { go } from './route.js'

/** A job or target in one of these states changes no more (the server's JobTargetState). */
export const finalStates = new Set(['succeeded', 'failed'])

export function targetSummary (targets) {
  const counts = {}
  for (const t of targets ?? []) counts[t.state] = (counts[t.state] ?? 0) + 1
  return Object.entries(counts).map(([state, n]) => `${n} ${state}`).join(' · ') || 'no targets'
}

export function NewJob ({ onCreated, onCancel }) {
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
            <span>${ep.name}</span> <${Badge} value=${ep.status} />
            ${ep.allowsCommands === true ? html`<span class="badge info" data-testid="runs-commands">runs commands</span>` : (ep.allowsCommands === false ? html`<span class="badge" data-testid="no-commands">no commands</span>` : null)}
            <span class="mono muted small">${ep.id}</span>
          </label>`)}
          ${(found.data ?? []).length === 0 ? html`<p class="muted" style=${{ padding: '8px 10px', margin: 0 }}>No endpoint matches.</p>` : null}
        </div>
        ${picked.size > 0 ? html`<div class="chips" style=${{ marginTop: '8px' }}>${[...picked].map(([id, n]) => html`<span class="chip" key=${id}>${n}<button type="button" title="Remove" onClick=${() => toggle({ id })}>×</button></span>`)}</div>` : null}
      </div>
      <label>Path on the agent <span class="hint">optional: relative to the agent's files dir; the artifact's name by default</span>
        <input name="path" class="mono" value=${path} onInput=${e => setPath(e.target.value)} placeholder="releases/app.tar.gz" /></label>
      <label>Run after delivery <span class="hint">optional command line, split like a shell would (quotes group words); only agents started with --allow-exec run it ("runs commands" above), the others fail the target with RG_ERR_EXEC_NOT_ALLOWED</span>
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

export function JobsPage () {
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

export function JobDetail ({ id }) {
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
          <td><div class="name-cell"><a href=${`#/endpoints/${encodeURIComponent(t.endpointId)}`}>${t.name ?? t.endpointId}</a><span class="mono">${t.endpointId}</span></div></td>
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
