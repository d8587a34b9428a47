// The settings page.
import { useState, useEffect } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api, session } from './api.js'
import { ErrorBox } from './components.js'
import { fmtBytes, fmtDuration } from './format.js'
import { useLive, useResource } from './live.js'

export const settingFields = [
  { key: 'checkinIntervalSeconds', label: 'Check-in interval', hint: 'How often agents check in. Relays answer check-ins; the server pays only for changes.', choices: [5, 10, 30] },
  { key: 'tunnelIdleTimeoutSeconds', label: 'Tunnel idle timeout (s)', hint: 'An agent closes its tunnel after this long without admin traffic (sending a snapshot first).' },
  { key: 'keepAliveSeconds', label: 'Keep-alive (s)', hint: 'While an admin session is open, the server sends a keep-alive this often.' },
  { key: 'snapshotIntervalSeconds', label: 'Snapshot interval (s)', hint: 'Agents send a snapshot of their state this often.' },
  { key: 'maxUploadBytes', label: 'Largest artifact upload (bytes)', hint: 'Uploads larger than this are refused.', bytes: true },
  { key: 'auditRetentionDays', label: 'Audit log retention (days)', hint: 'Audit entries older than this are deleted.' }
]

export function SettingsPage () {
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
