import fs from 'node:fs'
import { join } from 'node:path'
import { writeFileAtomicAsync } from '../common/files.js'
import type { Logger } from 'pino'
import { RelaygateError } from '../protocol/errors.js'
import { compile, Type, Id, EdgeId, Size, strict } from '../protocol/schema.js'
import { JobResultBody } from '../protocol/messages.js'

/** A job result on its way to the server, with the endpoint its agent authenticated as. */
export interface QueuedResult {
  key: string
  endpointId: string
  /** The agent that reported it: the server checks the result's MAC with that agent's key. */
  edgeId: string
  jobId: string
  attempt: number
  result: JobResultBody
  queuedAt: number
}

/** What a stored result file must hold: the server would refuse anything else (and replays would loop). */
const parseStored = compile('stored job result', strict({
  key: Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_-]+$' }),
  endpointId: Id,
  edgeId: EdgeId,
  jobId: Id,
  attempt: Type.Integer({ minimum: 0, maximum: 0xffffffff }),
  result: JobResultBody,
  queuedAt: Size
}))

const KEY = /^[A-Za-z0-9_-]{1,200}$/

/**
 * Agents' job results, kept on disk (one file each, written atomically)
 * until the server acknowledges them: they survive a server outage and a
 * relay restart. Bounded: beyond `maxEntries` new results are refused, and
 * the agent keeps and re-sends them.
 */
export class ResultQueue {
  private readonly dir: string
  private readonly maxEntries: number
  private readonly entries = new Map<string, QueuedResult>()
  /** Keys being written now (counted against maxEntries). */
  private readonly writing = new Set<string>()

  constructor (dir: string, logger?: Logger, maxEntries = 10_000) {
    this.dir = dir
    this.maxEntries = maxEntries
    fs.mkdirSync(dir, { recursive: true })
    for (const f of fs.readdirSync(dir)) {
      const path = join(dir, f)
      if (!f.endsWith('.json')) {
        fs.rmSync(path, { force: true })
        continue
      }
      try {
        const r = parseStored(JSON.parse(fs.readFileSync(path, 'utf8')))
        this.entries.set(r.key, r)
      } catch (err) {
        logger?.warn({ file: f, message: (err as Error).message }, 'dropping a stored job result that does not parse')
        fs.rmSync(path, { force: true })
      }
    }
  }

  static keyOf (jobId: string, endpointId: string, attempt: number): string {
    return `${jobId}_${endpointId}_${attempt}`.replace(/[^A-Za-z0-9_-]/g, '-')
  }

  get size (): number {
    return this.entries.size
  }

  /**
   * Stores a result durably (the write runs off the event loop: hundreds of
   * agents finishing at once on a busy disk blocked the relay for tens of
   * seconds with synchronous writes, bench P5). Resolves once it is on disk;
   * rejects with RG_ERR_QUEUE_FULL when the queue is full.
   */
  async add (r: QueuedResult): Promise<void> {
    const known = this.entries.has(r.key) || this.writing.has(r.key)
    if (!known && this.entries.size + this.writing.size >= this.maxEntries) {
      throw new RelaygateError('RG_ERR_QUEUE_FULL', `result queue holds ${this.maxEntries} results already`)
    }
    this.writing.add(r.key)
    try {
      await writeFileAtomicAsync(join(this.dir, `${r.key}.json`), JSON.stringify(r))
      this.entries.set(r.key, r)
    } finally {
      this.writing.delete(r.key)
    }
  }

  /** Oldest first. */
  all (): QueuedResult[] {
    return [...this.entries.values()].sort((a, b) => a.queuedAt - b.queuedAt)
  }

  remove (key: string): void {
    if (!KEY.test(key) || !this.entries.delete(key)) return
    fs.rmSync(join(this.dir, `${key}.json`), { force: true })
  }
}
