import t from 'tap'
import { randomBytes } from 'node:crypto'
import { loadRecordAddon, nativeRecordCrypto, nodeRecordCrypto, recordCrypto, recordKey, type RecordCrypto } from '../../protocol/record-crypto.js'

const HEADER = 5
const TAG = 16
const loaded = loadRecordAddon()

t.test('npm install built the native record cipher and this process uses it', async t => {
  t.ok('addon' in loaded, `loaded (${'why' in loaded ? loaded.why : 'ok'})`)
  t.equal(recordCrypto.name, 'native')
})

if (!('addon' in loaded)) throw new Error('the remaining tests need the addon')
const native = nativeRecordCrypto(loaded.addon)

function sealWith (c: RecordCrypto, key: ReturnType<typeof recordKey>, seq: number, parts: Buffer[]): Buffer {
  const size = parts.reduce((n, p) => n + p.length, 0)
  const out = Buffer.alloc(HEADER + size + TAG)
  out.writeUInt32BE(size, 0)
  out[4] = 0
  c.seal(key, seq, out, HEADER, parts)
  return out
}

t.test('both ways make the same records and open each other\'s', async t => {
  const key = recordKey(randomBytes(16))
  for (const [seq, sizes] of [[0, []], [1, [1]], [2, [1000]], [7, [3, 61420 - 3]], [2 ** 32 + 5, [100, 0, 200]], [2 ** 53 - 1, [4096]]] as Array<[number, number[]]>) {
    const parts = sizes.map(n => randomBytes(n))
    const plain = Buffer.concat(parts)
    const a = sealWith(nodeRecordCrypto, key, seq, parts)
    const b = sealWith(native, key, seq, parts)
    t.ok(a.equals(b), `seq ${seq}, parts of ${sizes.join('+') || 0} bytes: identical records`)
    t.ok(nodeRecordCrypto.open(key, seq, Buffer.from(b), HEADER, plain.length)?.equals(plain), 'node:crypto opens the native record')
    t.ok(native.open(key, seq, Buffer.from(a), HEADER, plain.length)?.equals(plain), 'the addon opens node:crypto\'s record')
  }
})

t.test('an altered header, ciphertext or tag, another sequence number or key: neither way opens it', async t => {
  const key = recordKey(randomBytes(16))
  const plain = randomBytes(2000)
  const record = sealWith(native, key, 9, [plain])
  const cases: Array<[string, Buffer, number, ReturnType<typeof recordKey>]> = []
  for (const [what, at] of [['header', 4], ['ciphertext', HEADER + 1000], ['tag', record.length - 1]] as Array<[string, number]>) {
    const bad = Buffer.from(record)
    bad[at] ^= 1
    cases.push([`a bit of the ${what}`, bad, 9, key])
  }
  cases.push(['sequence number 10', record, 10, key], ['another key', record, 9, recordKey(randomBytes(16))])
  for (const [what, bad, seq, k] of cases) {
    t.equal(nodeRecordCrypto.open(k, seq, Buffer.from(bad), HEADER, plain.length), null, `node:crypto: ${what}`)
    t.equal(native.open(k, seq, Buffer.from(bad), HEADER, plain.length), null, `addon: ${what}`)
  }
})

t.test('the addon refuses what would write or read past a buffer, with an error, not a crash', async t => {
  const key = recordKey(randomBytes(16))
  t.throws(() => { native.seal(key, 0, Buffer.alloc(HEADER + 10 + TAG - 1), HEADER, [Buffer.alloc(10)]) }, /too short/, 'out one byte short')
  t.throws(() => { native.seal({ ...key, raw: Buffer.alloc(15) }, 0, Buffer.alloc(64), HEADER, [Buffer.alloc(10)]) }, /bad arguments/, 'a 15-byte key')
  t.throws(() => { native.seal(key, -1, Buffer.alloc(64), HEADER, [Buffer.alloc(10)]) }, /bad arguments/, 'a negative sequence number')
  t.throws(() => { native.seal(key, 0, Buffer.alloc(64), HEADER, ['text' as unknown as Buffer]) }, /array of buffers/, 'a part that is not a buffer')
  t.throws(() => native.open(key, 0, Buffer.alloc(HEADER + TAG + 9), HEADER, 10), /too short/, 'a record shorter than its length says')
})

t.test('RELAYGATE_NATIVE_RECORDS=off keeps node:crypto', async t => {
  const before = process.env.RELAYGATE_NATIVE_RECORDS
  process.env.RELAYGATE_NATIVE_RECORDS = 'off'
  t.teardown(() => { if (before === undefined) delete process.env.RELAYGATE_NATIVE_RECORDS; else process.env.RELAYGATE_NATIVE_RECORDS = before })
  t.same(loadRecordAddon(), { why: 'RELAYGATE_NATIVE_RECORDS=off' })
})
