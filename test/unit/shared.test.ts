import t from 'tap'
import { Backoff } from '../../common/backoff.js'
import { FailureLimiter } from '../../common/failure-limiter.js'
import { encodeJoinToken, decodeJoinToken, normalizeFingerprint } from '../../protocol/token.js'
import { computeProof, verifyProof, deriveAuthKey, newSecret, hashToken, tokenMatches, redact } from '../../protocol/auth.js'

t.test('failure limiter: a burst of failures, then a steady rate; successes cost nothing; bounded keys', async t => {
  let now = 0
  const l = new FailureLimiter({ burst: 3, perSecond: 0.5, maxKeys: 2, now: () => now })
  for (let i = 0; i < 3; i++) {
    t.ok(l.allows('a'), `failure ${i + 1} of the burst`)
    l.fail('a')
  }
  t.notOk(l.allows('a'), 'the burst is spent')
  t.equal(l.retryAfter('a'), 2, 'one more in 2 s')
  t.ok(l.allows('b'), 'another key is not affected')
  now = 2000
  t.ok(l.allows('a'), 'refilled')
  t.equal(l.retryAfter('a'), 0)
  l.fail('b')
  l.fail('c')
  t.equal(l.size, 2, 'at most maxKeys remembered')
  t.ok(l.allows('a'), 'the least recently failed key was forgotten')
})

t.test('backoff: exponential, jittered, capped, and it ends', async t => {
  let now = 0
  let rnd = 0
  const b = new Backoff({ baseMs: 100, maxMs: 1000, giveUpAfterMs: 5000, random: () => rnd, now: () => now })
  const lows: number[] = []
  for (let i = 0; i < 6; i++) lows.push(b.next()!)
  t.same(lows, [50, 100, 200, 400, 500, 500], 'random 0 gives half the ceiling; the ceiling doubles up to maxMs')
  b.reset()
  rnd = 0.999999
  t.equal(b.next(), 100, 'random ~1 gives the full ceiling')
  now = 5000
  t.equal(b.next(), undefined, 'gives up once giveUpAfterMs passed since the streak began')
  b.reset()
  t.ok(b.next() !== undefined, 'a success starts a new streak')
  const never = new Backoff({ baseMs: 10, maxMs: 20, now: () => now })
  now = 1e12
  t.ok(never.next() !== undefined, 'giveUpAfterMs 0 never gives up')
})

t.test('join tokens round-trip and reject garbage with a code', async t => {
  const token = {
    serverUrl: 'https://hub.example:8443',
    relays: [{ url: 'wss://relay.example:20081', fingerprints: ['ab'.repeat(32)] }, { url: 'ws://relay.example:20080', fingerprints: [] }],
    endpointId: 'eabc',
    secret: newSecret()
  }
  t.same(decodeJoinToken(encodeJoinToken(token)), token)
  t.same(decodeJoinToken('  ' + encodeJoinToken(token) + '\n'), token, 'whitespace around a pasted token is fine')
  const bad = ['', 'rg2.abc', 'rg1.!!!', 'rg1.' + Buffer.from('[]').toString('base64url'), 'rg1.' + Buffer.from('{"s":"x","e":"e","k":"short","r":[]}').toString('base64url'),
    'rg1.' + Buffer.from(JSON.stringify({ s: 'x', e: 'e', k: newSecret(), r: [{ nope: 1 }] })).toString('base64url')]
  for (const text of bad) {
    t.throws(() => decodeJoinToken(text), { code: 'RG_ERR_BAD_JOIN_TOKEN', name: 'RelaygateError' }, JSON.stringify(text.slice(0, 20)))
  }
  t.equal(normalizeFingerprint('AB:CD:EF'), 'abcdef')
})

t.test('agent proofs bind nonce, endpoint, edge id and relay', async t => {
  const key = deriveAuthKey(newSecret())
  const input = { nonce: 'n1', endpointId: 'e1', edgeId: 'x1', relayId: 'r1' }
  const proof = computeProof(key, input)
  t.ok(verifyProof(key, input, proof))
  for (const field of ['nonce', 'endpointId', 'edgeId', 'relayId'] as const) {
    t.notOk(verifyProof(key, { ...input, [field]: 'other' }, proof), `a different ${field} fails`)
  }
  t.notOk(verifyProof(deriveAuthKey(newSecret()), input, proof), 'another secret fails')
  t.notOk(verifyProof(key, input, 42), 'a non-string proof fails')
  t.notOk(verifyProof(key, input, proof.slice(1)), 'a truncated proof fails')
})

t.test('stored tokens are hashed and compared in constant time; logs see only a prefix', async t => {
  const token = 'rga_' + newSecret()
  const hash = hashToken(token)
  t.not(hash, token)
  t.ok(tokenMatches(token, hash))
  t.notOk(tokenMatches(token + 'x', hash))
  t.notOk(redact(token).includes(token.slice(4, 20)))
  t.equal(redact('short'), '***')
})
