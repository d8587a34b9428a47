// relaygate dashboard: the shell and the entry point. Preact + htm as plain
// ES modules (no bundler, no network at run time). The admin token lives in
// sessionStorage and goes only into Authorization headers, never into a URL.
import { render } from '/ui/vendor/preact.mjs'
import { useState, useEffect } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { session } from './api.js'
import { AuditPage, TokensPage, useWhoami } from './access.js'
import { ArtifactsPage } from './artifacts.js'
import { EndpointDetail, EndpointsPage } from './endpoints.js'
import { JobDetail, JobsPage } from './jobs.js'
import { live, startEvents, useLiveStatus } from './live.js'
import { Login } from './login.js'
import { RelaysPage } from './relays.js'
import { useRoute } from './route.js'
import { SettingsPage } from './settings.js'
import { UpdateDetail, UpdatesPage } from './updates.js'

const pages = [
  { id: 'endpoints', label: 'Endpoints' },
  { id: 'relays', label: 'Relays' },
  { id: 'artifacts', label: 'Artifacts' },
  { id: 'jobs', label: 'Jobs' },
  { id: 'updates', label: 'Updates' },
  { id: 'settings', label: 'Settings' },
  { id: 'tokens', label: 'Tokens', admin: true },
  { id: 'audit', label: 'Audit', admin: true }
]

function Shell () {
  const route = useRoute()
  const status = useLiveStatus()
  const me = useWhoami()
  let page
  switch (route.page) {
    case 'endpoints': page = route.id === null ? html`<${EndpointsPage} />` : html`<${EndpointDetail} id=${route.id} key=${route.id} />`; break
    case 'relays': page = html`<${RelaysPage} />`; break
    case 'artifacts': page = html`<${ArtifactsPage} />`; break
    case 'jobs': page = route.id === null ? html`<${JobsPage} />` : html`<${JobDetail} id=${route.id} key=${route.id} />`; break
    case 'updates': page = route.id === null ? html`<${UpdatesPage} />` : html`<${UpdateDetail} id=${route.id} key=${route.id} />`; break
    case 'settings': page = html`<${SettingsPage} />`; break
    case 'tokens': page = html`<${TokensPage} />`; break
    case 'audit': page = html`<${AuditPage} />`; break
    default: page = html`<div class="card">No page “${route.page}”. <a href="#/endpoints">Endpoints</a></div>`
  }
  return html`<div class="shell">
    <aside class="sidebar">
      <div class="brand"><img src="/ui/favicon.svg" alt="" /> relaygate</div>
      <nav class="nav">
        ${pages.filter(p => p.admin !== true || me?.role === 'admin').map(p => html`<a key=${p.id} href=${`#/${p.id}`} class=${route.page === p.id ? 'active' : ''}>${p.label}</a>`)}
      </nav>
      <div class="side-foot">
        ${me === null ? null : html`<span class="whoami" data-testid="whoami" title="The token this tab is signed in with">${me.name} · ${me.role}</span>`}
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
