import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { startSite, startAgent } from '../helpers/cluster.js'

t.test('a proxied request opens the tunnel and reaches the agent-side target', async t => {
  const target = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ path: req.url, method: req.method, auth: req.headers.authorization ?? null }))
  })
  await new Promise<void>(resolve => target.listen(0, '127.0.0.1', resolve))
  t.teardown(() => target.close())
  const port = (target.address() as AddressInfo).port
  const { api } = await startSite(t)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'web', tunnelTarget: `http://127.0.0.1:${port}` })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  const started = Date.now()
  const res = await api.request('GET', `/api/endpoints/${ep.id}/proxy/hello/world?x=1`)
  const took = Date.now() - started
  t.equal(res.status, 200)
  t.same(res.body, { path: '/hello/world?x=1', method: 'GET', auth: null })
  t.comment(`first request on a closed tunnel: ${took} ms`)
  const view = await api.ok('GET', `/api/endpoints/${ep.id}`)
  t.equal(view.tunnel.state, 'open')
})
