import { createReadStream, statSync } from 'node:fs'
import type http from 'node:http'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import { INSTALLER_NAME, type InstallerFile } from '../protocol/relay-messages.js'
import { RelaygateError } from '../protocol/errors.js'
import { isOneFile } from '../common/embedded.js'
import { installCommand, installScript, baseFromHost } from '../common/install-script.js'
import { sendError } from './http-util.js'
import type { ArtifactStore } from './artifacts.js'
import type { RelayHub } from './hub.js'
import type { Store } from './store.js'

/** The executable for this machine's kind of host: the one a one-file server publishes of itself. */
export const OWN_INSTALLER = `relaygate-${process.platform}-${process.arch}`
/** What new agents and relays are offered first: the usual server and site machine. */
const DEFAULT_INSTALLER = 'relaygate-linux-x64'

/**
 * The one-file executables (issue 16): artifacts named relaygate-<os>-<arch>.
 * Relays get their list and serve them to anyone at /install/<name>; the
 * server serves them too (a new relay reaches the server, not a relay), and
 * makes the one-line install commands shown when an endpoint or a relay is
 * created.
 */
export class Installers {
  private files: InstallerFile[] = []

  constructor (private readonly o: { store: Store, hub: RelayHub, artifacts: ArtifactStore, logger: Logger }) {}

  /** Reads the list from the store and gives it to every relay (on start, and after an artifact changed). */
  async refresh (): Promise<void> {
    const files = (await this.o.store.listArtifacts())
      .filter(a => INSTALLER_NAME.test(a.name))
      .slice(0, 8)
      .map(a => ({ name: a.name, sha256: a.sha256, size: a.size }))
    const same = files.length === this.files.length && files.every((f, i) => f.sha256 === this.files[i].sha256 && f.name === this.files[i].name)
    this.files = files
    if (!same) this.o.hub.setInstallers(files)
  }

  /** A server running as the one-file executable offers itself, unless an executable of that name was uploaded. */
  async publishOwn (limit: number): Promise<void> {
    if (!isOneFile() || await this.o.store.getArtifact(OWN_INSTALLER) !== undefined) return
    const size = statSync(process.execPath).size
    const record = await this.o.artifacts.upload(OWN_INSTALLER, createReadStream(process.execPath), size, Math.max(limit, size))
    this.o.logger.info({ name: OWN_INSTALLER, sha256: record.sha256 }, 'this executable is offered to new agents and relays')
    await this.refresh()
  }

  private pick (): InstallerFile | undefined {
    return this.files.find(f => f.name === DEFAULT_INSTALLER) ?? this.files[0]
  }

  /** The line that installs an agent from its site's relay (`relayWsUrl`, ws:// or wss://), or null without an executable. */
  agentCommand (relayWsUrl: string | undefined, args: string[]): string | null {
    const file = this.pick()
    if (file === undefined || relayWsUrl === undefined) return null
    return installCommand(relayWsUrl.replace(/^ws/, 'http'), file.name, file.sha256, 'agent', args)
  }

  /** The line that installs a relay from the server, or null without an executable. */
  relayCommand (serverUrl: string, args: string[]): string | null {
    const file = this.pick()
    return file === undefined ? null : installCommand(serverUrl, file.name, file.sha256, 'relay', args)
  }

  /** One line per kind of machine there is an executable for (linux-x64, linux-arm64, …): an agent's from its relay, a relay's from the server. */
  commandsByKind (role: 'agent' | 'relay', from: string | undefined, args: string[]): Record<string, string> {
    if (from === undefined) return {}
    const base = from.replace(/^ws/, 'http')
    return Object.fromEntries(this.files.map(f => [f.name.replace(/^relaygate-/, ''), installCommand(base, f.name, f.sha256, role, args)]))
  }

  /** `GET /install/<name>` and `GET /install/relay.sh` for anyone; false for other paths. */
  handle (req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const path = (req.url ?? '/').split('?')[0]
    const m = /^\/install\/([A-Za-z0-9._-]{1,64})$/.exec(path)
    if (m === null || (req.method !== 'GET' && req.method !== 'HEAD')) return false
    if (m[1] === 'relay.sh') {
      const file = this.pick()
      const from = baseFromHost(req.headers.host, (req.socket as { encrypted?: boolean }).encrypted === true)
      if (file === undefined || from === null) {
        sendError(res, new RelaygateError('RG_ERR_NOT_FOUND', 'no executable to install from: upload one as an artifact named relaygate-linux-x64'))
        return true
      }
      res.writeHead(200, { 'content-type': 'text/x-shellscript; charset=utf-8' }).end(installScript(from, file.name, 'relay'))
      return true
    }
    const file = this.files.find(f => f.name === m[1])
    if (file === undefined) {
      sendError(res, new RelaygateError('RG_ERR_NOT_FOUND', `no executable named ${m[1]}`))
      return true
    }
    void this.send(res, file, req.method === 'HEAD').catch(err => {
      this.o.logger.warn({ name: file.name, err: (err as Error).message }, 'serving an executable failed')
      if (!res.headersSent) sendError(res, new RelaygateError('RG_ERR_ARTIFACT_UNKNOWN', 'the executable is not on this server'))
      else res.destroy()
    })
    return true
  }

  private async send (res: http.ServerResponse, file: InstallerFile, head: boolean): Promise<void> {
    if (!await this.o.artifacts.ensure(file.sha256)) throw new Error('blob missing')
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': file.size, etag: `"${file.sha256}"` })
    if (head) {
      res.end()
      return
    }
    await pipeline(createReadStream(this.o.artifacts.pathOf(file.sha256)), res)
  }
}
