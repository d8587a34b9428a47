import { mkdirSync, existsSync, readFileSync, mkdtempSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import os, { tmpdir } from 'node:os'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { buildServer, type RelaygateServer } from '../server/server.js'
import { buildRelay, type RelaygateRelay } from '../relay/relay.js'
import { RelaygateAgent } from '../agent/agent.js'
import { RelaygateError } from '../protocol/errors.js'
import { writeFileAtomic, writeReadyFile } from '../common/files.js'

export interface DemoOptions {
  agents: number
  dataDir?: string
  httpPort: number
  httpsPort: number
  relayPort: number
  relayTlsPort: number
  readyFile?: string
}

export interface Demo {
  server: RelaygateServer
  relay: RelaygateRelay
  agents: RelaygateAgent[]
  dataDir: string
  curl: string
  close: () => Promise<void>
}

/** A stand-in for a service on the agent's machine: answers JSON about itself. */
async function startDemoService (name: string): Promise<{ url: string, close: () => Promise<void> }> {
  const startedAt = new Date().toISOString()
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({
      service: `${name} web service (behind the firewall, reached through the tunnel)`,
      path: req.url,
      method: req.method,
      hostname: os.hostname(),
      startedAt,
      now: new Date().toISOString()
    }, null, 2))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  }
}

async function withFallback<T> (build: (port: number) => Promise<T>, port: number, what: string, logger: Logger): Promise<T> {
  try {
    return await build(port)
  } catch (err) {
    if (port === 0 || !(err instanceof RelaygateError) || err.code !== 'RG_ERR_PORT_IN_USE') throw err
    logger.warn({ port }, `${what} port ${port} is taken; using a free port instead`)
    return await build(0)
  }
}

async function api (baseUrl: string, token: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(baseUrl + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const parsed = await res.json() as any
  if (!res.ok) throw new RelaygateError('RG_ERR_INTERNAL', `${method} ${path}: ${JSON.stringify(parsed)}`)
  return parsed
}

/**
 * A server, a relay and N agents in one process, over real sockets on
 * loopback, with the embedded store. State is kept in the data dir, so a
 * second run with the same --data-dir reuses the same endpoints.
 */
export async function startDemo (options: DemoOptions, logger: Logger): Promise<Demo> {
  // A data dir of its own (none given) goes when the demo stops; a given one keeps its state for the next run.
  const ownDir = options.dataDir === undefined
  const dataDir = resolve(options.dataDir ?? mkdtempSync(join(tmpdir(), 'relaygate-demo-')))
  const demoDir = join(dataDir, 'demo')
  mkdirSync(demoDir, { recursive: true })
  const host = '127.0.0.1'
  const server = await withFallback(port => buildServer({
    dataDir: join(dataDir, 'server'), host, httpPort: port, httpsPort: options.httpsPort === -1 || port !== 0 ? options.httpsPort : 0
  }, logger.child({ process: 'server' })), options.httpPort, 'server', logger)
  const token = readFileSync(server.adminTokenFile, 'utf8').trim()
  const cleanup: Array<() => Promise<void>> = [() => server.close()]
  try {
    const relayTokenFile = join(demoDir, 'relay-token')
    let relayToken: string
    if (existsSync(relayTokenFile)) {
      relayToken = readFileSync(relayTokenFile, 'utf8').trim()
    } else {
      relayToken = (await api(server.httpUrl, token, 'POST', '/api/relays', { name: 'demo-relay' })).token
      writeFileAtomic(relayTokenFile, relayToken + '\n', 0o600)
    }
    const relay = await withFallback(port => buildRelay({
      server: server.httpUrl, token: relayToken, dataDir: join(dataDir, 'relay'), host, port, tlsPort: port === 0 ? 0 : options.relayTlsPort, name: 'demo-relay'
    }, logger.child({ process: 'relay' })), options.relayPort, 'relay', logger)
    cleanup.unshift(() => relay.close())
    await relay.whenLinked()

    const agents: RelaygateAgent[] = []
    for (let i = 1; i <= options.agents; i++) {
      const tokenFile = join(demoDir, `agent-${i}.join-token`)
      let joinToken: string
      if (existsSync(tokenFile)) {
        joinToken = readFileSync(tokenFile, 'utf8').trim()
      } else {
        joinToken = (await api(server.httpUrl, token, 'POST', '/api/endpoints', { name: `demo-agent-${i}` })).joinToken
        writeFileAtomic(tokenFile, joinToken + '\n', 0o600)
      }
      // Each demo agent has a small web service behind it, so "Connect" in the dashboard shows something.
      const site = await startDemoService(`demo-agent-${i}`)
      cleanup.unshift(site.close)
      // Agents dial the relay this demo started, even if its ports changed since the token was made.
      const agent = new RelaygateAgent({
        joinToken,
        dataDir: join(dataDir, `agent-${i}`),
        relays: [relay.wssUrl ?? relay.wsUrl!],
        pins: relay.fingerprint === null ? [] : [relay.fingerprint],
        tunnelTarget: site.url,
        // The README's job example runs a command: the demo's agents (on this machine, in its data dir) allow it.
        allowExec: true
      }, logger.child({ process: `agent-${i}` }))
      agents.push(agent.start())
      cleanup.unshift(() => agent.close())
    }
    await Promise.all(agents.map(a => a.whenOnline(30_000)))
    const curl = `curl -s -H "Authorization: Bearer $(cat ${server.adminTokenFile})" ${server.httpUrl}/api/endpoints`
    writeReadyFile(options.readyFile, {
      httpUrl: server.httpUrl, httpsUrl: server.httpsUrl, adminTokenFile: server.adminTokenFile, dataDir,
      wsUrl: relay.wsUrl, wssUrl: relay.wssUrl, endpoints: agents.map(a => a.endpointId), curl
    })
    let closing: Promise<void> | null = null
    return {
      server,
      relay,
      agents,
      dataDir,
      curl,
      close: () => {
        closing ??= (async () => {
          // Tunnels end first, as a stop and not as agents lost (which the server would offer again and log).
          for (const agent of agents) server.tunnels.closeTunnel(agent.endpointId, 'the demo is stopping')
          for (const c of cleanup) await c().catch(() => {})
          if (ownDir) rmSync(dataDir, { recursive: true, force: true })
        })()
        return closing
      }
    }
  } catch (err) {
    for (const c of cleanup) await c().catch(() => {})
    throw err
  }
}
