import t from 'tap'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { startSite, startAgent, startServer, eventually } from '../helpers/cluster.js'

type Series = Map<string, number>

/** Parses Prometheus text (prom-client's output): `name{labels} value` lines; comments skipped. */
function parseMetrics (text: string): Series {
  const out: Series = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m === null) throw new Error(`not a metrics line: ${line}`)
    out.set(m[1] + (m[2] ?? ''), Number(m[3]))
  }
  return out
}

function value (series: Series, key: string): number {
  const v = series.get(key)
  if (v === undefined) throw new Error(`no series ${key}`)
  return v
}

async function scrape (url: string, token?: string): Promise<{ status: number, type: string | null, series: Series, text: string }> {
  const res = await fetch(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
  const text = await res.text()
  return { status: res.status, type: res.headers.get('content-type'), series: res.status === 200 ? parseMetrics(text) : new Map(), text }
}

t.test('server and relay /metrics show a live site', async t => {
  const { server, api, relay } = await startSite(t)
  await api.ok('PATCH', '/api/settings', { checkinIntervalSeconds: 1 })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'metered' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const relayHttp = relay.wsUrl!.replace(/^ws/, 'http')

  // Check-ins happen every second: wait for a couple, then a tunnel and a job.
  await eventually(() => relay.stats.checkins >= 2, 10_000)
  const opened = await api.request('POST', `/api/endpoints/${ep.id}/tunnel?wait=10`)
  t.equal(opened.status, 200, 'the tunnel opened')
  const body = randomBytes(64 * 1024)
  const put = await fetch(`${server.httpUrl}/api/artifacts/m.bin`, { method: 'PUT', headers: { authorization: `Bearer ${api.token}` }, body })
  t.equal(put.status, 201)
  const job = await api.ok('POST', '/api/jobs', { artifact: 'm.bin', endpoints: [ep.id] })
  await eventually(async () => (await api.ok('GET', `/api/jobs/${job.id}`)).state === 'succeeded', 15_000)

  // The relay: no token needed, like /healthz.
  const r = await scrape(`${relayHttp}/metrics`)
  t.equal(r.status, 200)
  t.match(r.type, /^text\/plain/)
  t.equal(value(r.series, 'relaygate_relay_agents_connected'), 1, 'one agent connected')
  t.ok(value(r.series, 'relaygate_relay_checkins_total') >= 2, 'check-ins counted')
  t.equal(value(r.series, 'relaygate_relay_auth_failures_total'), 0)
  t.ok(value(r.series, 'relaygate_relay_pushes_total') >= 1, 'the tunnel flag was pushed')
  t.equal(value(r.series, 'relaygate_relay_server_link_up'), 1)
  t.ok(value(r.series, 'relaygate_relay_server_link_received_bytes_total') > 0)
  t.ok(value(r.series, 'relaygate_relay_server_link_sent_bytes_total') > 0)
  t.equal(value(r.series, 'relaygate_relay_cache_misses_total'), 1, 'one fill')
  t.equal(value(r.series, 'relaygate_relay_cache_fetched_bytes_total'), body.length)
  t.equal(value(r.series, 'relaygate_relay_cache_served_bytes_total'), body.length)
  t.equal(value(r.series, 'relaygate_relay_cache_entries'), 1)
  t.ok(value(r.series, 'relaygate_relay_cache_used_bytes') >= body.length)
  // The server acknowledges a result once it is written (target updates are written together every 100 ms).
  await eventually(async () => value((await scrape(`${relayHttp}/metrics`)).series, 'relaygate_relay_results_queued') === 0, 5000)
  t.pass('the result was acknowledged')
  t.ok(r.series.has('process_cpu_user_seconds_total'), 'process metrics included')
  t.equal(r.text.split('\n').filter(l => l.startsWith('# TYPE process_cpu_user_seconds_total')).length, 1, 'process metrics appear once')
  // Open descriptors are counted off the event loop (replacing prom-client's readdirSync), once.
  t.equal(r.text.split('\n').filter(l => l.startsWith('# TYPE process_open_fds')).length, 1, 'process_open_fds appears once')
  t.ok(value(r.series, 'process_open_fds') > 3 && value(r.series, 'process_open_fds') <= value(r.series, 'process_max_fds'), 'a plausible count of open descriptors')

  // The server: behind the admin token by default.
  const denied = await scrape(`${server.httpUrl}/metrics`)
  t.equal(denied.status, 401)
  t.match(JSON.parse(denied.text), { error: { code: 'RG_ERR_UNAUTHORIZED' } })
  const s = await scrape(`${server.httpUrl}/metrics`, api.token)
  t.equal(s.status, 200)
  t.equal(value(s.series, 'relaygate_server_relays_connected'), 1)
  t.equal(value(s.series, 'relaygate_server_agents_online'), 1)
  t.ok(value(s.series, 'relaygate_server_relay_link_received_bytes_total') > 0, 'relay link bytes in')
  t.ok(value(s.series, 'relaygate_server_relay_link_sent_bytes_total') > 0, 'relay link bytes out')
  t.equal(value(s.series, 'relaygate_server_tunnel_opens_total'), 1)
  t.equal(value(s.series, 'relaygate_server_tunnel_open_latency_seconds_count'), 1)
  t.ok(value(s.series, 'relaygate_server_tunnel_open_latency_seconds_sum') > 0)
  t.equal(value(s.series, 'relaygate_server_tunnel_open_latency_seconds_bucket{le="+Inf"}'), 1)
  t.equal(value(s.series, 'relaygate_server_tunnels_open'), 1)
  t.equal(value(s.series, 'relaygate_server_tunnel_streams_open'), 0)
  t.equal(value(s.series, 'relaygate_server_job_targets{state="succeeded"}'), 1)
  t.equal(value(s.series, 'relaygate_server_job_targets{state="queued"}'), 0)
  t.equal(value(s.series, 'relaygate_server_artifacts_stored'), 1)
  t.equal(value(s.series, 'relaygate_server_artifacts_stored_bytes'), body.length)
  t.equal(value(s.series, 'relaygate_server_artifact_served_bytes_total'), body.length)
  t.ok(s.series.has('nodejs_heap_size_used_bytes'), 'process metrics included')
  t.equal(value(s.series, 'relaygate_server_agent_auth_requests_total'), 1, 'one agent authentication asked for')
  t.notOk([...s.series.keys()].some(k => k.startsWith('relaygate_hub_')), 'every series of the server is named relaygate_server_…')
  const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version as string
  t.equal(value(s.series, `relaygate_build_info{role="server",version="${version}",node="${process.version}"}`), 1, 'the server\'s build')
  t.equal(value(r.series, `relaygate_build_info{role="relay",version="${version}",node="${process.version}"}`), 1, 'the relay\'s build')

  // Counters survive the link dropping; the gauges follow it.
  const before = value(s.series, 'relaygate_server_relay_link_received_bytes_total')
  agent.dropLink()
  await eventually(async () => value((await scrape(`${server.httpUrl}/metrics`, api.token)).series, 'relaygate_server_agents_online') === 0, 10_000)
  const after = await scrape(`${server.httpUrl}/metrics`, api.token)
  t.ok(value(after.series, 'relaygate_server_relay_link_received_bytes_total') >= before, 'monotonic')
  await agent.whenOnline()
})

t.test('metricsPublic serves /metrics without the token; wrong method is refused', async t => {
  const { server } = await startServer(t, undefined, { metricsPublic: true })
  const open = await scrape(`${server.httpUrl}/metrics`)
  t.equal(open.status, 200)
  t.equal(value(open.series, 'relaygate_server_relays_connected'), 0)
  const post = await fetch(`${server.httpUrl}/metrics`, { method: 'POST' })
  t.equal(post.status, 405)
  await post.text()
})
