// The dashboard's Updates pages (issue 16) in a real headless Chromium: a
// rollout started from the form, its progress per target shown live, pause
// and resume from the page, and each agent's version in the endpoint list.
import t from 'tap'
import { join } from 'node:path'
import { openBrowser, signIn, shot } from '../helpers/browser.js'
import { startSite, tempDir } from '../helpers/cluster.js'
import { uploadArtifact } from '../helpers/artifacts.js'
import { scriptBuild, UnitAgent } from '../helpers/updates.js'

t.test('updates: start a rollout from the page, follow each target, pause and resume it; endpoints filtered by a tag', async t => {
  const site = await startSite(t)
  const dir = tempDir(t)
  const v1 = scriptBuild(dir, '0.3.1')
  const v2 = scriptBuild(dir, '0.3.2')
  t.equal((await uploadArtifact(site.api, 'relaygate-next', v2.bytes)).status, 201)
  const names = ['web-01', 'web-02', 'db-01']
  const units: UnitAgent[] = []
  const unitFor = (i: number, joinToken: string): UnitAgent => new UnitAgent(t, join(dir, `agent-${i}`), { path: v1.path, version: '0.3.1' }, () => ({ joinToken }))
  const tokens: string[] = []
  for (const [i, name] of names.entries()) {
    const e = await site.api.ok('POST', '/api/endpoints', { name, tags: [name.startsWith('web') ? 'web' : 'db', 'site-a'] })
    tokens.push(e.joinToken)
    units.push(unitFor(i, e.joinToken))
    await units[i].start().whenOnline()
  }
  const { page, problems } = await openBrowser(t)
  await signIn(page, site.server.httpUrl, site.api.token, '#/endpoints')
  await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll('[data-testid=agent-version]')].filter((c: any) => c.textContent === '0.3.1').length === 3)

  // web-02 and db-01 go offline: the rollout's canary (web-01, the first) goes alone.
  await units[1].stop()
  await units[2].stop()
  await page.click('nav.nav a[href="#/updates"]')
  await page.waitForSelector('[data-page=updates] [data-testid=updates-table]')
  // The table is drawn before its first load answers: wait for the empty state, not just the table.
  await page.waitForSelector('[data-testid=updates-table] >> text=No updates yet')
  t.pass('an empty list says so')
  await page.click('text=New update')
  await page.selectOption('[data-testid=new-update] select[name=artifact]', 'relaygate-next')
  await page.fill('[data-testid=new-update] input[name=version]', '0.3.2')
  await page.fill('[data-testid=new-update] input[name=maxParallel]', '1')
  await page.click('[data-testid=new-update] button[type=submit]')
  // The page shows "Loading…" (no data-update yet) until the rollout's first load answers.
  await page.waitForSelector('[data-page=update][data-update]')
  const id = await page.getAttribute('[data-page=update]', 'data-update')
  // The page follows the canary to its end, then it is paused; the others come back while it is.
  await page.waitForSelector('[data-testid=update-targets] tr[data-state=succeeded]', { timeout: 30_000 })
  await page.click('button:has-text("Pause")')
  await page.waitForSelector('[data-page=update][data-state=paused]')
  await page.waitForSelector('button:has-text("Resume")')
  units[1] = unitFor(1, tokens[1])
  units[2] = unitFor(2, tokens[2])
  await units[1].start().whenOnline()
  await units[2].start().whenOnline()
  await new Promise(resolve => setTimeout(resolve, 1500)) // more than a tick of the rollout
  const paused = await site.api.ok('GET', `/api/updates/${id}`)
  t.same([paused.state, paused.counts.succeeded, paused.counts.pending], ['paused', 1, 2], 'back online, the rest still wait while paused')
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('[data-testid=update-targets] tr[data-state=pending]').length === 2)
  t.match(await page.textContent('[data-testid=update-targets]'), /canary/, 'the canary is marked')
  await shot(page, 'update-paused')

  await page.click('button:has-text("Resume")')
  await page.waitForSelector('[data-page=update][data-state=succeeded]', { timeout: 60_000 })
  const rows = await page.$$eval('[data-testid=update-targets] tbody tr', trs => trs.map((tr: any) => tr.textContent))
  t.equal(rows.length, 3)
  for (const row of rows) t.match(row, /succeeded.*0\.3\.1.*0\.3\.2/, 'each target: succeeded, from and to')
  t.match(await page.textContent('[data-testid=counts]'), /3 of 3 updated/)
  await shot(page, 'update-done')

  // The endpoint list follows: every agent on the new version.
  await page.click('nav.nav a[href="#/endpoints"]')
  await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll('[data-testid=agent-version]')].filter((c: any) => c.textContent === '0.3.2').length === 3)
  // Tags show on each endpoint; one click lists only the endpoints carrying it.
  await page.click('tr[data-name=web-01] button[data-tag=web]')
  await page.waitForSelector('[data-testid=tag-filter]')
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('tbody tr[data-endpoint]').length === 2)
  t.same(await page.$$eval('tbody tr[data-endpoint]', trs => trs.map((tr: any) => tr.dataset.name)), ['web-01', 'web-02'], 'the web endpoints only')
  await shot(page, 'endpoints-tag')
  await page.click('[data-testid=tag-filter] button')
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('tbody tr[data-endpoint]').length === 3)

  // On a phone: the rollout's table scrolls inside its frame, the page itself does not.
  await page.setViewportSize({ width: 390, height: 800 })
  await page.goto(`${site.server.httpUrl}/#/updates/${id}`)
  await page.waitForSelector('[data-page=update][data-state=succeeded]')
  const overflow = await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth - (globalThis as any).innerWidth)
  t.ok(overflow <= 1, `no sideways scroll of the page at 390 px (${overflow} px)`)
  const bar = await page.evaluate(() => (globalThis as any).document.querySelector('.sidebar').getBoundingClientRect().height)
  t.ok(bar <= 110, `the navigation is one compact bar at 390 px (${Math.round(bar)} px of 800)`)
  const table = await page.evaluate(() => { const w = (globalThis as any).document.querySelector('[data-page=update] .table-wrap'); return { client: w.clientWidth, scroll: w.scrollWidth, right: w.getBoundingClientRect().right } })
  t.ok(table.right <= 390 + 1, 'the table\'s frame fits the screen')
  t.ok(table.scroll >= table.client, 'and its columns scroll inside it')
  await shot(page, 'update-phone')
  t.same(problems, [], 'no page errors')
})
