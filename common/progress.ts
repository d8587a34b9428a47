/**
 * Progress of a long transfer, dependency-free: a redrawn line on a
 * terminal, or structured figures every few seconds for a log.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/** 1536 -> "1.5 KiB". */
export function formatBytes (n: number): string {
  let value = n
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`
}

/** What a log line carries (pino fields). */
export interface ProgressFields {
  bytes: number
  total: number | null
  percent: number | null
  rateBytesPerSecond: number
}

export interface TransferProgressOptions {
  /** Shown before the bar, e.g. the file or job name. */
  label: string
  /** Total bytes, or null when unknown. */
  total: number | null
  /** Bytes already there (a resumed download): counted in the position, not in the rate. */
  start?: number
  /** A terminal to redraw one line on (stderr when it is a TTY); else `log` gets figures. */
  tty?: { write: (text: string) => unknown, columns?: number } | null
  log?: (fields: ProgressFields) => void
  /** How often a log line is written (default 5 s) and the terminal line redrawn (default 200 ms). */
  logEveryMs?: number
  drawEveryMs?: number
  now?: () => number
}

export class TransferProgress {
  private readonly opts: TransferProgressOptions
  private readonly now: () => number
  private readonly startedAt: number
  private readonly start: number
  private bytes: number
  private lastDraw = 0
  private lastLog: number
  private lastLogBytes: number
  private finished = false

  constructor (options: TransferProgressOptions) {
    this.opts = options
    this.now = options.now ?? Date.now
    this.startedAt = this.now()
    this.start = options.start ?? 0
    this.bytes = this.start
    this.lastLog = this.startedAt
    this.lastLogBytes = this.start
  }

  /** The position now (bytes transferred, including `start`). */
  update (bytes: number): void {
    if (this.finished) return
    this.bytes = bytes
    const now = this.now()
    if (this.opts.tty != null) {
      if (now - this.lastDraw >= (this.opts.drawEveryMs ?? 200)) {
        this.lastDraw = now
        this.opts.tty.write('\r' + this.line(now) + '\x1b[K')
      }
      return
    }
    if (this.opts.log !== undefined && now - this.lastLog >= (this.opts.logEveryMs ?? 5000)) {
      const rate = (bytes - this.lastLogBytes) / Math.max(0.001, (now - this.lastLog) / 1000)
      this.lastLog = now
      this.lastLogBytes = bytes
      this.opts.log(this.fields(Math.max(0, Math.round(rate))))
    }
  }

  /** Ends the line on a terminal (with the final figures). */
  done (): void {
    if (this.finished) return
    this.finished = true
    if (this.opts.tty != null) this.opts.tty.write('\r' + this.line(this.now()) + '\x1b[K\n')
  }

  private fields (rate: number): ProgressFields {
    const total = this.opts.total !== null && this.opts.total >= 0 ? this.opts.total : null
    return {
      bytes: this.bytes,
      total,
      percent: total === null || total === 0 ? null : Math.min(100, Math.floor(this.bytes / total * 1000) / 10),
      rateBytesPerSecond: rate
    }
  }

  /** "name [#########...........] 45.0% 12.3 MiB / 27.0 MiB 5.1 MiB/s" */
  line (now = this.now()): string {
    const elapsed = Math.max(0.001, (now - this.startedAt) / 1000)
    const f = this.fields(Math.round((this.bytes - this.start) / elapsed))
    const rate = `${formatBytes(f.rateBytesPerSecond)}/s`
    if (f.total === null) return `${this.opts.label} ${formatBytes(f.bytes)} ${rate}`
    const width = 24
    const filled = Math.round(width * Math.min(1, f.total === 0 ? 1 : f.bytes / f.total))
    const bar = '#'.repeat(filled) + '.'.repeat(width - filled)
    return `${this.opts.label} [${bar}] ${(f.percent ?? 100).toFixed(1)}% ${formatBytes(f.bytes)} / ${formatBytes(f.total)} ${rate}`
  }
}
