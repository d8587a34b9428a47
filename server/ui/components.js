// Small shared components: badges, errors, progress bars, copy buttons, the pager.
import { useState } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'

// Exactly the states the server sends: endpoint status, tunnel state, job and
// job target state (queued, downloading, verifying, running, succeeded, failed), relay link,
// rollout state (running, paused, aborted, succeeded, failed) and update target state.
export const badgeKinds = {
  online: 'ok', offline: '', open: 'ok', requested: 'warn', closed: '',
  queued: '', downloading: 'info', verifying: 'info', running: 'info', succeeded: 'ok', failed: 'bad',
  connected: 'ok', disconnected: '', revoked: 'bad',
  paused: 'warn', aborted: 'bad', pending: '', sent: 'info', installing: 'info', restarting: 'info', cancelled: '',
  ok: 'ok', admin: 'warn', operator: 'info', viewer: ''
}

export function Badge ({ value, label }) {
  return html`<span class=${`badge ${badgeKinds[value] ?? ''}`} data-value=${value}>${label ?? value}</span>`
}

export function ErrorBox ({ error, what }) {
  if (error === null || error === undefined) return null
  const missing = error.status === 404 && error.code === 'RG_ERR_NOT_FOUND' && what !== undefined
  return html`<div class="error" role="alert">
    ${missing ? html`The ${what} API is not available on this server yet. ` : ''}
    ${error.message}${error.code !== undefined ? html` <code>${error.code}</code>` : ''}
  </div>`
}

export function Progress ({ value, state }) {
  const pct = Math.max(0, Math.min(100, Math.round((value ?? 0) * 100)))
  const cls = state === 'succeeded' ? 'done' : (state === 'failed' ? 'failed' : '')
  return html`<div class="progress-line"><progress class=${cls} max="100" value=${pct}></progress><span>${pct}%</span></div>`
}

export function CopyButton ({ text }) {
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

export function Pager ({ offset, limit, total, onOffset }) {
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

/**
 * An action a button starts: asks `question` first (when given), clears the
 * error, runs `call`, then `then` (e.g. a refresh); a failure goes to `onError`.
 */
export async function attempt (call, { question, then, onError }) {
  if (question !== undefined && !confirm(question)) return
  onError(null)
  try {
    await call()
    then?.()
  } catch (err) {
    onError(err)
  }
}
