import type uWS from 'uWebSockets.js'
import type { Logger } from 'pino'
import type { ArtifactCache } from '../cache/index.js'
import type { InstallerFile } from '../protocol/relay-messages.js'
import { installScript, baseFromHost } from '../common/install-script.js'
import { serveArtifact } from './downloads.js'

/**
 * `GET /install/<name>` and `GET /install/agent.sh`, for anyone (issue 16):
 * a new machine at the site has no credentials yet. Only the executables
 * the server listed are served this way (from the cache, filled through the
 * link like any artifact); every other artifact still needs a download token.
 */
export function serveInstall (res: uWS.HttpResponse, req: uWS.HttpRequest, options: {
  installers: () => Map<string, InstallerFile>
  cache: ArtifactCache
  secure: boolean
  logger: Logger
}): void {
  const file = req.getParameter(0) ?? ''
  if (file === 'agent.sh') {
    const own = `relaygate-${process.platform}-${process.arch}`
    const name = options.installers().has(own) ? own : [...options.installers().keys()][0]
    const from = baseFromHost(req.getHeader('host'), options.secure)
    if (name === undefined || from === null) return notFound(res, 'this relay has no executable to install from (upload one to the server as an artifact named relaygate-linux-x64)')
    const body = installScript(from, name, 'agent')
    res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', 'text/x-shellscript; charset=utf-8').end(body))
    return
  }
  const installer = options.installers().get(file)
  if (installer === undefined) return notFound(res, `no executable named ${file} here`)
  serveArtifact(res, req, { cache: options.cache, authorize: () => true, logger: options.logger, sha256: installer.sha256 })
}

function notFound (res: uWS.HttpResponse, message: string): void {
  res.cork(() => res.writeStatus('404 Not Found').writeHeader('content-type', 'application/json')
    .end(JSON.stringify({ error: { code: 'RG_ERR_NOT_FOUND', message } })))
}
