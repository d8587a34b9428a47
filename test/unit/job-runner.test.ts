import t from 'tap'
import fs from 'node:fs'
import { join } from 'node:path'
import { JobRunner } from '../../agent/jobs.js'
import { tempDir, testLogger, eventually, type TapLike } from '../helpers/cluster.js'

/**
 * The agent's job runner on its own (no relay: every download waits for one
 * until the job's deadline). What it does with a job it has already seen.
 */
function runner (t: TapLike): { jobs: JobRunner, sent: any[], filesDir: string } {
  const dir = tempDir(t)
  const filesDir = join(dir, 'files')
  const sent: any[] = []
  const jobs = new JobRunner({ logger: testLogger(), send: msg => sent.push(msg), relay: () => null }, { dataDir: dir, filesDir, allowExec: false, progressTty: false })
  t.teardown(() => jobs.close())
  return { jobs, sent, filesDir }
}

const job = (attempt: number, deadline: number, path = 'app.bin'): any =>
  ({ t: 'job', jobId: 'j1', attempt, sha256: 'a'.repeat(64), size: 10, path, run: null, deadline, n: attempt, mac: 'x' })

const results = (sent: any[]): any[] => sent.filter(m => m.t === 'job-result')

t.test('a new attempt of a job that failed here really runs (it answered with the stored failure without trying)', async t => {
  const { jobs, sent, filesDir } = runner(t)
  // Attempt 1 fails before any download: its path leads out through a symlink.
  fs.mkdirSync(filesDir, { recursive: true })
  fs.symlinkSync(tempDir(t), join(filesDir, 'out'))
  jobs.onControl(job(1, Date.now() + 60_000, 'out/app.bin'))
  await eventually(() => results(sent).length === 1 || undefined)
  t.match(results(sent)[0], { attempt: 1, state: 'failed', error: { code: 'RG_ERR_PATH_ESCAPE' } })

  jobs.onControl(job(1, Date.now() + 60_000, 'out/app.bin'))
  await eventually(() => results(sent).length === 2 || undefined)
  t.match(results(sent)[1], { attempt: 1, error: { code: 'RG_ERR_PATH_ESCAPE' } }, 'the same attempt again: the stored result, not a second run')

  fs.rmSync(join(filesDir, 'out'))
  jobs.onControl(job(2, Date.now() - 1, 'out/app.bin'))
  await eventually(() => results(sent).length === 3 || undefined)
  t.match(results(sent)[2], { attempt: 2, state: 'failed', error: { code: 'RG_ERR_JOB_DEADLINE' } }, 'attempt 2 ran: it got as far as waiting for a relay')
  t.ok(sent.some(m => m.t === 'job-progress') === false, 'no progress without a relay')
})

t.test('a download without a relay waits until the deadline, then fails with RG_ERR_JOB_DEADLINE', async t => {
  const { jobs, sent } = runner(t)
  const started = Date.now()
  jobs.onControl(job(1, started + 600))
  await new Promise(resolve => setTimeout(resolve, 300))
  t.same(results(sent), [], 'still waiting before the deadline')
  t.equal(jobs.running, 1)
  await eventually(() => results(sent).length === 1 || undefined, 5000)
  t.match(results(sent)[0], { attempt: 1, state: 'failed', error: { code: 'RG_ERR_JOB_DEADLINE', message: /passed while the download waited for a relay/ } })
  t.ok(Date.now() - started >= 600, 'not before the deadline')
})

t.test('partial downloads untouched for a day are removed at start; fresh ones are kept for their resume', async t => {
  const dir = tempDir(t)
  const downloads = join(dir, 'downloads')
  fs.mkdirSync(downloads, { recursive: true })
  const old = join(downloads, `${'b'.repeat(64)}.part`)
  const fresh = join(downloads, `${'c'.repeat(64)}.part`)
  fs.writeFileSync(old, 'x')
  fs.writeFileSync(fresh, 'y')
  const dayAndMore = (Date.now() - 25 * 3600 * 1000) / 1000
  fs.utimesSync(old, dayAndMore, dayAndMore)
  const jobs = new JobRunner({ logger: testLogger(), send: () => {}, relay: () => null }, { dataDir: dir, filesDir: join(dir, 'files'), allowExec: false, progressTty: false })
  t.teardown(() => jobs.close())
  t.notOk(fs.existsSync(old), 'the stale one is gone')
  t.ok(fs.existsSync(fresh), 'the fresh one stays')
})
