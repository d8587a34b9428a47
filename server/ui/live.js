// Live updates: GET /api/events read with fetch() (EventSource cannot send headers), and the hooks pages use to refetch.
import { useState, useEffect, useRef, useCallback } from '/ui/vendor/hooks.mjs'
import { api, session } from './api.js'

export const live = {
  status: 'connecting',
  statusListeners: new Set(),
  changeListeners: new Set(),
  setStatus (s) {
    this.status = s
    for (const l of this.statusListeners) l(s)
  },
  emit (topic) {
    for (const l of this.changeListeners) l(topic)
  }
}

export function startEvents () {
  const ctl = new AbortController()
  let delay = 1000
  let connectedBefore = false
  const handleBlock = block => {
    let event = 'message'
    let data = ''
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'event') event = value
      else if (field === 'data') data += value
    }
    if (event === 'ready') {
      delay = 1000
      live.setStatus('live')
      // After a reconnect, anything may have changed while we were away.
      if (connectedBefore) live.emit('*')
      connectedBefore = true
    } else if (event === 'change') {
      try { live.emit(JSON.parse(data).topic) } catch {}
    }
  }
  ;(async () => {
    while (!ctl.signal.aborted) {
      try {
        const res = await fetch('/api/events', {
          headers: { authorization: `Bearer ${session.token}`, accept: 'text/event-stream' },
          cache: 'no-store',
          signal: ctl.signal
        })
        if (res.status === 401) {
          session.signOut('The server refused the token (it may have been revoked). Sign in again.')
          return
        }
        if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}`)
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
        let buffer = ''
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          buffer += value.replace(/\r\n?/g, '\n')
          let end
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            handleBlock(buffer.slice(0, end))
            buffer = buffer.slice(end + 2)
          }
        }
      } catch {
        if (ctl.signal.aborted) return
      }
      live.setStatus('reconnecting')
      await new Promise(resolve => setTimeout(resolve, delay))
      delay = Math.min(delay * 2, 15_000)
    }
  })()
  return () => ctl.abort()
}

/** Calls `fn` when one of `topics` changes (or on '*', after a reconnect). */
export function useLive (topics, fn) {
  const ref = useRef(fn)
  ref.current = fn
  const key = topics.join(',')
  useEffect(() => {
    const wanted = key.split(',')
    const listener = topic => { if (topic === '*' || wanted.includes(topic)) ref.current() }
    live.changeListeners.add(listener)
    return () => live.changeListeners.delete(listener)
  }, [key])
}

export function useLiveStatus () {
  const [status, setStatus] = useState(live.status)
  useEffect(() => {
    live.statusListeners.add(setStatus)
    return () => live.statusListeners.delete(setStatus)
  }, [])
  return status
}

/**
 * Loads data with `load()` now, whenever `deps` change and whenever one of
 * `topics` changes. At most one request runs at a time: changes that arrive
 * meanwhile cause one more load, not one per change.
 */
export function useResource (load, deps, topics = []) {
  const [state, setState] = useState({ data: undefined, meta: undefined, error: null, loading: true })
  const loadRef = useRef(load)
  loadRef.current = load
  const run = useRef({ inflight: false, again: false, mounted: true })
  const refresh = useCallback(async () => {
    const r = run.current
    if (r.inflight) {
      r.again = true
      return
    }
    r.inflight = true
    try {
      do {
        r.again = false
        try {
          const out = await loadRef.current()
          if (r.mounted && !r.again) setState({ data: out?.data, meta: out?.meta, error: null, loading: false })
        } catch (err) {
          if (r.mounted && !r.again) setState(s => ({ ...s, error: err, loading: false }))
        }
      } while (r.again && r.mounted)
    } finally {
      r.inflight = false
    }
  }, [])
  useEffect(() => {
    run.current.mounted = true
    return () => { run.current.mounted = false }
  }, [])
  useEffect(() => { refresh() }, deps)
  useLive(topics, refresh)
  return [state, refresh]
}

/** Re-renders every `ms` (for "12 s ago"). */
export function useNow (ms = 10_000) {
  const [now, setNow] = useState(Date.now())
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms)
    return () => clearInterval(timer)
  }, [ms])
  return now
}

/** Calls `fn` every `ms` while `active`. */
export function useInterval (fn, ms, active) {
  const ref = useRef(fn)
  ref.current = fn
  useEffect(() => {
    if (!active) return
    const timer = setInterval(() => ref.current(), ms)
    return () => clearInterval(timer)
  }, [ms, active])
}
