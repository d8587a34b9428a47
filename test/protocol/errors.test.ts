import t from 'tap'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import {
  ErrorCode,
  FATAL_CLOSE_CODES,
  NEXT_PEER_CLOSE_CODES,
  RelaygateError,
  codeForClose,
  isErrorCode,
  toRelaygateError,
  type ErrorCodeName
} from '../../protocol/index.js'

const names = Object.keys(ErrorCode) as ErrorCodeName[]
const docPath = fileURLToPath(new URL('../../docs/errors.md', import.meta.url))

interface DocRow { code: string, close: number, status: number, text: string }

async function docRows (): Promise<DocRow[]> {
  const text = await readFile(docPath, 'utf8')
  const rows: DocRow[] = []
  for (const line of text.split('\n')) {
    const m = /^\|\s*`(RG_ERR_[A-Z0-9_]+)`\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|(.*)\|\s*$/.exec(line)
    if (m !== null) rows.push({ code: m[1], close: Number(m[2]), status: Number(m[3]), text: m[4].trim() })
  }
  return rows
}

t.test('every code is documented in docs/errors.md, in order, with its close code and status', async t => {
  const rows = await docRows()
  t.same(rows.map(r => r.code), names, 'one row per code, in the order of protocol/errors.ts')
  for (const row of rows) {
    if (!isErrorCode(row.code)) {
      t.fail(`${row.code} is documented but does not exist`)
      continue
    }
    t.equal(row.close, ErrorCode[row.code].close, `${row.code}: close code`)
    t.equal(row.status, ErrorCode[row.code].status, `${row.code}: HTTP status`)
    t.ok(row.text.length >= 20, `${row.code}: has an explanation`)
  }
})

t.test('close codes are unique and in the application range (or 0 for HTTP-only codes)', async t => {
  const seen = new Map<number, string>()
  for (const name of names) {
    const { close, status, message } = ErrorCode[name]
    t.ok(close === 0 || (close >= 4000 && close <= 4999), `${name}: close ${close} is 0 or in 4000-4999`)
    t.ok(Number.isInteger(status) && status >= 400 && status <= 599, `${name}: status ${status} is an error status`)
    t.ok(message.length > 0, `${name}: has a default message`)
    if (close !== 0) {
      t.notOk(seen.has(close), `${name}: close ${close} not shared (with ${seen.get(close) ?? 'none'})`)
      seen.set(close, name)
    }
  }
  t.ok(seen.size > 0)
})

t.test('codeForClose maps every close code back to its error code', async t => {
  for (const name of names) {
    const { close } = ErrorCode[name]
    if (close === 0) continue
    t.equal(codeForClose(close), name, `${close} -> ${name}`)
    t.equal(codeForClose(new RelaygateError(name).closeCode), name, `${name} -> close -> ${name}`)
  }
  for (const other of [0, 1000, 1001, 1006, 1011, 3999, 4999, 5000, -1]) {
    t.equal(codeForClose(other), undefined, `${other} is not a relaygate close code`)
  }
})

t.test('FATAL_CLOSE_CODES are relaygate close codes', async t => {
  t.ok(FATAL_CLOSE_CODES.size > 0)
  for (const close of FATAL_CLOSE_CODES) t.not(codeForClose(close), undefined, `${close} is a relaygate close code`)
  t.ok(FATAL_CLOSE_CODES.has(ErrorCode.RG_ERR_AUTH.close), 'auth failure is fatal')
  t.notOk(FATAL_CLOSE_CODES.has(ErrorCode.RG_ERR_LIVENESS.close), 'a lost link is not fatal')
  t.notOk(FATAL_CLOSE_CODES.has(ErrorCode.RG_ERR_DRAIN_TIMEOUT.close), 'a slow reader may come back')
})

t.test('"try the next relay" codes are their own set, apart from the fatal ones', async t => {
  t.ok(NEXT_PEER_CLOSE_CODES.has(ErrorCode.RG_ERR_GOING_AWAY.close), 'a relay shutting down: try the next one')
  t.ok(NEXT_PEER_CLOSE_CODES.has(ErrorCode.RG_ERR_PIN_MISMATCH.close), 'a relay that is not pinned: try the next one')
  for (const close of NEXT_PEER_CLOSE_CODES) t.notOk(FATAL_CLOSE_CODES.has(close), `${close} is not also fatal`)
})

t.test('RelaygateError carries code, close code and status', async t => {
  for (const name of names) {
    const err = new RelaygateError(name)
    t.ok(err instanceof Error)
    t.equal(err.name, 'RelaygateError')
    t.equal(err.code, name)
    t.equal(err.closeCode, ErrorCode[name].close)
    t.equal(err.status, ErrorCode[name].status)
    t.equal(err.message, ErrorCode[name].message, `${name}: default message`)
  }
  const cause = new Error('underlying')
  const err = new RelaygateError('RG_ERR_AUTH', 'custom', { cause })
  t.equal(err.message, 'custom')
  t.equal(err.cause, cause)
})

t.test('isErrorCode', async t => {
  for (const name of names) t.ok(isErrorCode(name), name)
  for (const value of ['RG_ERR_NOPE', '', 'toString', 'constructor', '__proto__', 4000, null, undefined, {}]) {
    t.notOk(isErrorCode(value), `${String(value)} is not a code`)
  }
})

t.test('toRelaygateError keeps coded errors and wraps the rest', async t => {
  const coded = new RelaygateError('RG_ERR_FLOW_CONTROL', 'too much')
  t.equal(toRelaygateError(coded), coded, 'same instance')
  t.equal(toRelaygateError(coded, 'RG_ERR_PROTOCOL'), coded, 'fallback does not override a code')
  t.equal(toRelaygateError(coded).code, 'RG_ERR_FLOW_CONTROL')

  const plain = new Error('boom')
  const wrapped = toRelaygateError(plain)
  t.equal(wrapped.code, 'RG_ERR_INTERNAL', 'default fallback')
  t.equal(wrapped.closeCode, ErrorCode.RG_ERR_INTERNAL.close)
  t.equal(wrapped.cause, plain, 'keeps the cause')
  t.equal(toRelaygateError(plain, 'RG_ERR_PROTOCOL').code, 'RG_ERR_PROTOCOL', 'given fallback')

  const fromString = toRelaygateError('just text', 'RG_ERR_BAD_REQUEST')
  t.equal(fromString.code, 'RG_ERR_BAD_REQUEST')
  t.equal(fromString.cause, 'just text')
  t.equal(toRelaygateError(undefined).code, 'RG_ERR_INTERNAL')
  t.equal(toRelaygateError(null).code, 'RG_ERR_INTERNAL')
})
