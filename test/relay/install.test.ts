import t from 'tap'
import { createHash } from 'node:crypto'
import { startSite, eventually } from '../helpers/cluster.js'

// Issue 16: what a relay serves at /install/ to anyone (the one-file install
// itself is in test/onefile), and that anyone cannot ask without end.
t.test('a relay serves the listed executable to anyone, a few times per peer address, then answers 429 with Retry-After', async t => {
  const { api, relay } = await startSite(t)
  const base = relay.wsUrl!.replace(/^ws/, 'http')
  t.equal((await fetch(`${base}/install/relaygate-linux-x64`)).status, 404, 'nothing before the server has one')
  const bytes = Buffer.from('#!/bin/sh\necho pretend executable\n')
  const up = await api.request('PUT', '/api/artifacts/relaygate-linux-x64', bytes, { 'content-type': 'application/octet-stream' })
  t.equal(up.status, 201)
  const first = await eventually(async () => {
    const res = await fetch(`${base}/install/relaygate-linux-x64`)
    return res.status === 200 ? Buffer.from(await res.arrayBuffer()) : null
  }, 10_000, 50)
  t.equal(createHash('sha256').update(first!).digest('hex'), up.body.sha256, 'the bytes the server has, without a token')
  for (let i = 2; i <= 5; i++) t.equal((await fetch(`${base}/install/relaygate-linux-x64`)).status, 200, `download ${i} of the burst`)
  const refused = await fetch(`${base}/install/relaygate-linux-x64`)
  t.equal(refused.status, 429)
  t.ok(Number(refused.headers.get('retry-after')) > 0, 'with Retry-After')
  t.equal(((await refused.json()) as { error: { code: string } }).error.code, 'RG_ERR_RATE_LIMIT')
  t.equal((await fetch(`${base}/install/agent.sh`)).status, 200, 'the script is not counted')
})
