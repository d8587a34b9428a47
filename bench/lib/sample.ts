import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { createServer } from 'node:net'

/** Clock ticks per second for /proc/<pid>/stat (USER_HZ: 100 on Linux). */
const TICKS = 100

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
export function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may hold spaces) start at field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / TICKS // utime (14), stime (15)
}

/** Resident set size in bytes, from /proc/<pid>/status VmRSS. */
export function rssBytes (pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1]) * 1024
}

/** A CPU meter: cores used by a process between start() and read(). */
export function cpuMeter (pid: number): { read: () => { cores: number, cpuSeconds: number, seconds: number } } {
  const c0 = cpuSeconds(pid)
  const t0 = performance.now()
  return {
    read: () => {
      const cpu = cpuSeconds(pid) - c0
      const seconds = (performance.now() - t0) / 1000
      return { cores: cpu / seconds, cpuSeconds: cpu, seconds }
    }
  }
}

/** Per-socket kernel counters for established TCP sockets whose local port is `port`. */
export interface WireSample {
  at: number
  sockets: Map<string, { bytes: number, segs: number }>
}

/** TCP + IPv4 header bytes per segment (20 + 20 + 12 bytes of timestamp option). */
export const HEADER_BYTES_PER_SEGMENT = 52

/**
 * Reads `ss -tin state established '( sport = :port )'`: per socket,
 * bytes_acked + bytes_received (payload both ways) and segs_out + segs_in.
 */
export function wireSample (port: number): WireSample {
  const out = execFileSync('ss', ['-tinH', 'state', 'established', `( sport = :${port} )`], { maxBuffer: 256 * 1024 * 1024 }).toString()
  const sockets = new Map<string, { bytes: number, segs: number }>()
  let key: string | null = null
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue
    if (!/^\s/.test(line)) {
      // "<recv-q> <send-q> <local> <peer>" (state column omitted by the filter)
      const parts = line.trim().split(/\s+/)
      key = parts.slice(-2).join(' ')
      continue
    }
    if (key === null) continue
    const num = (re: RegExp): number => { const m = re.exec(line); return m === null ? 0 : Number(m[1]) }
    const bytes = num(/\bbytes_acked:(\d+)/) + num(/\bbytes_received:(\d+)/)
    const segs = num(/(?:^|\s)segs_out:(\d+)/) + num(/(?:^|\s)segs_in:(\d+)/)
    sockets.set(key, { bytes, segs })
    key = null
  }
  return { at: performance.now(), sockets }
}

/**
 * Wire bytes between two samples: payload + 52 bytes per segment, summed over
 * sockets present at the end (a socket new since the start counts from zero;
 * one closed in between is lost, so keep the window free of churn).
 */
export function wireDelta (a: WireSample, b: WireSample): { bytes: number, payloadBytes: number, segments: number, seconds: number, sockets: number, socketsClosed: number } {
  let payload = 0
  let segs = 0
  for (const [k, v] of b.sockets) {
    const before = a.sockets.get(k) ?? { bytes: 0, segs: 0 }
    payload += v.bytes - before.bytes
    segs += v.segs - before.segs
  }
  let closed = 0
  for (const k of a.sockets.keys()) if (!b.sockets.has(k)) closed++
  return { bytes: payload + segs * HEADER_BYTES_PER_SEGMENT, payloadBytes: payload, segments: segs, seconds: (b.at - a.at) / 1000, sockets: b.sockets.size, socketsClosed: closed }
}

/** A TCP port free on 127.0.0.1 now (probe: listen on 0, read it, close). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** `k` evenly spaced quantiles of sorted samples (keeps a CDF plot small for large sample sets). */
export function quantiles (sorted: number[], k = 1000): number[] {
  if (sorted.length <= k) return sorted
  return Array.from({ length: k }, (_, i) => sorted[Math.min(sorted.length - 1, Math.floor((i + 1) / k * sorted.length) - 1)])
}

/**
 * Sum of every sample of a Prometheus metric (all label sets). A metric
 * without samples throws, unless `absent` gives the value to use (a
 * histogram shows no samples before its first observation).
 */
export function metric (text: string, name: string, absent?: number): number {
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^(\S+?)(\{[^}]*\})?\s+(\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    sum += Number(m[3])
    found = true
  }
  if (!found) {
    if (absent !== undefined) return absent
    throw new Error(`metric ${name} not found`)
  }
  return sum
}

/** One sample of a labelled Prometheus metric (the line whose labels contain `label`). */
export function metricLabel (text: string, name: string, label: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(label)) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return NaN
}

/** GET of a Prometheus text endpoint (/metrics), with the admin token when given. */
export async function scrapeMetrics (url: string, token?: string): Promise<string> {
  const res = await fetch(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) })
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`)
  return await res.text()
}
