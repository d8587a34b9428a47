// The dashboard's team pages (issue 17) in a real headless Chromium: API
// tokens created and revoked, the audit log filtered and paged, an endpoint
// renamed and tagged (a taken name refused), the navigation a viewer sees;
// at 1280 and at 390 px.
import t from 'tap'
import type { Page } from 'playwright-core'
import { openBrowser, signIn, shot } from '../helpers/browser.js'
import { startServer, Api } from '../helpers/cluster.js'


/** The page does not scroll sideways, and the navigation is one compact bar (at 390 px). */
async function fitsPhone (t: { ok: (v: unknown, m: string) => void }, page: Page, what: string): Promise<void> {
  const overflow = await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth - (globalThis as any).innerWidth)
  t.ok(overflow <= 1, `${what}: no sideways scroll of the page at 390 px (${overflow} px)`)
  const bar = await page.evaluate(() => (globalThis as any).document.querySelector('.sidebar').getBoundingClientRect().height)
  t.ok(bar <= 110, `${what}: the navigation is one compact bar (${Math.round(bar)} px)`)
}

t.test('tokens and audit pages; rename and tag an endpoint; a viewer sees neither admin page', async t => {
  const { server, api } = await startServer(t)
  const a = await api.ok('POST', '/api/endpoints', { name: 'db-1' })
  await api.ok('POST', '/api/endpoints', { name: 'db-2' })
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token, '#/tokens')
  await page.waitForSelector('[data-testid=whoami] >> text=admin · admin')

  // A token, created from the form, shown once.
  await page.waitForSelector('[data-testid=tokens-table] tr[data-token=admin]')
  await page.fill('[data-testid=token-form] input[name=name]', 'dash')
  await page.selectOption('[data-testid=token-form] select[name=role]', 'viewer')
  await page.click('[data-testid=token-form] button[type=submit]')
  const value = (await (await page.waitForSelector('[data-testid=token-value]')).textContent())!.trim()
  t.match(value, /^rgt_/, 'the new token is shown')
  const viewer = new Api(server.httpUrl, value)
  t.same(await viewer.ok('GET', '/api/whoami'), { id: (await api.ok('GET', '/api/tokens'))[1].id, name: 'dash', role: 'viewer' }, 'and works, as a viewer')
  await page.waitForSelector('[data-testid=tokens-table] tr[data-token=dash]')
  // A taken name: the error says so.
  await page.fill('[data-testid=token-form] input[name=name]', 'dash')
  await page.click('[data-testid=token-form] button[type=submit]')
  t.match(await (await page.waitForSelector('[role=alert]')).textContent(), /active token is named "dash"/)
  await shot(page, 'tokens')

  // Rename and tag an endpoint; a taken name is refused with the reason.
  await page.goto(`${server.httpUrl}/#/endpoints/${a.id as string}`)
  await page.click('[data-testid=edit-endpoint]')
  await page.fill('[data-testid=edit-form] input[name=name]', 'db-2')
  await page.click('[data-testid=edit-form] button[type=submit]')
  t.match(await (await page.waitForSelector('[role=alert]')).textContent(), /an endpoint named "db-2" exists/)
  await page.fill('[data-testid=edit-form] input[name=name]', 'db-primary')
  await page.fill('[data-testid=edit-form] input[name=tags]', 'site-a, db')
  await page.click('[data-testid=edit-form] button[type=submit]')
  await page.waitForSelector('h1 >> text=db-primary')
  await page.waitForSelector('[data-testid=endpoint-tags] >> text=site-a')
  const changed = await api.ok('GET', `/api/endpoints/${a.id as string}`)
  t.same([changed.name, changed.tags], ['db-primary', ['site-a', 'db']], 'saved')
  await shot(page, 'endpoint-edit')

  // The audit log: what was just done, newest first; filtered by action.
  await page.click('nav.nav a[href="#/audit"]')
  await page.waitForSelector('[data-testid=audit-table] tr[data-action="endpoint.change"]')
  const actions = await page.$$eval('[data-testid=audit-table] tbody tr', trs => trs.map((tr: any) => tr.dataset.action))
  t.same(actions.slice(0, 5), ['endpoint.change', 'endpoint.change', 'token.create', 'token.create', 'endpoint.create'], 'newest first, the refusals too')
  t.match(await page.textContent('[data-testid=audit-table] tbody tr:nth-child(2)'), /RG_ERR_NAME_TAKEN/)
  await page.fill('[data-testid=audit-filters] input[name=action]', 'token')
  await page.click('[data-testid=audit-filters] button[type=submit]')
  await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll('[data-testid=audit-table] tbody tr')].every((tr: any) => tr.dataset.action === 'token.create'))
  // Live: a change made elsewhere appears without a reload.
  await api.ok('POST', '/api/tokens', { name: 'ci', role: 'operator' })
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('[data-testid=audit-table] tbody tr').length === 3)
  t.match(await page.textContent('[data-testid=audit-table] tbody tr:first-child'), /name: ci · role: operator/)
  await shot(page, 'audit')

  await page.setViewportSize({ width: 390, height: 800 })
  await fitsPhone(t, page, 'audit')
  await shot(page, 'audit-phone')
  await page.goto(`${server.httpUrl}/#/tokens`)
  await page.waitForSelector('[data-testid=tokens-table] tr[data-token=ci]')
  await fitsPhone(t, page, 'tokens')
  // Revoke from the page (confirmed).
  page.once('dialog', dialog => { void dialog.accept() })
  await page.click('[data-testid=tokens-table] tr[data-token=dash] button:has-text("Revoke")')
  await page.waitForSelector('[data-testid=tokens-table] tr[data-token=dash] >> text=revoked')
  t.equal((await viewer.request('GET', '/api/endpoints')).status, 401, 'revoked from the page: refused')
  await shot(page, 'tokens-phone')
  // The endpoint's rename and tags form on the phone.
  await page.goto(`${server.httpUrl}/#/endpoints/${a.id as string}`)
  await page.click('[data-testid=edit-endpoint]')
  await page.waitForSelector('[data-testid=edit-form]')
  await fitsPhone(t, page, 'endpoint edit')
  const form = await page.evaluate(() => (globalThis as any).document.querySelector('[data-testid=edit-form]').getBoundingClientRect().right)
  t.ok(form <= 391, `the form fits the screen (${Math.round(form)} px)`)
  await shot(page, 'endpoint-edit-phone')
  t.same(problems, [], 'no page errors')
})

t.test('a viewer signs in: no Tokens or Audit in the navigation', async t => {
  const { server, api } = await startServer(t)
  const viewer = await api.ok('POST', '/api/tokens', { name: 'wall', role: 'viewer' })
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, viewer.token, '#/endpoints')
  await page.waitForSelector('[data-testid=whoami] >> text=wall · viewer')
  const nav = await page.$$eval('nav.nav a', links => links.map((l: any) => l.textContent))
  t.notOk(nav.includes('Tokens') || nav.includes('Audit'), `admin pages hidden (${nav.join(', ')})`)
  t.ok(nav.includes('Endpoints'))
  t.same(problems.filter(p => !p.includes('403')), [], 'no page errors')
})
