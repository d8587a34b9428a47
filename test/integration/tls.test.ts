import t from 'tap'
import { startServer, startRelay, startAgent, testLogger, tempDir } from '../helpers/cluster.js'
import { buildRelay } from '../../relay/relay.js'
import type { RelaygateError } from '../../protocol/errors.js'
import { join } from 'node:path'

t.test('a relay links over HTTPS to a server with a self-signed certificate it pins', async t => {
  const { server, api } = await startServer(t)
  t.ok(server.httpsUrl, 'HTTPS is on by default')
  t.match(server.fingerprint, /^[0-9a-f]{64}$/)
  const created = await api.ok('POST', '/api/relays', { name: 'tls-site' })
  const relay = await startRelay(t, server.httpsUrl!, created.token, { serverFingerprint: server.fingerprint! })
  t.equal(relay.linked, true)
  const ep = await api.ok('POST', '/api/endpoints', { name: 'over-tls' })
  const agent = startAgent(t, ep.joinToken)
  await agent.whenOnline()
  t.match(agent.relayUrl, /^wss:/, 'agents prefer the relay\'s TLS port')

  const wrong = await new Promise<RelaygateError>((resolve, reject) => {
    buildRelay({
      server: server.httpsUrl!, token: created.token, serverFingerprint: 'cd'.repeat(32), dataDir: join(tempDir(t), 'r2'), host: '127.0.0.1', port: 0, tlsPort: -1
    }, testLogger(), { onFatal: resolve }).then(r => t.teardown(() => r.destroy()), reject)
  })
  t.equal(wrong.code, 'RG_ERR_PIN_MISMATCH', 'a server presenting another certificate is refused before the token is sent')
})

t.test('a certificate no pin and no CA vouches for is refused with its fingerprint and the flag that would pin it', async t => {
  const { server, api } = await startServer(t)
  const created = await api.ok('POST', '/api/relays', { name: 'tls-site' })
  // A relay given the server's HTTPS URL without --server-fingerprint: it stops, saying what to pin.
  const unpinned = await new Promise<RelaygateError>((resolve, reject) => {
    buildRelay({ server: server.httpsUrl!, token: created.token, dataDir: join(tempDir(t), 'r'), host: '127.0.0.1', port: 0, tlsPort: -1 }, testLogger(), { onFatal: resolve })
      .then(r => t.teardown(() => r.destroy()), reject)
  })
  t.equal(unpinned.code, 'RG_ERR_PIN_MISMATCH')
  t.match(unpinned.message, `--server-fingerprint ${server.fingerprint!}`)
  // An agent told to dial a relay its join token does not name (so without its pin): the fingerprint to pin, and --pin.
  const relay = await startRelay(t, server.httpsUrl!, created.token, { serverFingerprint: server.fingerprint! })
  const ep = await api.ok('POST', '/api/endpoints', { name: 'elsewhere' })
  const other = relay.wssUrl!.replace('127.0.0.1', 'localhost')
  const agent = startAgent(t, ep.joinToken, { relays: [other] })
  const seen = await new Promise<{ relay: string, error: RelaygateError }>(resolve => agent.once('relay-error', resolve))
  t.equal(seen.error.code, 'RG_ERR_PIN_MISMATCH')
  t.match(seen.error.message, `--pin ${relay.fingerprint!}`)
  await agent.destroy()
  // With that pin it connects.
  const pinned = startAgent(t, ep.joinToken, { relays: [other], pins: [relay.fingerprint!] })
  await pinned.whenOnline()
  t.equal(pinned.relayUrl, other)
})
