import { InvalidArgumentError } from 'commander'
import { startPostgresServer, type Postgres } from './postgres.js'
import { startFleetSite, type FleetSite } from './fleet.js'

export type StoreKind = 'sqlite' | 'postgres'

/**
 * The server's store for a fleet scenario (issue 13): the embedded SQLite
 * file in the data dir, or a PostgreSQL 15 server of the bench's own with the
 * default (durable) settings. The result files record which one.
 */
export interface BenchStore {
  readonly kind: StoreKind
  /** Extra `relaygate server` arguments. */
  readonly serverArgs: string[]
  /** For the result file's parameters. */
  readonly description: string
  /** The result file's variant: the scenario's own variant, with `postgres` added on PostgreSQL. */
  variant: (own?: string) => string | undefined
  destroy: () => void
}

export async function openStore (kind: StoreKind): Promise<BenchStore> {
  const db: Postgres | null = kind === 'postgres' ? await startPostgresServer({ durable: true }) : null
  return {
    kind,
    serverArgs: db === null ? [] : ['--database-url', db.url],
    description: db === null ? 'SQLite file in the data dir' : 'PostgreSQL 15 on loopback, default durability (fsync on), its own cluster',
    variant: own => db === null ? own : own === undefined ? 'postgres' : `${own}-postgres`,
    destroy: () => db?.destroy()
  }
}

/** The `--store` flag: sqlite, postgres, or both (SQLite first, then PostgreSQL, in the same run). */
export function parseStores (value: string): StoreKind[] {
  if (value === 'sqlite' || value === 'postgres') return [value]
  if (value === 'both') return ['sqlite', 'postgres']
  throw new InvalidArgumentError('must be sqlite, postgres or both')
}

/** A fleet site (fleet.ts) whose server keeps its state in `kind`; nothing is left running if it fails to start. */
export async function startFleetSiteOn (kind: StoreKind, options: { relays: number, intervalSeconds: number }): Promise<{ site: FleetSite, store: BenchStore }> {
  const store = await openStore(kind)
  try {
    return { site: await startFleetSite({ ...options, serverArgs: store.serverArgs }), store }
  } catch (err) {
    store.destroy()
    throw err
  }
}
