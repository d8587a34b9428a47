import { selectIn, rows, type SqlDriver } from './sql-store.js'

/**
 * The tables of several server replicas on one PostgreSQL (migration 3 in
 * pg-store.ts): who the replicas are (a lease each), which replica holds
 * each relay's link (with a fencing number), which agents are online
 * through which relay link, the tunnels open at each replica, and the admin
 * tokens valid on all of them.
 *
 * A row written under a link's fence counts only while that link is the
 * relay's current one: a replica that lost the link (its relay moved on)
 * cannot make its late writes stand over the new owner's.
 */
export interface ReplicaRecord {
  id: string
  /** Where siblings reach its peer link (https://host:port). */
  peerUrl: string
  /** sha256 of its HTTPS certificate: siblings pin it. */
  fingerprint: string
  version: string
  startedAt: number
  /** Dead for the others after this (ms since the epoch). */
  leaseUntil: number
}

export interface PresenceChange {
  endpointId: string
  edgeId: string
  relayId: string
  fence: number
  online: boolean
  at: number
}

export interface LivePresence {
  endpointId: string
  edgeId: string
  relayId: string
  replicaId: string
}

export interface RelayLocation {
  relayId: string
  replicaId: string
  linkedAt: number
  agents: number
  /** The figures the relay last reported to its replica (cache, queued results), as JSON. */
  figures: Record<string, unknown> | null
}

interface ReplicaRow { id: string, peer_url: string, fingerprint: string, version: string, started_at: number, lease_until: number }

const replicaFromRow = (r: ReplicaRow): ReplicaRecord => ({
  id: r.id, peerUrl: r.peer_url, fingerprint: r.fingerprint, version: r.version, startedAt: r.started_at, leaseUntil: r.lease_until
})

/** A presence row stands while its link is the relay's current one at a replica whose lease holds. */
const LIVE = `JOIN relay_links l ON l.relay_id = p.relay_id AND l.fence = p.fence
  JOIN replicas r ON r.id = l.replica_id AND r.lease_until > ?`

/** Replicas gone this long are forgotten. */
const FORGET_MS = 3600 * 1000

export class ClusterStore {
  private readonly db: SqlDriver

  constructor (db: SqlDriver) {
    this.db = db
  }

  async registerReplica (r: ReplicaRecord): Promise<void> {
    await this.db.run(`INSERT INTO replicas (id, peer_url, fingerprint, version, started_at, lease_until) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (id) DO UPDATE SET peer_url = excluded.peer_url, fingerprint = excluded.fingerprint, version = excluded.version, lease_until = excluded.lease_until`,
    [r.id, r.peerUrl, r.fingerprint, r.version, r.startedAt, r.leaseUntil])
    await this.db.run('DELETE FROM replicas WHERE lease_until < ?', [r.startedAt - FORGET_MS])
  }

  /** Extends a replica's lease; false when its row is gone (it must register again). */
  async renewReplica (id: string, leaseUntil: number): Promise<boolean> {
    return await this.db.run('UPDATE replicas SET lease_until = ? WHERE id = ?', [leaseUntil, id]) > 0
  }

  /** A replica leaving: its lease ends now, and its links and tunnels are no longer its. */
  async retireReplica (id: string): Promise<void> {
    await this.db.transaction(async tx => {
      await tx.run('UPDATE replicas SET lease_until = 0 WHERE id = ?', [id])
      await tx.run('DELETE FROM cluster_tunnels WHERE replica_id = ?', [id])
    })
  }

  async liveReplicas (now: number): Promise<ReplicaRecord[]> {
    return (await this.db.all<ReplicaRow>('SELECT * FROM replicas WHERE lease_until > ? ORDER BY started_at, id', [now])).map(replicaFromRow)
  }

  async getReplica (id: string, now: number): Promise<ReplicaRecord | undefined> {
    const row = await this.db.get<ReplicaRow>('SELECT * FROM replicas WHERE id = ? AND lease_until > ?', [id, now])
    return row === undefined ? undefined : replicaFromRow(row)
  }

  /**
   * Records that `replicaId` now holds the relay's link: a new fence,
   * greater than every earlier one. Presence written under older fences is
   * dropped in the same transaction (the relay's agents announce themselves
   * again on the new link).
   */
  async claimRelay (relayId: string, replicaId: string, at: number): Promise<number | null> {
    return await this.db.transaction(async tx => {
      // Two claims at once: the greater fence holds whichever commits last (the other gets null: its link lost).
      const row = await tx.get<{ fence: number }>(`INSERT INTO relay_links (relay_id, replica_id, fence, linked_at) VALUES (?, ?, nextval('relay_fence'), ?)
        ON CONFLICT (relay_id) DO UPDATE SET replica_id = excluded.replica_id, fence = excluded.fence, linked_at = excluded.linked_at, figures = NULL
        WHERE relay_links.fence < excluded.fence
        RETURNING fence`, [relayId, replicaId, at])
      if (row === undefined) return null
      await tx.run('DELETE FROM presence WHERE relay_id = ? AND fence < ?', [relayId, row.fence])
      return row.fence
    })
  }

  /** The link of that fence closed: forgotten, unless the relay has linked elsewhere since (a newer fence stays). */
  async releaseRelay (relayId: string, fence: number): Promise<void> {
    await this.db.transaction(async tx => {
      await tx.run('DELETE FROM relay_links WHERE relay_id = ? AND fence = ?', [relayId, fence])
      await tx.run('DELETE FROM presence WHERE relay_id = ? AND fence = ?', [relayId, fence])
    })
  }

  /** Where each linked relay is (at a live replica), with its agents online. */
  async relayLocations (now: number): Promise<RelayLocation[]> {
    const rs = await this.db.all<{ relay_id: string, replica_id: string, linked_at: number, agents: number, figures: string | null }>(`SELECT l.relay_id, l.replica_id, l.linked_at, l.figures,
      (SELECT COUNT(*) FROM presence p WHERE p.relay_id = l.relay_id AND p.fence = l.fence) AS agents
      FROM relay_links l JOIN replicas r ON r.id = l.replica_id AND r.lease_until > ?`, [now])
    return rs.map(r => ({ relayId: r.relay_id, replicaId: r.replica_id, linkedAt: r.linked_at, agents: Number(r.agents), figures: r.figures === null ? null : JSON.parse(r.figures) as Record<string, unknown> }))
  }

  /** The figures a relay reported to the replica holding its link (under that link's fence). */
  async setRelayFigures (relayId: string, fence: number, figures: object): Promise<void> {
    await this.db.run('UPDATE relay_links SET figures = ? WHERE relay_id = ? AND fence = ?', [JSON.stringify(figures), relayId, fence])
  }

  /** Agents coming online and going offline, in one transaction; an online row written under a fence that lost its link never counts. */
  async writePresence (changes: PresenceChange[]): Promise<void> {
    const on = changes.filter(c => c.online).sort(byKey)
    const off = changes.filter(c => !c.online).sort(byKey)
    await this.db.transaction(async tx => {
      for (let at = 0; at < on.length; at += 500) {
        const chunk = on.slice(at, at + 500)
        await tx.run(`INSERT INTO presence (endpoint_id, edge_id, relay_id, fence, since)
          SELECT v.endpoint_id, v.edge_id, v.relay_id, v.fence, v.since
          FROM (${rows(chunk.length, 'CAST(? AS TEXT) AS endpoint_id, CAST(? AS TEXT) AS edge_id, CAST(? AS TEXT) AS relay_id, CAST(? AS BIGINT) AS fence, CAST(? AS BIGINT) AS since')}) AS v
          ON CONFLICT (endpoint_id, edge_id, relay_id) DO UPDATE SET fence = excluded.fence, since = excluded.since
          WHERE presence.fence <= excluded.fence`, chunk.flatMap(c => [c.endpointId, c.edgeId, c.relayId, c.fence, c.at]))
      }
      for (let at = 0; at < off.length; at += 500) {
        const chunk = off.slice(at, at + 500)
        await tx.run(`DELETE FROM presence p USING (${rows(chunk.length, 'CAST(? AS TEXT) AS endpoint_id, CAST(? AS TEXT) AS edge_id, CAST(? AS TEXT) AS relay_id, CAST(? AS BIGINT) AS fence')}) AS v
          WHERE p.endpoint_id = v.endpoint_id AND p.edge_id = v.edge_id AND p.relay_id = v.relay_id AND p.fence = v.fence`,
        chunk.flatMap(c => [c.endpointId, c.edgeId, c.relayId, c.fence]))
      }
    })
  }

  /** The agents online for these endpoints, wherever they are linked. */
  async livePresence (endpointIds: string[], now: number): Promise<LivePresence[]> {
    const rs = await selectIn<{ endpoint_id: string, edge_id: string, relay_id: string, replica_id: string }>(this.db,
      `SELECT p.endpoint_id, p.edge_id, p.relay_id, l.replica_id FROM presence p ${LIVE} WHERE p.endpoint_id IN (?) ORDER BY p.since`, endpointIds, [now])
    return rs.map(r => ({ endpointId: r.endpoint_id, edgeId: r.edge_id, relayId: r.relay_id, replicaId: r.replica_id }))
  }

  /** Drops presence rows whose link is gone (a relay that never came back after its replica died). */
  async sweepPresence (): Promise<number> {
    return await this.db.run(`DELETE FROM presence p WHERE NOT EXISTS (
      SELECT 1 FROM relay_links l WHERE l.relay_id = p.relay_id AND l.fence = p.fence)`)
  }

  /** The tunnel of an endpoint as its replica describes it (null: closed). */
  async setTunnel (endpointId: string, replicaId: string, info: object | null, at: number): Promise<void> {
    if (info === null) await this.db.run('DELETE FROM cluster_tunnels WHERE endpoint_id = ? AND replica_id = ?', [endpointId, replicaId])
    else {
      await this.db.run(`INSERT INTO cluster_tunnels (endpoint_id, replica_id, info, updated_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (endpoint_id) DO UPDATE SET replica_id = excluded.replica_id, info = excluded.info, updated_at = excluded.updated_at`,
      [endpointId, replicaId, JSON.stringify(info), at])
    }
  }

  /** The tunnels of these endpoints held by live replicas. */
  async liveTunnels (endpointIds: string[], now: number): Promise<Map<string, { replicaId: string, info: Record<string, unknown> }>> {
    const rs = await selectIn<{ endpoint_id: string, replica_id: string, info: string }>(this.db,
      `SELECT t.endpoint_id, t.replica_id, t.info FROM cluster_tunnels t JOIN replicas r ON r.id = t.replica_id AND r.lease_until > ?
      WHERE t.endpoint_id IN (?)`, endpointIds, [now])
    return new Map(rs.map(r => [r.endpoint_id, { replicaId: r.replica_id, info: JSON.parse(r.info) as Record<string, unknown> }]))
  }
}

function byKey (a: PresenceChange, b: PresenceChange): number {
  const ka = `${a.endpointId}\n${a.edgeId}\n${a.relayId}`
  const kb = `${b.endpointId}\n${b.edgeId}\n${b.relayId}`
  return ka < kb ? -1 : ka > kb ? 1 : 0
}
