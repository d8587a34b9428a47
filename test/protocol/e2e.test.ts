import t from 'tap'
import { randomBytes } from 'node:crypto'
import {
  OrderGate, canonicalJson, deriveE2eKeys, orderMac, reportMac, verifyReportMac, newAgentNonce
} from '../../protocol/e2e.js'

const root = randomBytes(32)
const party = { endpointId: 'eabc', edgeId: 'edge-1' }
const keys = deriveE2eKeys(root, party.edgeId)

t.test('canonical JSON sorts keys at every level, so both ends MAC the same bytes', async t => {
  t.equal(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } }), '{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}')
  t.equal(canonicalJson({ a: undefined, b: 'x' }), '{"b":"x"}', 'undefined fields are left out, as JSON does')
  t.equal(canonicalJson({ t: 'job', run: ['sh'] }), canonicalJson({ run: ['sh'], t: 'job' }))
})

t.test('keys differ per edge id and per direction', async t => {
  const other = deriveE2eKeys(root, 'edge-2')
  t.not(keys.down.toString('hex'), keys.up.toString('hex'))
  t.not(keys.down.toString('hex'), other.down.toString('hex'))
  const report = { t: 'snapshot', reason: 'x', takenAt: 1, snapshot: {} }
  const mac = reportMac(keys, party, report)
  t.ok(verifyReportMac(keys, party, { ...report, mac }))
  t.ok(verifyReportMac(keys, party, { ...report, sid: 7, mac }), 'the sid the relay adds is not part of it')
  t.notOk(verifyReportMac(other, { ...party, edgeId: 'edge-2' }, { ...report, mac }), 'another agent\'s key does not verify it')
  t.notOk(verifyReportMac(keys, party, { ...report, takenAt: 2, mac }), 'a changed field does not verify')
  t.notOk(verifyReportMac(keys, party, { ...report, t: 'job-progress', mac }), 'nor the same fields as another kind')
  t.notOk(verifyReportMac(keys, party, { ...report, mac: 42 }), 'nor a MAC of the wrong type')
})

t.test('the agent\'s gate: MAC under a nonce of this process, each counter once, out of order within a window', async t => {
  const gate = new OrderGate(keys, party)
  const nonce = newAgentNonce()
  gate.addNonce(nonce)
  const order = (n: number, extra: Record<string, unknown> = {}): { n: number, mac: string } => {
    const body = { t: 'job', jobId: 'j1', n, ...extra }
    return { ...body, mac: orderMac(keys, party, nonce, body) }
  }
  t.equal(gate.check(order(1)), 'ok')
  t.equal(gate.check(order(3)), 'ok')
  t.equal(gate.check(order(2)), 'ok', 'a held order delivered late still counts once')
  t.equal(gate.check(order(2)), 'replayed', 'but not twice')
  t.equal(gate.check(order(3)), 'replayed')
  t.equal(gate.check({ ...order(4), jobId: 'j2' } as { n: number, mac: string }), 'forged', 'an altered order does not verify')
  const late = order(5)
  t.equal(gate.check(order(5 + OrderGate.WINDOW + 1)), 'ok')
  t.equal(gate.check(late), 'replayed', 'a counter older than the window is refused')
  const stranger = newAgentNonce()
  const foreign = { t: 'job', n: 1 }
  t.equal(gate.check({ ...foreign, mac: orderMac(keys, party, stranger, foreign) }), 'forged', 'bound to a nonce this agent never made')
  for (let i = 0; i < 4; i++) gate.addNonce(newAgentNonce())
  t.equal(gate.check(order(9000)), 'forged', 'a nonce forgotten after four newer rounds no longer verifies')
})
