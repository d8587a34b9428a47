// Routing: #/endpoints, #/endpoints/:id, #/relays, #/artifacts, #/jobs, #/jobs/:id, #/settings.
import { useState, useEffect } from '/ui/vendor/hooks.mjs'

export function parseRoute () {
  const parts = (location.hash.replace(/^#\/?/, '') || 'endpoints').split('/').map(decodeURIComponent)
  return { page: parts[0], id: parts[1] ?? null }
}

export function useRoute () {
  const [route, setRoute] = useState(parseRoute())
  useEffect(() => {
    const onChange = () => setRoute(parseRoute())
    window.addEventListener('hashchange', onChange)
    return () => window.removeEventListener('hashchange', onChange)
  }, [])
  return route
}

export const go = hash => { location.hash = hash }
