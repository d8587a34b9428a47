// The web dashboard in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core: no browser download). Each test starts its own
// server (and relay and agents where needed) on port 0 and its own browser.
import t from 'tap'
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes, createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Page } from 'playwright-core'
import { openBrowser, signIn, shot, shots } from '../helpers/browser.js'
import { startServer, startSite, startAgent, startTarget, eventually, tempDir, type Api, type TapLike } from '../helpers/cluster.js'

const here = dirname(fileURLToPath(import.meta.url))

/** A marker that survives only as long as the page is not reloaded. */
const markPage = (page: Page): Promise<void> => page.evaluate(() => { (globalThis as any).__relaygateNoReload = true })
const pageWasKept = (page: Page): Promise<boolean> => page.evaluate(() => (globalThis as any).__relaygateNoReload === true)

t.test('log in with the admin token; it stays out of URLs and in this tab only', async t => {
  const { server, api } = await startServer(t)
  const { page, problems, urls } = await openBrowser(t)
  const response = await page.goto(`${server.httpUrl}/`)
  const headers = response!.headers()
  t.match(headers['content-security-policy'], /default-src 'self'/)
  t.match(headers['content-security-policy'], /script-src 'self'(;|$)/, 'no inline scripts allowed')
  t.equal(headers['cache-control'], 'no-cache')
  t.match(headers['content-type'], /^text\/html/)
  await page.waitForSelector('#token')
  await shot(page, 'login')
  await page.fill('#token', api.token)
  await page.click('button[type=submit]')
  await page.waitForSelector('[data-page=endpoints]')
  // The page shell appears before its first fetch answers: wait for the list, not just the page.
  t.ok(await page.waitForSelector('text=No endpoints yet', { timeout: 10_000 }).then(() => true, () => false), 'the empty endpoints page shows')
  await page.waitForSelector('[data-testid=live][data-status=live]')
  t.equal(await page.evaluate(() => (globalThis as any).sessionStorage.getItem('relaygate.adminToken')), api.token, 'kept in sessionStorage')
  t.equal(await page.evaluate(() => (globalThis as any).localStorage.length), 0, 'nothing in localStorage')

  await page.reload()
  await page.waitForSelector('[data-page=endpoints]')
  t.pass('a reload keeps the session')
  for (const name of ['Relays', 'Artifacts', 'Jobs', 'Settings', 'Endpoints']) {
    await page.click(`nav >> text=${name}`)
    await page.waitForSelector(`[data-page=${name.toLowerCase()}]`)
  }
  await page.click('text=Sign out')
  await page.waitForSelector('#token')
  t.equal(await page.evaluate(() => (globalThis as any).sessionStorage.getItem('relaygate.adminToken')), null, 'signing out forgets the token')

  t.notOk(urls.some(u => u.includes(api.token)), 'the token never appears in a URL')
  t.ok(urls.some(u => u.endsWith('/ui/vendor/preact.mjs')), 'preact is served from node_modules')
  t.same(problems, [], 'no page errors or CSP violations')
})

t.test('a bad token is refused with a clear message', async t => {
  const { server } = await startServer(t)
  const { page, problems } = await openBrowser(t)
  await page.goto(`${server.httpUrl}/`)
  await page.fill('#token', 'rga_this-is-not-the-admin-token')
  await page.click('button[type=submit]')
  const message = await page.textContent('[data-testid=login-error]')
  t.match(message, /refused/)
  await shot(page, 'login-refused')
  t.ok(await page.isVisible('#token'), 'still on the login page')
  t.equal(await page.evaluate(() => (globalThis as any).sessionStorage.getItem('relaygate.adminToken')), null, 'a refused token is not kept')
  t.same(problems, [])
})

t.test('an endpoint comes online on the page without a reload', async t => {
  const { server, api } = await startSite(t)
  const endpoints = []
  for (const name of ['db-01', 'web-01', 'web-02', 'build-runner']) endpoints.push(await api.ok('POST', '/api/endpoints', { name }))
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token)
  await page.waitForSelector(`tr[data-name=db-01][data-status=offline]`)
  await page.waitForSelector('[data-testid=live][data-status=live]')
  await markPage(page)

  const started = Date.now()
  const agents = endpoints.slice(0, 3).map(ep => startAgent(t, ep.joinToken))
  await page.waitForSelector(`tr[data-name=db-01][data-status=online]`)
  t.comment(`online on the page ${Date.now() - started} ms after the agent started`)
  await Promise.all(agents.map(a => a.whenOnline()))
  for (const name of ['web-01', 'web-02']) await page.waitForSelector(`tr[data-name=${name}][data-status=online]`)
  t.ok(await pageWasKept(page), 'no reload happened')
  t.equal(await page.getAttribute('tr[data-name=build-runner]', 'data-status'), 'offline')
  t.match(await page.textContent('tr[data-name=db-01]'), /site-a/, 'the relay is named')

  // Search narrows the list on the server (one page at a time).
  await page.fill('input[type=search]', 'web')
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('tbody tr[data-endpoint]').length === 2)
  t.match(await page.textContent('[data-testid=range]'), /1–2 of 2/)
  await page.fill('input[type=search]', '')
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('tbody tr[data-endpoint]').length === 4)
  await page.locator('input[type=search]').blur()
  await page.waitForTimeout(200)
  await shot(page, 'endpoints')
  if (process.env.RELAYGATE_DOCS_SCREENSHOT === '1') copyFileSync(join(shots, 'endpoints.png'), join(here, '..', '..', 'docs', 'dashboard.png'))

  // Agent offline: the page follows too.
  await agents[0].destroy()
  await page.waitForSelector(`tr[data-name=db-01][data-status=offline]`)
  t.ok(await pageWasKept(page))

  // The relays page: connected, with its agents counted.
  await page.click('nav >> text=Relays')
  await page.waitForSelector('[data-testid=relays-table] tr[data-relay] >> text=connected')
  t.match(await page.textContent('[data-testid=relays-table] tr[data-relay]'), /site-a/)
  await page.waitForFunction(() => (globalThis as any).document.querySelector('[data-testid=relays-table] tr[data-relay] td:nth-child(3)')?.textContent === '2')
  await shot(page, 'relays')
  t.same(problems, [])
})

t.test('the endpoint list pages through many endpoints', async t => {
  const { server, api } = await startServer(t)
  // Straight into the store: 10,000 endpoints through the API would take longer than the test.
  const now = Date.now()
  for (let i = 0; i < 10_000; i++) {
    server.store.createEndpoint({
      id: `e${String(i).padStart(5, '0')}`, name: `node-${String(i).padStart(5, '0')}`, tunnelTarget: null,
      authKey: Buffer.alloc(32), tunnelKey: Buffer.alloc(32), edgeId: null, createdAt: now + i, lastSeen: null, relayId: null, maxAgents: 1
    })
  }
  const { page, problems } = await openBrowser(t)
  const started = Date.now()
  await signIn(page, server.httpUrl, api.token)
  await page.waitForSelector('tr[data-name=node-00000]')
  const took = Date.now() - started
  t.comment(`first page of 10,000 endpoints shown ${took} ms after sign-in`)
  t.equal(await page.locator('tbody tr[data-endpoint]').count(), 50, '50 rows per page')
  t.match(await page.textContent('[data-testid=range]'), /1–50 of 10,000/)
  // At once, as a user might: the search box's debounce must not take us back to page 1.
  await page.click('.pager >> text=Last')
  await page.waitForSelector('tr[data-name=node-09999]')
  await page.waitForTimeout(400)
  t.match(await page.textContent('[data-testid=range]'), /9951–10000 of 10,000/, 'still on the last page')
  await page.fill('input[type=search]', 'node-0424')
  await page.waitForSelector('tr[data-name=node-04249]')
  t.equal(await page.locator('tbody tr[data-endpoint]').count(), 10)
  t.same(problems, [])
})

t.test('adding an endpoint shows the agent command with its join token', async t => {
  const { server, api } = await startSite(t)
  // An executable to install from (any bytes will do here: test/onefile installs a real one).
  const installer = await api.request('PUT', '/api/artifacts/relaygate-linux-x64', 'not really an executable', { 'content-type': 'application/octet-stream' })
  t.equal(installer.status, 201)
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token)
  await page.click('text=Add endpoint')
  await page.fill('input[name=name]', 'db-02')
  await page.fill('input[name=tunnelTarget]', 'http://127.0.0.1:2375')
  await page.click('text=Create endpoint')
  const command = (await page.textContent('[data-testid=command]')) ?? ''
  t.match(command, /^relaygate agent --join-token rg1\.\S+ --tunnel-target http:\/\/127\.0\.0\.1:2375$/)
  const installLine = (await page.textContent('[data-testid=install-command]')) ?? ''
  t.ok(installLine.includes(`echo '${installer.body.sha256 as string}  relaygate' | sha256sum -c -`), 'the one-paste line checks the executable\'s sha256')
  t.match(installLine, /&& \.\/relaygate install agent --join-token rg1\.\S+ --tunnel-target http:\/\/127\.0\.0\.1:2375$/)
  await page.waitForSelector('tr[data-name=db-02][data-status=offline]')
  await shot(page, 'endpoint-added')
  const listed = await api.ok('GET', '/api/endpoints?q=db-02')
  t.equal(listed.length, 1)
  t.equal(listed[0].tunnelTarget, 'http://127.0.0.1:2375')

  // The command works as printed: its join token brings the endpoint online.
  const joinToken = command.split(' ')[3]
  const agent = startAgent(t, joinToken)
  await page.waitForSelector('tr[data-name=db-02][data-status=online]')

  // Re-issued from the endpoint's page: a new token shown once, saying the old one stopped working.
  const stopped = new Promise<{ code: string }>(resolve => agent.once('fatal', resolve))
  await page.click('tr[data-name=db-02] a')
  await page.waitForSelector('[data-page=endpoint]')
  page.once('dialog', dialog => { void dialog.accept() })
  await page.click('[data-testid=reissue-token]')
  await page.waitForSelector('[data-testid=agent-command] >> text=New join token for')
  t.match(await page.textContent('[data-testid=agent-command]'), /old join token no longer works/, 'the page says the old one stopped working')
  const newToken = ((await page.textContent('[data-testid=command]')) ?? '').split(' ')[3]
  t.not(newToken, joinToken)
  t.equal((await stopped).code, 'RG_ERR_AUTH', 'the agent with the old token was stopped')
  await shot(page, 'token-reissued')
  t.same(problems, [])
})

t.test('connect shows "connecting…", then the target through the tunnel', async t => {
  const target = await startTarget(t, 'web-target')
  const { server, api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'web-03', tunnelTarget: target.url })
  const { page, problems, urls } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token)
  await page.click(`tr[data-name=web-03] >> text=Connect`)
  // No agent yet: the flag waits for one.
  await page.waitForSelector('[data-testid=connecting]')
  t.match(await page.textContent('[data-testid=connecting]'), /connecting…/)
  t.equal((await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state, 'requested')
  await shot(page, 'tunnel-connecting')

  startAgent(t, ep.joinToken)
  await page.waitForSelector('[data-testid=tunnel-response]')
  const first = JSON.parse((await page.textContent('[data-testid=tunnel-response]')) ?? '')
  t.same(first, { name: 'web-target', path: '/' }, 'the target answered through the tunnel')
  t.equal(await page.getAttribute('[data-testid=tunnel-response]', 'data-kind'), 'json')
  t.match(await page.textContent('[data-testid=tunnel-response]'), /\n {2}"name": "web-target"/, 'JSON is pretty-printed')

  await page.fill('input[name=path]', '/hello/world?x=1')
  await page.click('[data-testid=tunnel-browser] >> text=Fetch')
  await page.waitForFunction(() => (globalThis as any).document.querySelector('[data-testid=tunnel-response]')?.textContent.includes('"path": "/hello/world?x=1"'))
  t.same(target.hits.slice(-1), ['/hello/world?x=1'])
  await shot(page, 'tunnel-open')
  t.notOk(urls.some(u => u.includes(api.token)))
  t.notOk(page.url().includes('/proxy/'), 'the browser never navigated to the proxy')

  await page.click('text=Close tunnel')
  await page.waitForSelector('[data-testid=live] >> text=Live')
  await eventually(async () => (await api.ok('GET', `/api/endpoints/${ep.id}`)).tunnel.state === 'closed')
  await page.waitForSelector('.tunnel-bar >> text=Connect')
  t.same(problems, [])
})

t.test('settings: a change saves, and another admin\'s change shows up', async t => {
  const { server, api } = await startServer(t)
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token, '#/settings')
  await page.waitForSelector('select[name=checkinIntervalSeconds]')
  t.equal(await page.inputValue('select[name=checkinIntervalSeconds]'), '5')
  await page.selectOption('select[name=checkinIntervalSeconds]', '10')
  await page.fill('input[name=tunnelIdleTimeoutSeconds]', '600')
  await page.click('text=Save')
  await page.waitForSelector('[data-testid=saved]')
  const settings = await api.ok('GET', '/api/settings')
  t.equal(settings.checkinIntervalSeconds, 10)
  t.equal(settings.tunnelIdleTimeoutSeconds, 600)
  await shot(page, 'settings')

  await page.waitForSelector('[data-testid=live][data-status=live]')
  await api.ok('PATCH', '/api/settings', { keepAliveSeconds: 30 })
  await page.waitForFunction(() => (globalThis as any).document.querySelector('input[name=keepAliveSeconds]')?.value === '30')
  t.pass('a change made elsewhere appears without a reload')

  await page.fill('input[name=tunnelIdleTimeoutSeconds]', '1')
  await page.click('text=Save')
  t.match(await page.textContent('.error'), /RG_ERR_BAD_REQUEST/, 'a refused value shows the server\'s message')
  t.same(problems, [])
})

/** Fails with a clear message when the artifacts and jobs API is not in this server yet. */
async function needArtifactsApi (t: { fail: (message: string) => unknown }, api: Api): Promise<boolean> {
  const probe = await api.request('GET', '/api/artifacts')
  if (probe.status === 404 && probe.body?.error?.code === 'RG_ERR_NOT_FOUND') {
    t.fail('the artifacts/jobs API (GET /api/artifacts) answers 404 RG_ERR_NOT_FOUND: it has not landed in this server yet')
    return false
  }
  return true
}

t.test('artifacts: upload with a progress bar, list, delete', async t => {
  const { server, api } = await startServer(t)
  if (!await needArtifactsApi(t, api)) return
  const file = join(tempDir(t), 'payload-1.bin')
  const content = randomBytes(4 * 1024 * 1024)
  writeFileSync(file, content)
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token, '#/artifacts')
  // Slow the upload down so the bar is seen between 0 and 100 %.
  const cdp = await page.context().newCDPSession(page)
  await cdp.send('Network.enable')
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 4 * 1024 * 1024 })
  await page.setInputFiles('input[type=file]', file)
  await page.click('form button[type=submit]')
  await page.waitForFunction(() => {
    const bar = (globalThis as any).document.querySelector('[data-testid=upload] progress')
    return bar !== null && bar.value > 0 && bar.value < 100
  })
  t.pass('the progress bar moved between 0 and 100 %')
  await shot(page, 'artifact-uploading')
  await page.waitForSelector('[data-testid=upload][data-done=true]', { timeout: 30_000 })
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 })
  t.equal(await page.getAttribute('[data-testid=upload] progress', 'value'), '100')
  t.ok(Number(await page.getAttribute('[data-testid=upload]', 'data-progress-events')) > 1, 'several progress events')
  await page.waitForSelector('tr[data-artifact="payload-1.bin"]')
  const listed = (await api.ok('GET', '/api/artifacts')).find((a: any) => a.name === 'payload-1.bin')
  t.equal(listed?.sha256, createHash('sha256').update(content).digest('hex'))
  t.equal(listed?.size, content.length)
  await shot(page, 'artifacts')

  // The same name again: refused, with a button that replaces it.
  const second = join(tempDir(t), 'payload-1.bin')
  const newer = randomBytes(1024)
  writeFileSync(second, newer)
  await page.setInputFiles('input[type=file]', second)
  await page.click('form button[type=submit]')
  await page.waitForSelector('[role=alert] >> text=RG_ERR_ARTIFACT_EXISTS')
  t.equal((await api.ok('GET', '/api/artifacts/payload-1.bin')).sha256, listed?.sha256, 'nothing replaced silently')
  await page.click('[data-testid=replace-artifact]')
  await page.waitForSelector('[data-testid=upload][data-done=true]')
  await eventually(async () => (await api.ok('GET', '/api/artifacts/payload-1.bin')).sha256 === createHash('sha256').update(newer).digest('hex') || undefined)
  t.pass('replaced when asked')

  page.once('dialog', dialog => { void dialog.accept() })
  await page.click('tr[data-artifact="payload-1.bin"] >> text=Delete')
  await page.waitForSelector('tr[data-artifact="payload-1.bin"]', { state: 'detached' })
  t.same((await api.ok('GET', '/api/artifacts')).filter((a: any) => a.name === 'payload-1.bin'), [])
  t.same(problems, [])
})

t.test('jobs: deliver an artifact to an endpoint, progress shown live, the job succeeds', async t => {
  const { server, api } = await startSite(t)
  if (!await needArtifactsApi(t, api)) return
  const ep = await api.ok('POST', '/api/endpoints', { name: 'deploy-01' })
  await startAgent(t, ep.joinToken).whenOnline()
  const runner = await api.ok('POST', '/api/endpoints', { name: 'deploy-02' })
  await startAgent(t, runner.joinToken, { allowExec: true }).whenOnline()
  // Each agent's first snapshot says whether it runs commands.
  await eventually(async () => (await api.ok('GET', '/api/endpoints') as any[]).every(e => e.allowsCommands !== null) || undefined)
  const content = randomBytes(256 * 1024)
  const uploaded = await api.request('PUT', '/api/artifacts/app-1.0.bin', content as unknown as string, { 'content-type': 'application/octet-stream' })
  t.equal(uploaded.status, 201)
  const { page, problems } = await openBrowser(t)
  await signIn(page, server.httpUrl, api.token, '#/jobs')
  await page.click('text=New job')
  await page.waitForSelector('select[name=artifact] >> option[value="app-1.0.bin"]', { state: 'attached' })
  await page.selectOption('select[name=artifact]', 'app-1.0.bin')
  await page.fill('input[name=endpointSearch]', 'deploy')
  await page.waitForSelector(`[data-pick="${runner.id as string}"] [data-testid=runs-commands]`)
  await page.waitForSelector(`[data-pick="${ep.id as string}"] [data-testid=no-commands]`)
  t.pass('the picker says which endpoints run commands')
  t.notMatch(await page.textContent('[data-testid=new-job]'), /allow-listed/, 'no allow-list is promised')
  await page.check(`[data-pick="${ep.id}"] input[type=checkbox]`)
  await page.fill('[data-testid=new-job] input[name=path]', 'releases/app-1.0.bin')
  await page.click('text=Start job on 1 endpoint')
  await page.waitForSelector('[data-page=job]')
  await page.waitForSelector(`tr[data-target="${ep.id}"]`)
  await page.waitForSelector('[data-page=job][data-state=succeeded]', { timeout: 30_000 })
  t.equal(await page.getAttribute(`tr[data-target="${ep.id}"]`, 'data-state'), 'succeeded')
  t.equal(await page.getAttribute(`tr[data-target="${ep.id}"] progress`, 'value'), '100')
  t.match(await page.textContent(`tr[data-target="${ep.id}"]`), /deploy-01/, 'the target shows its endpoint\'s name')
  await shot(page, 'job-succeeded')
  await page.click('text=← Jobs')
  await page.waitForSelector('[data-testid=jobs-table] >> text=1 succeeded')
  t.same(problems, [])
})
