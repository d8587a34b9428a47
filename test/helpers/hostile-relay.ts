import { join } from 'node:path'
import type { Logger } from 'pino'
import { buildRelay, type RelaygateRelay } from '../../relay/relay.js'
import type { RelayTaps } from '../../relay/core.js'
import type { RelayToServer, ServerToRelay } from '../../protocol/messages.js'
import { tempDir, testLogger, type TapLike } from './cluster.js'

/**
 * A relay taken over by an attacker: the real relay, with taps on what it
 * passes (relay/core.ts RelayTaps). Each tamper rule sees every message and
 * may change it, drop it or add more; `inject` makes the relay act on (or
 * send) a message of the attacker's own. It records everything the server
 * sent down, so old orders can be replayed.
 */
export class HostileRelay {
  readonly fromServer: ServerToRelay[] = []
  readonly toServerLog: RelayToServer[] = []
  /** Rewrites server -> relay messages (return [] to drop, several to add). */
  down: (msg: ServerToRelay) => ServerToRelay[] = msg => [msg]
  /** Rewrites relay -> server messages. */
  up: (msg: RelayToServer) => RelayToServer[] = msg => [msg]
  /** Rewrites tunnel stream bytes. */
  bytes: (chunk: Buffer, direction: 'to-agent' | 'to-server') => Buffer = chunk => chunk
  relay!: RelaygateRelay
  private injectFns!: { fromServer: (msg: ServerToRelay) => void, toServer: (msg: RelayToServer) => boolean }

  /** Acts on a message as if the server had sent it (an order to an agent, a kick, ...). */
  injectDown (msg: ServerToRelay): void {
    this.injectFns.fromServer(msg)
  }

  /** Sends a message of its own to the server (a result, a snapshot, ...). */
  injectUp (msg: RelayToServer): boolean {
    return this.injectFns.toServer(msg)
  }

  static async start (t: TapLike, serverUrl: string, token: string, logger: Logger = testLogger()): Promise<HostileRelay> {
    const h = new HostileRelay()
    const taps: RelayTaps = {
      fromServer: msg => { h.fromServer.push(structuredClone(msg)); return h.down(msg) },
      toServer: msg => { h.toServerLog.push(structuredClone(msg)); return h.up(msg) },
      tunnelChunk: (chunk, direction) => h.bytes(chunk, direction),
      attach: inject => { h.injectFns = inject }
    }
    h.relay = await buildRelay({ server: serverUrl, token, dataDir: join(tempDir(t), 'hostile-relay'), host: '127.0.0.1', port: 0, tlsPort: 0 }, logger, { taps })
    t.teardown(() => h.relay.destroy())
    await h.relay.whenLinked()
    return h
  }
}
