import v8 from 'node:v8'

/**
 * How far V8's old generation may grow past what a full collection left
 * alive before the next one starts: 300 % more (a factor of 4, the most V8
 * chooses by itself when collections are cheap; under load it picks as
 * little as 1.1).
 *
 * Why (issue 15): every buffer a tunnel moves is an ArrayBuffer, and V8
 * counts the ArrayBuffer bytes allocated since the last full collection
 * against the old generation's limit. A process moving 200 MB/s allocates
 * two or three buffers per 60 KiB record (a socket read, a sealed record, a
 * cipher's output), nearly all dead within microseconds, yet on a 10 MB heap
 * with its limit at ~34 MB this started a full (mark-compact) collection
 * every ~60 ms: 120–160 in 8 s of GETs, run by V8's background threads that
 * no --cpu-prof shows, a third of the agent's CPU (perf). With the factor at
 * 4 the same run does 1–5 (`--trace-gc`), and P10's CPU per GB at RTT 0
 * fell from 13–14 s to 6.4–8.4 s (README "Performance").
 *
 * It costs heap headroom only: a process whose live heap is L MB may hold up
 * to 4·L MB before collecting (the agent: ~10 MB live, so ~40 MB), still
 * capped by --max-old-space-size. Set at run time (V8 reads it at each
 * collection), unless node's command line already chose one.
 */
export const HEAP_GROWING_PERCENT = 300

export function tuneHeapForStreaming (execArgv = process.execArgv): boolean {
  if (execArgv.some(a => /^--heap[-_]growing[-_]percent\b/.test(a))) return false
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`)
  return true
}
