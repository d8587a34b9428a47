import { execFileSync } from 'node:child_process'
import { realpathSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { Versions } from '../../common/self-update.js'
import { RelaygateAgent } from '../../agent/agent.js'
import type { AgentConfig } from '../../agent/config.js'

/** What `relaygate --version` of the build the link points at says. */
export function linkedVersion (dataDir: string): { exe: string, version: string } {
  const exe = realpathSync(join(dataDir, 'bin', 'relaygate'))
  return { exe, version: execFileSync(exe, ['--version'], { encoding: 'utf8' }).trim() }
}

/**
 * An agent run the way its systemd unit runs it, in this process (issue 16;
 * in-process fleets of tests and benches): before each start the guard
 * (ExecStartPre, by the installed build), then the build the link points at,
 * as that version; when it asks for a restart (a self-update switched), it
 * is closed and started again. The builds are anything that answers
 * `--version` (the bench and tests use small scripts).
 */
export class UnitAgent {
  agent: RelaygateAgent | null = null
  starts = 0
  private stopped = false

  constructor (
    readonly dataDir: string,
    private readonly installed: { path: string, version: string },
    private readonly config: (version: string) => Partial<AgentConfig>,
    private readonly logger: Logger,
    /** Called with each agent this unit starts (events to listen to). */
    private readonly onStart: (agent: RelaygateAgent) => void = () => {}
  ) {}

  start (): RelaygateAgent {
    new Versions(this.dataDir, { execPath: this.installed.path, version: this.installed.version, oneFile: true }).guard()
    const { exe, version } = linkedVersion(this.dataDir)
    this.starts++
    const agent = new RelaygateAgent({
      dataDir: this.dataDir,
      selfUpdate: new Versions(this.dataDir, { execPath: exe, version, oneFile: true }),
      version,
      ...this.config(version)
    } as Partial<AgentConfig>, this.logger)
    agent.once('restart', () => {
      void agent.close().then(() => { if (!this.stopped) this.start() })
    })
    this.onStart(agent)
    this.agent = agent.start()
    return agent
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.agent?.destroy()
  }

  get version (): string | null {
    return this.agent?.version ?? null
  }
}
