import type uWS from 'uWebSockets.js'
import type { Logger } from 'pino'
import type { ArtifactCache } from '../cache/index.js'
import type { InstallerFile } from '../protocol/relay-messages.js'
import { installScript, baseFromHost } from '../common/install-script.js'
import { serveArtifact } from './downloads.js'
import type { FailureLimiter } from '../common/failure-limiter.js'

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
  /** Executable downloads per peer address (anyone may ask, so nobody may ask without end). */
  limiter: FailureLimiter
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
  const peer = Buffer.from(res.getRemoteAddressAsText()).toString()
  if (!options.limiter.allows(peer)) {
    const wait = options.limiter.retryAfter(peer)
    res.cork(() => res.writeStatus('429 Too Many Requests').writeHeader('retry-after', String(wait)).writeHeader('content-type', 'application/json')
      .end(JSON.stringify({ error: { code: 'RG_ERR_RATE_LIMIT', message: `too many downloads of the executable from ${peer}; try again in ${wait} s` } })))
    return
  }
  options.limiter.fail(peer)
  serveArtifact(res, req, { cache: options.cache, authorize: () => true, logger: options.logger, sha256: installer.sha256 })
}

function notFound (res: uWS.HttpResponse, message: string): void {
  res.cork(() => res.writeStatus('404 Not Found').writeHeader('content-type', 'application/json')
    .end(JSON.stringify({ error: { code: 'RG_ERR_NOT_FOUND', message } })))
}
