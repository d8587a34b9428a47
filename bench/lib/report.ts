import { execSync } from 'node:child_process'
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root: the nearest folder up with relaygate's package.json (works from source and dist/). */
export function repoRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'relaygate') return dir
    dir = dirname(dir)
  }
  return process.cwd()
}

export const BENCH_DIR = join(repoRoot(), 'bench')

export interface BenchResult {
  scenario: string
  /**
   * Names a run of the scenario with non-default parameters (e.g. the P2
   * stress run at 1 s): the files become <scenario>-<variant>-<date>.*, so
   * it does not overwrite the default run of the same day.
   */
  variant?: string
  parameters: Record<string, unknown>
  figures: Record<string, unknown>
  /** The same measurement of the baseline, taken in the same run. */
  baseline?: Record<string, unknown>
  /** relaygate ÷ baseline (or the reverse, as named). */
  ratios?: Record<string, number>
  targets?: Record<string, { target: string, met: boolean }>
  notes?: string[]
}

function gitSha (): string {
  try {
    return execSync('git rev-parse HEAD', { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
  } catch {
    return 'unknown'
  }
}

export function today (): string {
  return new Date().toISOString().slice(0, 10)
}

/** Writes bench/results/<scenario>[-<variant>]-<date>.json (and .svg when given); returns the JSON path. */
export function writeResult (result: BenchResult, svg?: string): string {
  const dir = join(BENCH_DIR, 'results')
  mkdirSync(dir, { recursive: true })
  const name = result.variant === undefined ? result.scenario : `${result.scenario}-${result.variant}`
  const base = join(dir, `${name}-${today()}`)
  const body = {
    scenario: result.scenario,
    variant: result.variant ?? null,
    date: new Date().toISOString(),
    gitSha: gitSha(),
    node: process.version,
    cores: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    memoryBytes: totalmem(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    parameters: result.parameters,
    figures: result.figures,
    baseline: result.baseline ?? null,
    ratios: result.ratios ?? null,
    targets: result.targets ?? null,
    notes: result.notes ?? []
  }
  writeFileSync(`${base}.json`, JSON.stringify(body, null, 2) + '\n')
  if (svg !== undefined) writeFileSync(`${base}.svg`, svg)
  return `${base}.json`
}

export function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))
  return sorted[i]
}

export function round (n: number, digits = 2): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')

/** A small SVG bar chart: one group per label, one bar per series. */
export function barChart (title: string, unit: string, labels: string[], series: Array<{ name: string, values: number[], color: string }>): string {
  const w = 720
  const h = 360
  const m = { l: 70, r: 20, t: 40, b: 60 }
  const max = Math.max(1e-9, ...series.flatMap(s => s.values)) * 1.1
  const groupW = (w - m.l - m.r) / labels.length
  const barW = groupW * 0.8 / series.length
  const y = (v: number): number => h - m.b - (v / max) * (h - m.t - m.b)
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`
  out += `<rect width="${w}" height="${h}" fill="white"/><text x="${w / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4
    out += `<line x1="${m.l}" x2="${w - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${esc(fmt(v))}</text>`
  }
  out += `<text x="16" y="${h / 2}" transform="rotate(-90 16 ${h / 2})" text-anchor="middle">${esc(unit)}</text>`
  labels.forEach((label, i) => {
    series.forEach((s, j) => {
      const v = s.values[i]
      const x = m.l + i * groupW + groupW * 0.1 + j * barW
      out += `<rect x="${x}" y="${y(v)}" width="${barW - 2}" height="${h - m.b - y(v)}" fill="${s.color}"><title>${esc(s.name)}: ${esc(fmt(v))}</title></rect>`
      out += `<text x="${x + barW / 2}" y="${y(v) - 4}" text-anchor="middle" font-size="10">${esc(fmt(v))}</text>`
    })
    out += `<text x="${m.l + i * groupW + groupW / 2}" y="${h - m.b + 16}" text-anchor="middle">${esc(label)}</text>`
  })
  series.forEach((s, j) => {
    out += `<rect x="${m.l + j * 160}" y="${h - 24}" width="12" height="12" fill="${s.color}"/><text x="${m.l + j * 160 + 16}" y="${h - 14}">${esc(s.name)}</text>`
  })
  return out + '</svg>\n'
}

/** A cumulative distribution (latency): x = value, y = fraction of samples at or below. */
export function cdfChart (title: string, unit: string, series: Array<{ name: string, samples: number[], color: string }>): string {
  const w = 720
  const h = 360
  const m = { l: 60, r: 20, t: 40, b: 60 }
  const all = series.flatMap(s => s.samples)
  const max = Math.max(1e-9, ...all) * 1.05
  const x = (v: number): number => m.l + (v / max) * (w - m.l - m.r)
  const y = (f: number): number => h - m.b - f * (h - m.t - m.b)
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`
  out += `<rect width="${w}" height="${h}" fill="white"/><text x="${w / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`
  for (let i = 0; i <= 4; i++) {
    out += `<line x1="${m.l}" x2="${w - m.r}" y1="${y(i / 4)}" y2="${y(i / 4)}" stroke="#ddd"/><text x="${m.l - 6}" y="${y(i / 4) + 4}" text-anchor="end">${i * 25}%</text>`
    const v = max * i / 4
    out += `<text x="${x(v)}" y="${h - m.b + 16}" text-anchor="middle">${esc(fmt(v))}</text>`
  }
  out += `<text x="${w / 2}" y="${h - 28}" text-anchor="middle">${esc(unit)}</text>`
  series.forEach((s, j) => {
    const sorted = [...s.samples].sort((a, b) => a - b)
    const pts = sorted.map((v, i) => `${x(v).toFixed(1)},${y((i + 1) / sorted.length).toFixed(1)}`).join(' ')
    out += `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts}"/>`
    out += `<rect x="${m.l + j * 200}" y="${h - 18}" width="12" height="12" fill="${s.color}"/><text x="${m.l + j * 200 + 16}" y="${h - 8}">${esc(s.name)}</text>`
  })
  return out + '</svg>\n'
}

function fmt (v: number): string {
  if (v >= 100) return String(Math.round(v))
  if (v >= 10) return v.toFixed(1)
  return v.toFixed(2)
}
