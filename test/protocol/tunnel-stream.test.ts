import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { Duplex, PassThrough } from 'node:stream'
import { SealedStream, MAX_RECORD, deriveTunnelStreamKey, newStreamNonce } from '../../protocol/tunnel-stream.js'
import { nodeRecordCrypto, recordCrypto, type RecordCrypto } from '../../protocol/record-crypto.js'

/** Two inner streams joined crosswise, recording the records each side writes. */
function innerPair (): { a: Duplex, b: Duplex, recordsFromA: Buffer[] } {
  const aToB = new PassThrough({ highWaterMark: 1 << 20 })
  const bToA = new PassThrough({ highWaterMark: 1 << 20 })
  const recordsFromA: Buffer[] = []
  const a = Duplex.from({ readable: bToA, writable: aToB })
  const write = a.write.bind(a)
  a.write = ((chunk: Buffer, ...rest: unknown[]) => { recordsFromA.push(chunk); return (write as (...args: unknown[]) => boolean)(chunk, ...rest) }) as typeof a.write
  const b = Duplex.from({ readable: aToB, writable: bToA })
  return { a, b, recordsFromA }
}

function sealedPair (senderCrypto?: RecordCrypto, receiverCrypto?: RecordCrypto): { sender: SealedStream, receiver: SealedStream, recordsFromA: Buffer[] } {
  const key = deriveTunnelStreamKey(randomBytes(32).toString('base64url'), 'tunnel-1')
  const nonce = newStreamNonce()
  const { a, b, recordsFromA } = innerPair()
  return { sender: new SealedStream(a, key, nonce, 'agent', senderCrypto), receiver: new SealedStream(b, key, nonce, 'server', receiverCrypto), recordsFromA }
}

async function readAll (s: SealedStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of s) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

t.test('64 KiB writes (socket reads) become full records, not a full one and a 4 KiB one each', async t => {
  const { sender, receiver, recordsFromA } = sealedPair()
  const got = readAll(receiver)
  const sent = createHash('sha256')
  const writes = 40
  for (let i = 0; i < writes; i++) {
    const chunk = randomBytes(64 * 1024)
    sent.update(chunk)
    if (!sender.write(chunk)) await new Promise(resolve => sender.once('drain', resolve))
    // One write per turn of the event loop, as socket reads come.
    if (i % 4 === 3) await new Promise(resolve => setImmediate(resolve))
  }
  sender.end()
  const plain = await got
  t.equal(createHash('sha256').update(plain).digest('hex'), sent.digest('hex'), 'every byte arrived, in order')
  const dataRecords = recordsFromA.length - 1 // the last is the authenticated end
  const full = Math.ceil(writes * 64 * 1024 / MAX_RECORD)
  t.ok(dataRecords <= full + writes / 4, `${dataRecords} data records for ${writes} writes (${full} would be all full; ${2 * writes} without coalescing)`)
})

t.test('an end with the native record cipher and one with node:crypto understand each other, both ways', async t => {
  t.equal(recordCrypto.name, 'native', 'this process has the addon')
  for (const [from, to] of [[recordCrypto, nodeRecordCrypto], [nodeRecordCrypto, recordCrypto]]) {
    const { sender, receiver } = sealedPair(from, to)
    const got = readAll(receiver)
    const sent = randomBytes(1 << 20)
    for (let at = 0; at < sent.length; at += 100_000) sender.write(sent.subarray(at, at + 100_000))
    sender.end()
    t.ok((await got).equals(sent), `${from.name} to ${to.name}: 1 MiB intact`)
  }
})

t.test('a small write is sealed within the same turn of the event loop, without waiting for more', async t => {
  const { sender, receiver } = sealedPair()
  const chunks: string[] = []
  const ended = new Promise(resolve => receiver.once('end', resolve))
  const first = new Promise<void>(resolve => receiver.on('data', (c: Buffer) => { chunks.push(c.toString()); resolve() }))
  sender.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'))
  await first
  t.same(chunks, ['GET / HTTP/1.1\r\n\r\n'], 'delivered alone, nothing else written')
  sender.end('bye')
  await ended
  t.same(chunks, ['GET / HTTP/1.1\r\n\r\n', 'bye'], 'the end flushes what was held, then the authenticated end')
})
