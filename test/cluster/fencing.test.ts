import t from 'tap'
import { openPgStore, type PgStore } from '../../server/pg-store.js'
import { databaseFor } from '../helpers/postgres.js'
import { tempDir, testLogger, type TapLike } from '../helpers/cluster.js'

/** The cluster tables on a real PostgreSQL: leases, fences, presence that counts only under the current fence. */
async function store (t: TapLike): Promise<PgStore> {
  const s = await openPgStore({ url: await databaseFor(tempDir(t)), logger: testLogger() }) as PgStore
  t.teardown(() => s.close())
  return s
}

t.test('a replica that lost a relay\'s link cannot make its late writes stand over the new owner', async t => {
  const { cluster } = await store(t)
  const now = Date.now()
  for (const id of ['sA', 'sB']) await cluster.registerReplica({ id, peerUrl: `https://${id}:1`, fingerprint: 'f'.repeat(64), version: 'test', startedAt: now, leaseUntil: now + 60_000 })
  const fenceA = (await cluster.claimRelay('r1', 'sA', now))!
  await cluster.writePresence([{ endpointId: 'e1', edgeId: 'x', relayId: 'r1', fence: fenceA, online: true, at: now }])
  t.same((await cluster.livePresence(['e1'], now)).map(p => p.replicaId), ['sA'], 'online through A')

  // The relay moves to B (A's link is gone, A does not know yet).
  const fenceB = (await cluster.claimRelay('r1', 'sB', now + 1))!
  t.ok(fenceB > fenceA, 'a greater fence')
  t.same(await cluster.livePresence(['e1'], now), [], 'presence under the old fence is gone with the claim')
  // A's late writes: an agent online under its fence, then the release of its link.
  await cluster.writePresence([{ endpointId: 'e2', edgeId: 'y', relayId: 'r1', fence: fenceA, online: true, at: now + 2 }])
  t.same(await cluster.livePresence(['e2'], now), [], 'a late presence write under the old fence does not count')
  await cluster.releaseRelay('r1', fenceA)
  await cluster.writePresence([{ endpointId: 'e3', edgeId: 'z', relayId: 'r1', fence: fenceA, online: true, at: now + 2 }])
  t.same(await cluster.livePresence(['e3'], now), [], 'nor one after the release')
  t.same((await cluster.relayLocations(now)).map(l => [l.relayId, l.replicaId]), [['r1', 'sB']], 'the late release left B\'s link')
  await cluster.writePresence([{ endpointId: 'e1', edgeId: 'x', relayId: 'r1', fence: fenceB, online: true, at: now + 3 }])
  t.same((await cluster.livePresence(['e1'], now)).map(p => p.replicaId), ['sB'], 'online through B')
  t.equal(await cluster.sweepPresence(), 1, 'the stray row is swept')

  // B's lease lapses: its relays and agents no longer count anywhere.
  await cluster.renewReplica('sB', now - 1)
  t.same(await cluster.livePresence(['e1'], now), [], 'a dead replica\'s agents are not online')
  t.same((await cluster.relayLocations(now)).length, 0)
  t.same((await cluster.liveReplicas(now)).map(r => r.id), ['sA'])
})

t.test('two replicas claiming one relay at once get distinct fences; the last claim holds', async t => {
  const { cluster } = await store(t)
  const now = Date.now()
  for (const id of ['sA', 'sB']) await cluster.registerReplica({ id, peerUrl: `https://${id}:1`, fingerprint: 'f'.repeat(64), version: 'test', startedAt: now, leaseUntil: now + 60_000 })
  // Claims that lose to a greater fence committed first get null (their link is refused).
  const fences = await Promise.all(Array.from({ length: 20 }, async (_, i) => ({ fence: await cluster.claimRelay('r1', i % 2 === 0 ? 'sA' : 'sB', now), i })))
  const won = fences.filter((f): f is { fence: number, i: number } => f.fence !== null)
  t.equal(new Set(won.map(f => f.fence)).size, won.length, 'no two claims share a fence')
  t.ok(won.length >= 1, 'at least the last claim holds')
  const last = won.reduce((a, b) => a.fence > b.fence ? a : b)
  t.same((await cluster.relayLocations(now)).map(l => l.replicaId), [last.i % 2 === 0 ? 'sA' : 'sB'], 'the greatest fence is the owner')
})
