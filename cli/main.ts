#!/usr/bin/env node
import { Command, CommanderError } from 'commander'
import type { Logger } from 'pino'
import { VERSION } from '../common/version.js'
import { RESTART_EXIT_CODE } from '../common/self-update.js'
import { tuneHeapForStreaming } from '../common/heap.js'
import { RelaygateError, toRelaygateError } from '../protocol/errors.js'
import { connectTcp, forwardTcp, readAdminToken } from './connect.js'
import { writeReadyFile } from '../common/files.js'
import { adminRequest, verifyServerUrl } from './http-client.js'
import { createLogger } from './log.js'
import { configOption, deferMandatoryOptions, applyConfigFile } from './config-file.js'
import { registerAdminCommands } from './admin.js'
import { registerInstallCommands } from './install.js'
import { opt, parsePort, parsePortOrOff, parseListen, parseCount, parseBytes, parseSeconds, collect, collectPorts, envBooleans } from './options.js'

/** Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration, 3 refused by the peer for good. */
const EXIT_USAGE = 2
const EXIT_REFUSED = 3
const USAGE_CODES = new Set(['RG_ERR_CONFIG', 'RG_ERR_BAD_JOIN_TOKEN', 'RG_ERR_PORT_IN_USE', 'RG_ERR_STORE_UNAVAILABLE'])
/** Ends that are not a refusal: no peer could be reached for --give-up-after; a supervisor should try again later. */
const GAVE_UP_CODES = new Set(['RG_ERR_UPSTREAM_UNAVAILABLE', 'RG_ERR_NO_RELAY'])

function fail (err: unknown): never {
  const coded = toRelaygateError(err)
  process.stderr.write(`relaygate: error: ${coded.message} (${coded.code})\n`)
  process.exit(USAGE_CODES.has(coded.code) ? EXIT_USAGE : 1)
}

/** A relay or an agent that stopped on its own: refused for good (3), or gave up waiting (1). */
function stopped (err: RelaygateError): never {
  process.stderr.write(`relaygate: error: ${err.message} (${err.code})\n`)
  process.exit(GAVE_UP_CODES.has(err.code) ? 1 : EXIT_REFUSED)
}

/**
 * Runs until SIGINT/SIGTERM, then closes gracefully; a second signal exits at
 * once. Returns a stop that closes the same way and exits with `code` (a
 * self-update's restart: RESTART_EXIT_CODE, which the service restarts on).
 */
function runUntilSignal (logger: Logger, close: () => Promise<void>, forceAfterMs = 15_000): (code: number, why: string) => void {
  let stopping = false
  const stop = (code: number, why: string): void => {
    if (stopping) process.exit(code === 0 ? 1 : code)
    stopping = true
    logger.info({ why, exitCode: code }, 'shutting down')
    const force = setTimeout(() => process.exit(code === 0 ? 1 : code), forceAfterMs)
    force.unref()
    close().then(() => process.exit(code), err => {
      logger.error({ err }, 'shutdown failed')
      process.exit(code === 0 ? 1 : code)
    })
  }
  process.on('SIGINT', signal => stop(0, signal))
  process.on('SIGTERM', signal => stop(0, signal))
  return stop
}

declare const RELAYGATE_BUNDLE_ROLE: string | undefined
/**
 * A per-role bundle (npm run dist: relaygate-agent.mjs, relaygate-relay.mjs)
 * has only its role's command: the bundler folds this to a constant and drops
 * the others, and with them every module only they import (each role's code
 * is imported when its command runs). Written out at each command so that
 * the bundler can fold it.
 */
const program = new Command('relaygate')
  .description('Relay-centric gateway for agent fleets behind firewalls.\nEvery flag can also be set as an environment variable RELAYGATE_<FLAG> (e.g. RELAYGATE_DATA_DIR).\nserver, relay and agent also read --config FILE (YAML or JSON; keys are long flag names).\nPrecedence: command-line flag > environment variable > config file > default.')
  .version(VERSION, '-v, --version')
  .addOption(opt('--log-level <level>', 'how much to log').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('info'))
  .showSuggestionAfterError(true)
  .exitOverride()
  .configureOutput({
    outputError: (text, write) => write(text.trim().split('\n')[0] + '\n')
  })
  .hook('preSubcommand', (_program, subcommand) => deferMandatoryOptions(subcommand))
  .hook('preAction', (_program, command) => {
    envBooleans(command)
    applyConfigFile(command)
  })

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'server') {
  program.command('server')
    .description('Run the server: admin API, relay links (/relay). Never dials out.')
    .addOption(opt('--data-dir <dir>', 'data directory (SQLite store, admin token, TLS certificate)').default('./data'))
    .addOption(opt('--host <addr>', 'address to listen on').default('0.0.0.0'))
    .addOption(opt('--http-port <port>', 'HTTP port (0 = any free port)').default(8080).argParser(parsePort))
    .addOption(opt('--https-port <port>', 'HTTPS port (0 = any free port, off = no HTTPS)').default(8443).argParser(parsePortOrOff))
    .addOption(opt('--tls-cert <file>', 'PEM certificate for HTTPS (default: self-signed, kept in the data dir)'))
    .addOption(opt('--tls-key <file>', 'PEM private key for --tls-cert'))
    .addOption(opt('--public-url <url>', 'URL agents and relays use to reach this server (goes into join tokens)'))
    .addOption(opt('--ready-file <file>', 'write {httpUrl, httpsUrl, adminTokenFile} here once ready'))
    .addOption(opt('--metrics-public', 'serve GET /metrics without the admin token (default: it needs the bearer token)'))
    .addOption(opt('--database-url <url>', 'keep the state in PostgreSQL: postgres://user@host:5432/db (default: SQLite in the data dir)'))
    .addOption(opt('--database-password-file <file>', 'read the database password from this file (else the URL\'s, PGPASSWORD or ~/.pgpass)'))
    .addOption(opt('--database-retry <seconds>', 'keep trying to reach the database at start this long, then exit 2').default(30).argParser(parseSeconds))
    .addOption(opt('--cluster-secret-file <file>', 'run as one replica of several on one PostgreSQL; the file holds the secret they share (32+ characters; or RELAYGATE_CLUSTER_SECRET)'))
    .addOption(opt('--peer-url <url>', 'https URL sibling replicas use to reach this one (default: the HTTPS listener\'s address)'))
    .addOption(opt('--artifact-copies <n>', 'store each uploaded artifact on this many replicas before answering (default: 2 when there are two or more)').argParser(parseCount))
    .addOption(configOption())
    .action(async (o: Record<string, any>) => {
      const logger = createLogger(program.opts().logLevel)
      try {
        tuneHeapForStreaming()
        const { buildServer } = await import('../server/server.js')
        const server = await buildServer({
          clusterSecretFile: o.clusterSecretFile, clusterSecret: process.env.RELAYGATE_CLUSTER_SECRET, peerUrl: o.peerUrl, artifactCopies: o.artifactCopies,
          databaseUrl: o.databaseUrl, databasePasswordFile: o.databasePasswordFile, databaseRetryMs: Math.round(o.databaseRetry * 1000),
          dataDir: o.dataDir, host: o.host, httpPort: o.httpPort, httpsPort: o.httpsPort, tlsCert: o.tlsCert, tlsKey: o.tlsKey,
          publicUrl: o.publicUrl, readyFile: o.readyFile, adminToken: process.env.RELAYGATE_ADMIN_TOKEN, metricsPublic: o.metricsPublic === true
        }, logger)
        runUntilSignal(logger, () => server.close())
      } catch (err) { fail(err) }
    })
}

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'relay') {
  program.command('relay')
    .description('Run a relay: agents dial it (ws on --port, wss on --tls-port); it links once to the server.')
    .addOption(opt('--server <url>', 'server URL, e.g. http://server:8080; repeat it for several replicas (one link at a time, the next on failure)').argParser(collect).makeOptionMandatory())
    .addOption(opt('--token <token>', 'relay token from POST /api/relays').makeOptionMandatory())
    .addOption(opt('--data-dir <dir>', 'data directory (TLS certificate, cache)').default('./relay-data'))
    .addOption(opt('--host <addr>', 'address to listen on').default('0.0.0.0'))
    .addOption(opt('--port <port>', 'plain WebSocket port for agents').default(20080).argParser(parsePort))
    .addOption(opt('--tls-port <port>', 'TLS WebSocket port for agents (off = none)').default(20081).argParser(parsePortOrOff))
    .addOption(opt('--tls-cert <file>', 'PEM certificate (default: self-signed, kept in the data dir)'))
    .addOption(opt('--tls-key <file>', 'PEM private key for --tls-cert'))
    .addOption(opt('--public-url <url>', 'ws:// or wss:// URL agents should dial (repeatable)').argParser(collect))
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s certificate (https server with a self-signed certificate; repeatable)').argParser(collect))
    .addOption(opt('--name <name>', 'name reported to the server'))
    .addOption(opt('--proxy <url>', 'an HTTP CONNECT proxy to the server, http://user:pass@proxy:3128 (default: HTTPS_PROXY/HTTP_PROXY, with NO_PROXY)'))
    .addOption(opt('--cache-max-bytes <n>', 'artifact cache budget, e.g. 10GiB').default(10 * 1024 ** 3).argParser(parseBytes))
    .addOption(opt('--give-up-after <seconds>', 'stop after this long without reaching the server (0 = never)').default(86_400).argParser(parseSeconds))
    .addOption(opt('--listen-retry <seconds>', 'keep trying an address that cannot be listened on yet (not up at boot) this long; a port another process holds fails at once').default(60).argParser(parseSeconds))
    .addOption(opt('--no-push-flags', 'do not push raised flags to agents: they learn at their next check-in (polling only)'))
    .addOption(opt('--ready-file <file>', 'write {wsUrl, wssUrl, fingerprint} here once linked to the server'))
    .addOption(configOption())
    .action(async (o: Record<string, any>) => {
      const logger = createLogger(program.opts().logLevel)
      try {
        tuneHeapForStreaming()
        const { buildRelay } = await import('../relay/relay.js')
        let stop: ((code: number, why: string) => void) | null = null
        const relay = await buildRelay({
          server: o.server, token: o.token, dataDir: o.dataDir, host: o.host, port: o.port, tlsPort: o.tlsPort, tlsCert: o.tlsCert, tlsKey: o.tlsKey,
          publicUrls: o.publicUrl ?? [], serverFingerprint: o.serverFingerprint, name: o.name, proxy: o.proxy, cacheMaxBytes: o.cacheMaxBytes,
          giveUpAfterMs: o.giveUpAfter * 1000, listenRetryMs: o.listenRetry * 1000, readyFile: o.readyFile, pushFlags: o.pushFlags !== false
        }, logger, {
          onFatal: stopped,
          // A self-update switched versions: stop, for the service to start the new one.
          onRestart: why => stop?.(RESTART_EXIT_CODE, why)
        })
        stop = runUntilSignal(logger, () => relay.close())
      } catch (err) { fail(err) }
    })
}

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'agent') {
  program.command('agent')
    .description('Run an agent: dials a relay from its join token, checks in, serves tunnels and jobs.')
    .addOption(opt('--join-token <token>', 'join token from POST /api/endpoints').makeOptionMandatory())
    .addOption(opt('--data-dir <dir>', 'data directory (edge id, files)').default('./agent-data'))
    .addOption(opt('--edge-id <uuid>', 'edge id to use (default: generated once and kept in the data dir)'))
    .addOption(opt('--relay <url>', 'relay to dial instead of the join token\'s list (repeatable; failover in order)').argParser(collect))
    .addOption(opt('--pin <sha256>', 'extra accepted relay certificate fingerprint (repeatable)').argParser(collect))
    .addOption(opt('--tunnel-target <url>', 'where tunnel streams go: http://host:port, tcp://host:port or unix:/path'))
    .addOption(opt('--allow-tcp <ports>', 'agent-side TCP ports (on 127.0.0.1) that `relaygate connect` may reach, e.g. 22,5432').argParser(collectPorts))
    .addOption(opt('--allow-exec', 'allow jobs to run commands'))
    .addOption(opt('--files-dir <dir>', 'where jobs place artifacts (default <data-dir>/files)'))
    .addOption(opt('--proxy <url>', 'an HTTP CONNECT proxy to the relays, http://user:pass@proxy:3128 (default: HTTPS_PROXY/HTTP_PROXY, with NO_PROXY)'))
    .addOption(opt('--tag <tag>', 'a tag this agent adds to its endpoint (repeatable), e.g. site-a').argParser(collect))
    .addOption(opt('--give-up-after <seconds>', 'stop after this long without reaching any relay (0 = never)').default(86_400).argParser(parseSeconds))
    .addOption(opt('--ready-file <file>', 'write {edgeId, endpointId, relay} here once accepted'))
    .addOption(opt('--stop-timeout <seconds>', 'on SIGTERM, wait this long for running jobs to finish and be reported').default(30).argParser(parseSeconds))
    .addOption(configOption())
    .action(async (o: Record<string, any>) => {
      const logger = createLogger(program.opts().logLevel)
      try {
        tuneHeapForStreaming()
        const { RelaygateAgent } = await import('../agent/agent.js')
        const agent = new RelaygateAgent({
          joinToken: o.joinToken, dataDir: o.dataDir, edgeId: o.edgeId, relays: o.relay ?? [], pins: o.pin ?? [],
          tunnelTarget: o.tunnelTarget, allowTcp: o.allowTcp ?? [], allowExec: o.allowExec === true, filesDir: o.filesDir, proxy: o.proxy, tags: o.tag, giveUpAfterMs: o.giveUpAfter * 1000, readyFile: o.readyFile,
          drainTimeoutMs: o.stopTimeout * 1000
        }, logger)
        agent.on('fatal', stopped)
        agent.start()
        const stop = runUntilSignal(logger, () => agent.close(), o.stopTimeout * 1000 + 15_000)
        // A self-update switched versions: stop (running jobs finish first), for the service to start the new one.
        agent.on('restart', ({ reason }: { reason: string }) => stop(RESTART_EXIT_CODE, reason))
      } catch (err) {
        // The decoder does not know where the token came from: name the flag.
        const coded = toRelaygateError(err)
        fail(coded.code === 'RG_ERR_BAD_JOIN_TOKEN' ? new RelaygateError(coded.code, `--join-token: ${coded.message}`) : coded)
      }
    })
}

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'connect') {
  program.command('connect')
    .description('Raw TCP to an agent-side port through the endpoint\'s tunnel, on stdin/stdout.\nUsable as an ssh ProxyCommand: ssh -o ProxyCommand="relaygate connect e… 22 --server http://hub:8080" user@host')
    .argument('<endpointId>', 'the endpoint (its agent must allow the port with --allow-tcp)')
    .argument('<port>', 'agent-side TCP port on 127.0.0.1', parsePort)
    .addOption(opt('--server <url>', 'server URL, e.g. http://hub:8080').makeOptionMandatory())
    .addOption(opt('--token-file <file>', 'API token file: operator or admin (default ./data/admin-token; RELAYGATE_ADMIN_TOKEN wins)'))
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s self-signed HTTPS certificate'))
    .action(async (endpointId: string, port: number, o: Record<string, any>) => {
      try {
        if (!/^https?:\/\//.test(o.server)) throw new RelaygateError('RG_ERR_CONFIG', `--server must be http(s)://, got ${String(o.server)}`)
        await connectTcp({ server: o.server, endpointId, port, token: readAdminToken(o.tokenFile), serverFingerprint: o.serverFingerprint, input: process.stdin, output: process.stdout })
        process.exit(0)
      } catch (err) { fail(err) }
    })
}

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'connect') {
  program.command('forward')
    .description('Like ssh -L: listen on a local port; each connection goes as raw TCP to an agent-side port through the endpoint\'s tunnel.\ne.g. relaygate forward e… 5432 --listen 15432 --server http://hub:8080, then psql -h 127.0.0.1 -p 15432')
    .argument('<endpointId>', 'the endpoint (its agent must allow the port with --allow-tcp)')
    .argument('<port>', 'agent-side TCP port on 127.0.0.1', parsePort)
    .addOption(opt('--listen <[host:]port>', 'local address to listen on (default host 127.0.0.1; port 0 picks a free one)').argParser(parseListen).makeOptionMandatory())
    .addOption(opt('--server <url>', 'server URL, e.g. http://hub:8080').makeOptionMandatory())
    .addOption(opt('--token-file <file>', 'API token file: operator or admin (default ./data/admin-token; RELAYGATE_ADMIN_TOKEN wins)'))
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s self-signed HTTPS certificate'))
    .addOption(opt('--ready-file <file>', 'write {host, port} here once listening'))
    .action(async (endpointId: string, port: number, o: Record<string, any>) => {
      const logger = createLogger(program.opts().logLevel)
      try {
        const target = { server: verifyServerUrl(o.server), token: readAdminToken(o.tokenFile), serverFingerprint: o.serverFingerprint }
        // A wrong endpoint, token or pin fails now, not at the first connection.
        const me = (await adminRequest(target, 'GET', '/api/whoami')).body as { name: string, role: string }
        if (me.role === 'viewer') throw new RelaygateError('RG_ERR_FORBIDDEN', `token "${me.name}" has role viewer; tunnels need operator or admin`)
        await adminRequest(target, 'GET', `/api/endpoints/${encodeURIComponent(endpointId)}`)
        tuneHeapForStreaming()
        const listen = o.listen as { host: string, port: number }
        const forward = await forwardTcp({ ...target, endpointId, port, host: listen.host, listenPort: listen.port, logger })
        const { address, port: bound } = forward.address
        logger.info({ listen: `${address}:${bound}`, endpointId, port }, 'forwarding local connections through the tunnel')
        writeReadyFile(o.readyFile, { host: address, port: bound })
        runUntilSignal(logger, () => forward.close())
      } catch (err) { fail(err) }
    })
}

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'demo') {
  program.command('demo')
    .description('Start a server, a relay and a few agents on this machine, with the embedded store.')
    .addOption(opt('--agents <n>', 'how many agents').default(3).argParser(parseCount))
    .addOption(opt('--data-dir <dir>', 'data directory (default: a new temporary directory)'))
    .addOption(opt('--http-port <port>', 'server HTTP port (falls back to a free port when taken)').default(8080).argParser(parsePort))
    .addOption(opt('--https-port <port>', 'server HTTPS port (off = none)').default(8443).argParser(parsePortOrOff))
    .addOption(opt('--relay-port <port>', 'relay ws port').default(20080).argParser(parsePort))
    .addOption(opt('--relay-tls-port <port>', 'relay wss port').default(20081).argParser(parsePort))
    .addOption(opt('--ready-file <file>', 'write {httpUrl, adminTokenFile, endpoints, curl} here once all agents are online'))
    .action(async (o: Record<string, any>) => {
      const level = program.getOptionValueSource('logLevel') === 'default' ? 'warn' : program.opts().logLevel
      const logger = createLogger(level, 2)
      try {
        tuneHeapForStreaming()
        const { startDemo } = await import('./demo.js')
        const demo = await startDemo({
          agents: o.agents, dataDir: o.dataDir, httpPort: o.httpPort, httpsPort: o.httpsPort, relayPort: o.relayPort, relayTlsPort: o.relayTlsPort, readyFile: o.readyFile
        }, logger)
        process.stdout.write([
          '',
          `relaygate demo: a server, a relay and ${demo.agents.length} agents are running.`,
          '',
          `  dashboard     ${demo.server.httpUrl}/  (sign in with the admin token below)`,
          `  server        ${demo.server.httpUrl}  (HTTPS ${demo.server.httpsUrl ?? 'off'})`,
          ...(demo.server.fingerprint === null ? [] : [`  server cert   ${demo.server.fingerprint}  (self-signed; HTTPS clients pin it: --server-fingerprint)`]),
          `  admin token   ${demo.server.adminTokenFile}`,
          `  relay         ${demo.relay.wsUrl}  ${demo.relay.wssUrl ?? ''}`,
          `  data dir      ${demo.dataDir}`,
          '',
          'List the endpoints (all online):',
          '',
          `  ${demo.curl}`,
          '',
          'Reach the web service behind the first agent, through its tunnel (opens on the first request):',
          '',
          `  curl -s -H "Authorization: Bearer $(cat ${demo.server.adminTokenFile})" ${demo.server.httpUrl}/api/endpoints/${demo.agents[0]?.endpointId ?? 'ID'}/proxy/hello`,
          '',
          'Or open the dashboard, sign in with the token from the file above, and press "Connect" on an endpoint.',
          '',
          'Press Ctrl-C to stop.',
          ''
        ].join('\n'))
        runUntilSignal(logger, () => demo.close())
      } catch (err) { fail(err) }
    })
}

if (typeof RELAYGATE_BUNDLE_ROLE === 'undefined' || RELAYGATE_BUNDLE_ROLE === 'admin') registerAdminCommands(program, fail)
registerInstallCommands(program, fail)

// No top-level await: the one-file executable runs this as a CommonJS script (issue 16).
program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // Help and version exit 0; usage errors were printed as one line.
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE)
  }
  fail(err)
})
