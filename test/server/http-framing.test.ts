import t from 'tap'
import { BodyReader, MAX_HEAD_BYTES, bodyFraming, parseResponseHead } from '../../server/http-framing.js'

/** Feeds `bytes` in pieces of `step`; the body, and what followed it. */
function readBody (reader: BodyReader, bytes: string, step: number): { body: string, rest: string } {
  let body = ''
  let rest = ''
  for (let at = 0; at < bytes.length; at += step) {
    const out = reader.take(Buffer.from(bytes.slice(at, at + step), 'latin1'))
    body += out.parts.map(p => p.toString('latin1')).join('')
    if (out.rest !== null) rest += out.rest.toString('latin1')
  }
  return { body, rest }
}

t.test('a head arrives in any pieces; its fields keep their order and case', async t => {
  const bytes = 'HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length:  3 \r\n\r\nabc'
  for (let cut = 0; cut < bytes.indexOf('\r\n\r\n') + 3; cut++) t.equal(parseResponseHead(Buffer.from(bytes.slice(0, cut))), null, `not yet at ${cut}`)
  const head = parseResponseHead(Buffer.from(bytes))!
  t.same(head, { status: 200, reason: 'OK', rawHeaders: ['Set-Cookie', 'a=1', 'set-cookie', 'b=2', 'Content-Length', '3'], length: bytes.length - 3 })
  t.same(bodyFraming('GET', head), { kind: 'length', length: 3 })
  t.same(bodyFraming('HEAD', head), { kind: 'none' })
})

t.test('where the body ends: transfer codings, lengths, statuses without a body', async t => {
  const head = (fields: string, status = 200): ReturnType<typeof parseResponseHead> => parseResponseHead(Buffer.from(`HTTP/1.1 ${status} X\r\n${fields}\r\n`))
  t.same(bodyFraming('GET', head('transfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n')!), { kind: 'chunked' }, 'chunked last wins over a length')
  t.same(bodyFraming('GET', head('transfer-encoding: gzip\r\n')!), { kind: 'close' }, 'another coding last: until the close')
  t.same(bodyFraming('GET', head('')!), { kind: 'close' }, 'neither: until the close')
  t.same(bodyFraming('GET', head('content-length: 7, 7\r\n')!), { kind: 'length', length: 7 }, 'a repeated equal length')
  t.same(bodyFraming('GET', head('', 304)!), { kind: 'none' })
  t.same(bodyFraming('GET', head('', 204)!), { kind: 'none' })
  t.throws(() => bodyFraming('GET', head('content-length: 7\r\ncontent-length: 8\r\n')!), { code: 'RG_ERR_BAD_GATEWAY' })
  t.throws(() => bodyFraming('GET', head('content-length: -1\r\n')!), { code: 'RG_ERR_BAD_GATEWAY' })
})

t.test('a chunked body comes out whole however it is cut, and what follows it is set apart', async t => {
  const body = '5;ext="x"\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: yes\r\n\r\n'
  for (const step of [1, 2, 3, 7, body.length]) {
    const reader = new BodyReader({ kind: 'chunked' })
    const out = readBody(reader, body + 'HTTP/1.1 200', step)
    t.same(out, { body: 'hello world', rest: 'HTTP/1.1 200' }, `pieces of ${step}`)
    t.ok(reader.done)
  }
  const length = new BodyReader({ kind: 'length', length: 4 })
  t.same(readBody(length, 'abcdef', 3), { body: 'abcd', rest: 'ef' })
  const close = new BodyReader({ kind: 'close' })
  t.same(readBody(close, 'all of it', 4), { body: 'all of it', rest: '' })
  t.equal(close.endOfStream(), true, 'the end of the stream ends it')
  const cut = new BodyReader({ kind: 'length', length: 10 })
  readBody(cut, 'abc', 3)
  t.equal(cut.endOfStream(), false, 'a length not reached: cut short')
})

t.test('what no HTTP server sends is refused with RG_ERR_BAD_GATEWAY', async t => {
  for (const [what, bytes] of [
    ['not a status line', 'SSH-2.0-OpenSSH_9.2\r\n\r\n'],
    ['a folded line', 'HTTP/1.1 200 OK\r\nx: 1\r\n more\r\n\r\n'],
    ['a field without a name', 'HTTP/1.1 200 OK\r\n: x\r\n\r\n'],
    ['a control character', 'HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n'],
    ['too many fields', 'HTTP/1.1 200 OK\r\n' + 'x: 1\r\n'.repeat(201) + '\r\n']
  ]) t.throws(() => parseResponseHead(Buffer.from(bytes, 'latin1')), { code: 'RG_ERR_BAD_GATEWAY' }, what)
  t.throws(() => parseResponseHead(Buffer.alloc(MAX_HEAD_BYTES + 1, 'a')), { code: 'RG_ERR_BAD_GATEWAY' }, 'no blank line within 64 KiB')
  for (const [what, bytes] of [['a size that is not hexadecimal', 'zz\r\n'], ['data longer than its size', '2\r\nabc\r\n']]) {
    t.throws(() => readBody(new BodyReader({ kind: 'chunked' }), bytes, 1), { code: 'RG_ERR_BAD_GATEWAY' }, what)
  }
})
