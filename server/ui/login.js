// The sign-in page.
import { useState } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { api, parseBody, session } from './api.js'

export function Login ({ message }) {
  const [token, setToken] = useState('')
  const [error, setError] = useState(message)
  const [busy, setBusy] = useState(false)
  const submit = async e => {
    e.preventDefault()
    const value = token.trim()
    if (value === '') {
      setError('Enter an API token.')
      return
    }
    setBusy(true)
    setError(null)
    try {
      const res = await fetch('/api/settings', { headers: { authorization: `Bearer ${value}` }, cache: 'no-store' })
      if (res.status === 401) {
        setError('That token was refused by the server (unknown or revoked). Check <data-dir>/admin-token on the server, or ask an admin for a token, and try again.')
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
      <p>Sign in with an API token: the server's admin token, or one an admin created for you. It is kept for this browser tab only.</p>
      <div class="form-stack">
        <label>API token
          <input id="token" type="password" name="token" value=${token} onInput=${e => setToken(e.target.value)} autofocus spellcheck="false" autocomplete="off" />
          <span class="hint">The first one is the file <code>admin-token</code> in the server's data dir; admins make more on the Tokens page.</span>
        </label>
        ${error !== null && error !== undefined ? html`<div class="error" role="alert" data-testid="login-error">${error}</div>` : null}
        <button class="btn primary" type="submit" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button>
      </div>
    </form>
  </div>`
}
