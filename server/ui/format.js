// Formatting of bytes, times and durations, and argv parsing.

export function fmtBytes (n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`
}

export function fmtAgo (iso, now) {
  if (iso === null || iso === undefined) return 'never'
  const s = Math.round((now - Date.parse(iso)) / 1000)
  if (s < 5) return 'just now'
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86_400)} d ago`
}

export function fmtTime (iso) {
  if (iso === null || iso === undefined) return '–'
  return new Date(iso).toLocaleString()
}

export function fmtDuration (seconds) {
  if (typeof seconds !== 'number') return '–'
  if (seconds < 120) return `${seconds} s`
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`
  return `${(seconds / 86_400).toFixed(1)} d`
}

export const short = (s, n = 8) => s === null || s === undefined ? '–' : (s.length > n + 1 ? `${s.slice(0, n)}…` : s)

/** Splits a command line into argv: whitespace separates, quotes group, backslash escapes. */
export function splitArgs (line) {
  const out = []
  let cur = null
  let quote = null
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (quote !== null) {
      if (c === quote) quote = null
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i]
      else cur += c
    } else if (c === '"' || c === "'") {
      quote = c
      cur ??= ''
    } else if (c === '\\' && i + 1 < line.length) {
      cur = (cur ?? '') + line[++i]
    } else if (/\s/.test(c)) {
      if (cur !== null) out.push(cur)
      cur = null
    } else {
      cur = (cur ?? '') + c
    }
  }
  if (quote !== null) throw new Error(`unclosed ${quote} quote`)
  if (cur !== null) out.push(cur)
  return out
}
