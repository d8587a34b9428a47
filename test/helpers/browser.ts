// A real headless Chromium for dashboard tests (Debian's /usr/bin/chromium,
// driven by playwright-core: no browser download).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Page } from 'playwright-core'
import type { TapLike } from './cluster.js'

const CHROMIUM = process.env.RELAYGATE_CHROMIUM ?? '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
export const shots = join(dirname(fileURLToPath(import.meta.url)), '..', 'ui', 'screenshots')
mkdirSync(shots, { recursive: true })

export interface Browser {
  page: Page
  /** Page errors, CSP violations and console errors (failed-request noise aside). */
  problems: string[]
  /** Every URL the page requested. */
  urls: string[]
}

export async function openBrowser (t: TapLike): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'relaygate-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 }
  })
  t.teardown(async () => {
    await context.close()
    rmSync(profile, { recursive: true, force: true })
  })
  const page = context.pages()[0] ?? await context.newPage()
  page.setDefaultTimeout(15_000)
  const problems: string[] = []
  const urls: string[] = []
  page.on('pageerror', err => problems.push(`page error: ${err.message}`))
  page.on('console', msg => {
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) problems.push(`console: ${msg.text()}`)
  })
  page.on('request', req => urls.push(req.url()))
  return { page, problems, urls }
}

export async function signIn (page: Page, baseUrl: string, token: string, hash = ''): Promise<void> {
  await page.goto(`${baseUrl}/${hash}`)
  await page.fill('#token', token)
  await page.click('button[type=submit]')
  await page.waitForSelector('nav.nav')
}

export const shot = async (page: Page, name: string): Promise<void> => {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true })
}

