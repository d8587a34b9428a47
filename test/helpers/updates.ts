import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Versions } from '../../common/self-update.js'
import type { AgentConfig } from '../../agent/config.js'
import { UnitAgent as BaseUnitAgent, linkedVersion } from '../../bench/lib/unit-agent.js'
import { buildRelay, type RelaygateRelay } from '../../relay/relay.js'
import type { RelayConfig } from '../../relay/config.js'
import { sha256 } from './artifacts.js'
import { testLogger, eventually, type Api, type TapLike } from './cluster.js'

/**
 * Builds that stand in for the one-file executable in in-process fleets
 * (issue 16): a shell script that prints its version, which is all the
 * versions dir asks of a new build before switching to it (`--version`).
 * The real executable's update is tested in test/onefile.
 */
export function scriptBuild (dir: string, version: string, says = version): { path: string, bytes: Buffer, sha256: string } {
  const path = join(dir, `relaygate-${version}-${says}`)
  writeFileSync(path, `#!/bin/sh\n# stands in for relaygate ${version}\necho ${says}\n`)
  chmodSync(path, 0o755)
  const bytes = readFileSync(path)
  return { path, bytes, sha256: sha256(bytes) }
}

/** An in-process agent run as its unit would run it (bench/lib/unit-agent.ts), stopped in teardown. */
export class UnitAgent extends BaseUnitAgent {
  constructor (t: TapLike, dataDir: string, installed: { path: string, version: string }, config: (version: string) => Partial<AgentConfig>) {
    super(dataDir, installed, config, testLogger())
    t.teardown(() => this.stop())
  }
}

/** A relay run the way its unit runs it (as UnitAgent). */
export class UnitRelay {
  relay: RelaygateRelay | null = null
  version: string | null = null
  starts = 0
  private stopped = false

  constructor (
    private readonly t: TapLike,
    readonly dataDir: string,
    private readonly installed: { path: string, version: string },
    private readonly config: (version: string) => Partial<RelayConfig>
  ) {
    t.teardown(() => this.stop())
  }

  async start (): Promise<RelaygateRelay> {
    new Versions(this.dataDir, { execPath: this.installed.path, version: this.installed.version, oneFile: true }).guard()
    const { exe, version } = linkedVersion(this.dataDir)
    this.version = version
    this.starts++
    const relay = await buildRelay({
      dataDir: this.dataDir, host: '127.0.0.1', port: 0, tlsPort: 0, ...this.config(version),
      selfUpdate: new Versions(this.dataDir, { execPath: exe, version, oneFile: true }),
      version
    }, testLogger(), {
      onRestart: () => { void relay.close().then(async () => { if (!this.stopped) await this.start() }) }
    })
    this.relay = relay
    return relay
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.relay?.destroy()
  }
}

/** Waits until the rollout is in one of `states`; returns its view. */
export async function waitRollout (api: Api, id: string, states: string[], timeoutMs = 30_000): Promise<any> {
  return await eventually(async () => {
    const view = await api.ok('GET', `/api/updates/${id}`)
    return states.includes(view.state) ? view : null
  }, timeoutMs, 100)
}
