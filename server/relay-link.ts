import type { Logger } from 'pino'
import type PQueue from 'p-queue'
import type { EndpointRecord } from './store.js'
import { RelaygateError, toRelaygateError, type Mux } from '../protocol/index.js'
import { controlFrame, type ServerToRelay } from '../protocol/messages.js'

/** An agent's session on a relay link: challenged, then online once its proof verified. */
export interface Session {
  sid: number
  endpointId: string
  edgeId: string
  nonce: string | null
  online: boolean
  /** The endpoint as read when the agent began to authenticate (null: deleted), and whether its edge id was admitted then. */
  endpoint: EndpointRecord | null
  admitted: boolean
}

/** Messages a link may have waiting for the store; a relay that sends more is cut off (it reconnects). */
const MAX_QUEUED_PER_LINK = 100_000

/** The server's side of one relay's link. */
export class RelayLink {
  readonly relayId: string
  readonly mux: Mux
  readonly sessions = new Map<number, Session>()
  readonly log: Logger
  connectedAt = Date.now()
  /** Several replicas: the fence under which this replica holds the relay's link (cluster-store.ts). */
  fence: number | null = null
  /** The relay's version, from its hello: what it understands (see atLeastVersion). */
  version = '0.0.0'
  /**
   * Work waiting for the store, chained per agent session (and 0 for the
   * relay's own messages): one agent's messages are handled in order,
   * different agents' concurrently.
   */
  private readonly chains = new Map<number, { tail: Promise<void>, waiting: number }>()
  private queued = 0

  /** Shared by every link: how many messages are handled at once (store round trips in flight). */
  private readonly limiter: PQueue

  constructor (relayId: string, mux: Mux, log: Logger, limiter: PQueue) {
    this.limiter = limiter
    this.relayId = relayId
    this.mux = mux
    this.log = log
  }

  send (message: ServerToRelay): void {
    this.mux.send(controlFrame(message))
  }

  /** Runs `work` after the earlier work of chain `key`; a failure is logged (and answered by `onError`). */
  enqueue (key: number, work: () => Promise<void>, onError?: (err: RelaygateError) => void): void {
    if (this.queued >= MAX_QUEUED_PER_LINK) {
      void this.mux.destroy(new RelaygateError('RG_ERR_QUEUE_FULL', `more than ${MAX_QUEUED_PER_LINK} messages waiting for the store`))
      return
    }
    let chain = this.chains.get(key)
    if (chain === undefined) {
      chain = { tail: Promise.resolve(), waiting: 0 }
      this.chains.set(key, chain)
    }
    const c = chain
    c.waiting++
    this.queued++
    c.tail = c.tail.then(async () => { await this.limiter.add(work) }).catch((err: Error) => {
      const coded = toRelaygateError(err)
      this.log.error({ err: err.message, code: coded.code }, 'relay message not handled')
      onError?.(coded)
    }).finally(() => {
      this.queued--
      if (--c.waiting === 0) this.chains.delete(key)
    })
  }
}
