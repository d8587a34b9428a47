import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeResult, round, type BenchResult } from '../lib/report.js'
import { startProc, api, dataDir, type Proc } from '../lib/procs.js'
import { startBenchTarget, timedGet, timedPut } from '../lib/target.js'
import { startDelayProxy } from '../lib/delay-proxy.js'
import { startNodePipe } from '../lib/node-pipe.js'
import { cpuSeconds, freePort, sleep } from '../lib/sample.js'

export interface P10Options { rttsMs: number[], sizeMb: number, rounds: number, small: number }

/** A process and every descendant (sshd forks one per session), from /proc. */
function treeCpuSeconds (roots: number[]): number {
  const parent = new Map<number, number>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {}
  }
  const inTree = (pid: number): boolean => {
    for (let p: number | undefined = pid, depth = 0; p !== undefined && p > 1 && depth < 20; p = parent.get(p), depth++) if (roots.includes(p)) return true
    return false
  }
  let total = 0
  for (const pid of parent.keys()) if (inTree(pid)) { try { total += cpuSeconds(pid) } catch {} }
  return total
}

/** Two sshd (the jump host and the site), keys of their own, and an ssh client forwarding a local port through them to the target. */
async function startOpenSsh (dir: string, targetPort: number, sitePortViaWan: (sitePort: number) => Promise<number>): Promise<{ procs: ChildProcess[], localPort: number }> {
  mkdirSync('/run/sshd', { recursive: true })
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')])
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'client_key')])
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')), { mode: 0o600 })
  const procs: ChildProcess[] = []
  const sshd = async (name: string): Promise<number> => {
    const port = await freePort()
    writeFileSync(join(dir, `${name}.conf`), [
      `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_key')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'UsePAM no', 'StrictModes no', `PidFile ${join(dir, `${name}.pid`)}`,
      'Ciphers aes128-gcm@openssh.com', 'AllowTcpForwarding yes', 'LogLevel ERROR', ''
    ].join('\n'))
    procs.push(spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, `${name}.conf`)], { stdio: 'ignore' }))
    return port
  }
  const jumpPort = await sshd('jump')
  const sitePort = await sshd('site')
  const viaWan = await sitePortViaWan(sitePort)
  const localPort = await freePort()
  const common = [`IdentityFile ${join(dir, 'client_key')}`, 'User root', 'StrictHostKeyChecking no', 'UserKnownHostsFile /dev/null', 'Ciphers aes128-gcm@openssh.com', 'LogLevel ERROR', 'BatchMode yes']
  writeFileSync(join(dir, 'ssh_config'), ['Host jump', '  HostName 127.0.0.1', `  Port ${jumpPort}`, ...common.map(l => `  ${l}`),
    'Host site', '  HostName 127.0.0.1', `  Port ${viaWan}`, '  ProxyJump jump', ...common.map(l => `  ${l}`), ''].join('\n'))
  await sleep(300)
  procs.push(spawn('ssh', ['-F', join(dir, 'ssh_config'), '-N', '-L', `127.0.0.1:${localPort}:127.0.0.1:${targetPort}`, 'site'], { stdio: 'ignore' }))
  for (let tries = 0; ; tries++) {
    const up = await new Promise<boolean>(resolve => {
      const s = net.connect(localPort, '127.0.0.1', () => { s.destroy(); resolve(true) }).on('error', () => resolve(false))
    })
    if (up && (await timedGet(`http://127.0.0.1:${localPort}/small`).catch(() => null)) !== null) break
    if (tries > 100) throw new Error('the ssh forward did not come up (is openssh-server installed? apt-get install openssh-server)')
    await sleep(100)
  }
  return { procs, localPort }
}

/**
 * Requests before the timed ones: our four processes run the small-request path in JavaScript, which V8
 * optimizes only after some hundreds of calls (with 10 warm-up requests the first thousand timed ones
 * were 0.2 ms slower at p50 than the next thousand). The same for both sides.
 */
export function warmUpRequests (n: number): number {
  return Math.max(10, Math.min(500, Math.floor(n / 4)))
}

/** Small GETs one after another on a kept-alive connection, after a warm-up: p50 and p99 in ms. */
async function smallLatency (url: string, n: number, headers: Record<string, string> = {}): Promise<{ p50: number, p99: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const times: number[] = []
  const warmUp = warmUpRequests(n)
  for (let i = 0; i < n + warmUp; i++) {
    const t0 = performance.now()
    await new Promise<void>((resolve, reject) => {
      http.get(url, { agent, headers }, res => { res.resume(); res.on('end', () => resolve()) }).on('error', reject)
    })
    if (i >= warmUp) times.push(performance.now() - t0)
  }
  agent.destroy()
  times.sort((a, b) => a - b)
  return { p50: round(times[Math.floor(n * 0.5)], 3), p99: round(times[Math.floor(n * 0.99)], 3) }
}

/**
 * P10: our tunnel beside OpenSSH in one run, same shape: client -> server ->
 * [WAN] -> relay -> agent -> target for us, ssh -J through two sshd (jump,
 * then [WAN] to the site's) with -L for OpenSSH (aes128-gcm). GET and PUT,
 * one stream and four at once, CPU per GB of every process on the path, a
 * small request's latency on an open tunnel; at each round-trip time, with
 * rounds interleaved.
 */
export async function run (o: P10Options): Promise<BenchResult> {
  const sshVersion = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).stderr.trim()
  const target = await startBenchTarget()
  const targetPort = Number(new URL(target.url).port)
  const home = mkdtempSync(join(tmpdir(), 'rg-bench-ssh-'))
  const procs: Proc[] = []
  let ssh: { procs: ChildProcess[], localPort: number } | null = null
  const server = await startProc('server', ['server', '--data-dir', dataDir('server'), '--host', '127.0.0.1', '--http-port', '0', '--https-port', 'off'])
  procs.push(server)
  const base = server.ready.httpUrl as string
  const token = readFileSync(server.ready.adminTokenFile as string, 'utf8').trim()
  const wan = await startDelayProxy(Number(new URL(base).port), 0)
  let sshWan: Awaited<ReturnType<typeof startDelayProxy>> | null = null
  const pipes: ChildProcess[] = []
  let pipesWan: Awaited<ReturnType<typeof startDelayProxy>> | null = null
  try {
    const created = await api(base, token, 'POST', '/api/relays', { name: 'far-site' })
    const relay = await startProc('relay', ['relay', '--server', `http://127.0.0.1:${wan.port}`, '--token', created.token, '--data-dir', dataDir('relay'), '--host', '127.0.0.1', '--port', '0', '--tls-port', 'off'])
    procs.push(relay)
    const ep = await api(base, token, 'POST', '/api/endpoints', { name: 'p10', tunnelTarget: target.url })
    const agent = await startProc('agent', ['agent', '--join-token', ep.joinToken, '--data-dir', dataDir('agent'), '--relay', relay.ready.wsUrl as string, '--allow-tcp', String(targetPort)])
    procs.push(agent)
    ssh = await startOpenSsh(home, targetPort, async sitePort => { sshWan = await startDelayProxy(sitePort, 0); return sshWan.port })
    const auth = { authorization: `Bearer ${token}` }
    type Side = { url: string, headers: Record<string, string>, pids: number[] }
    const ours: Side = { url: `${base}/api/endpoints/${ep.id as string}/proxy`, headers: auth, pids: procs.map(p => p.child.pid!) }
    // `relaygate forward`: a local port like ssh -L (raw TCP through the same tunnel, no HTTP work at the server).
    const forward = await startProc('forward', ['forward', ep.id as string, String(targetPort), '--listen', '0', '--server', base, '--token-file', server.ready.adminTokenFile as string])
    procs.push(forward)
    const theirs: Side = { url: `http://127.0.0.1:${ssh.localPort}`, headers: {}, pids: ssh.procs.map(p => p.pid!) }
    // The floor for four Node.js processes on the same path: client -> pipe -> pipe -> [delay] -> pipe -> pipe -> target.
    const pipe = async (upstream: number): Promise<number> => { const p = await startNodePipe(upstream); pipes.push(p.child); return p.port }
    pipesWan = await startDelayProxy(await pipe(await pipe(targetPort)), 0)
    const pipesPort = await pipe(await pipe(pipesWan.port))
    await timedGet(`${ours.url}/small`, auth)
    const bytes = o.sizeMb * 1024 * 1024
    /** One transfer kind on one side: MB/s and CPU seconds per GB over the path's processes. */
    const ourNames = ['server', 'relay', 'agent']
    type Measured = { MBps: number, cpuPerGB: number, byProcess: number[] }
    const measure = async (side: Side, kind: 'get' | 'put', streams: number): Promise<Measured> => {
      const each = Math.floor(bytes / streams)
      const c0 = treeCpuSeconds(side.pids)
      const p0 = side.pids.map(pid => cpuSeconds(pid))
      const t0 = performance.now()
      await Promise.all(Array.from({ length: streams }, async () => {
        const r = kind === 'get' ? await timedGet(`${side.url}/bytes/${each}`, side.headers) : await timedPut(`${side.url}/sink`, each, side.headers)
        if (r.bytes !== each) throw new Error(`${kind} moved ${r.bytes} of ${each} bytes`)
      }))
      const seconds = (performance.now() - t0) / 1000
      const gb = each * streams / 1e9
      return { MBps: each * streams / seconds / 1e6, cpuPerGB: (treeCpuSeconds(side.pids) - c0) / gb, byProcess: side.pids.map((pid, i) => (cpuSeconds(pid) - p0[i]) / gb) }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
    const figures: Record<string, unknown> = {}
    const baseline: Record<string, unknown> = {}
    const ratios: Record<string, number> = {}
    const cases: Array<['get' | 'put', number]> = [['get', 1], ['put', 1], ['get', 4]]
    for (const rtt of o.rttsMs) {
      wan.oneWayMs = rtt / 2
      sshWan!.oneWayMs = rtt / 2
      pipesWan.oneWayMs = rtt / 2
      for (const [kind, streams] of cases) {
        const a: Measured[] = []
        const b: Measured[] = []
        for (let i = 0; i < o.rounds; i++) {
          a.push(await measure(ours, kind, streams))
          b.push(await measure(theirs, kind, streams))
        }
        const key = `${kind}${streams > 1 ? `x${streams}` : ''}Rtt${rtt}ms`
        figures[key] = {
          MBps: round(median(a.map(x => x.MBps)), 2),
          cpuSecondsPerGB: round(median(a.map(x => x.cpuPerGB)), 2),
          cpuSecondsPerGBByProcess: Object.fromEntries(ourNames.map((name, i) => [name, round(median(a.map(x => x.byProcess[i])), 2)]))
        }
        baseline[key] = { MBps: round(median(b.map(x => x.MBps)), 2), cpuSecondsPerGB: round(median(b.map(x => x.cpuPerGB)), 2) }
        ratios[key] = round(median(a.map(x => x.MBps)) / median(b.map(x => x.MBps)), 3)
      }
      if (rtt === 0) {
        /** Latency, and the CPU each process spent per request meanwhile (ms): what the latency is made of. */
        type Latency = { p50: number, p99: number, cpuMsPerRequest: Record<string, number> }
        const withCpu = async (pids: Record<string, number>, run: () => Promise<{ p50: number, p99: number }>, tree = false): Promise<Latency> => {
          const cpu = (pid: number): number => tree ? treeCpuSeconds([pid]) : cpuSeconds(pid)
          const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpu(pid)]))
          const latency = await run()
          const perRequest = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, round((cpu(pid) - before[name]) * 1000 / (o.small + warmUpRequests(o.small)), 3)]))
          return { ...latency, cpuMsPerRequest: perRequest }
        }
        /** Medians over the rounds: p50, p99 and each process's CPU per request. */
        const medianOf = (runs: Latency[]): Latency & { roundsP50: number[] } => ({
          p50: median(runs.map(r => r.p50)),
          p99: median(runs.map(r => r.p99)),
          cpuMsPerRequest: Object.fromEntries(Object.keys(runs[0].cpuMsPerRequest).map(name => [name, median(runs.map(r => r.cpuMsPerRequest[name]))])),
          roundsP50: runs.map(r => r.p50)
        })
        const [serverPid, relayPid, agentPid] = ours.pids
        const sshPids = Object.fromEntries(theirs.pids.map((pid, i) => [['sshd jump', 'sshd site', 'ssh -L (and its ProxyJump child)'][i] ?? `ssh-${i}`, pid]))
        const viaForward: Latency[] = []
        const viaProxy: Latency[] = []
        const viaSsh: Latency[] = []
        const viaPipes: Latency[] = []
        const pipePids = Object.fromEntries(pipes.map((p, i) => [`pipe ${pipes.length - i}`, p.pid!]))
        // Interleaved rounds, as for throughput: the machine's moods fall on both sides alike.
        for (let i = 0; i < o.rounds; i++) {
          viaForward.push(await withCpu({ forward: forward.child.pid!, server: serverPid, relay: relayPid, agent: agentPid },
            async () => await smallLatency(`http://127.0.0.1:${forward.ready.port as number}/small`, o.small)))
          viaSsh.push(await withCpu(sshPids, async () => await smallLatency(`${theirs.url}/small`, o.small), true))
          viaProxy.push(await withCpu({ server: serverPid, relay: relayPid, agent: agentPid }, async () => await smallLatency(`${ours.url}/small`, o.small, auth)))
          viaPipes.push(await withCpu(pipePids, async () => await smallLatency(`http://127.0.0.1:${pipesPort}/small`, o.small)))
        }
        figures.smallGetMs = medianOf(viaForward)
        figures.smallGetProxyMs = medianOf(viaProxy)
        baseline.smallGetMs = medianOf(viaSsh)
        baseline.smallGetFourNodePipesMs = medianOf(viaPipes)
      }
    }
    const get0 = ratios.getRtt0ms ?? 0
    const put0 = ratios.putRtt0ms ?? 0
    const wanRatios = Object.entries(ratios).filter(([k]) => !k.endsWith('Rtt0ms')).map(([, v]) => v)
    const cpuOurs = (figures.getRtt0ms as { cpuSecondsPerGB: number } | undefined)?.cpuSecondsPerGB ?? Infinity
    const cpuTheirs = (baseline.getRtt0ms as { cpuSecondsPerGB: number } | undefined)?.cpuSecondsPerGB ?? 0
    const result: BenchResult = {
      scenario: 'p10-vs-openssh',
      parameters: {
        rttsMs: o.rttsMs,
        sizeMb: o.sizeMb,
        rounds: o.rounds,
        smallRequests: o.small,
        smallWarmUpRequests: warmUpRequests(o.small),
        ours: 'client -> server (its HTTP proxy, server/http-splice.ts) -> [delay proxy] -> relay -> agent -> target; end-to-end AES-128-GCM',
        smallGet: 'medians of interleaved rounds of kept-alive small GETs (roundsP50: each round). smallGetMs: through `relaygate forward` (a local port, like ssh -L: client -> forward -> server -> [delay] -> relay -> agent -> target, raw TCP); smallGetProxyMs: the same through the server\'s HTTP proxy (the server parses, authorizes and re-issues each request)',
        fourNodePipes: 'baseline.smallGetFourNodePipesMs: the same small GETs through four Node.js processes that only pipe sockets (bench/lib/node-pipe.ts: no framing, no cipher, Nagle off) in the same shape, client -> pipe -> pipe -> [delay] -> pipe -> pipe -> target: the floor for any path of four Node.js processes',
        openssh: `ssh -J (jump sshd) -L to the site sshd behind the same kind of delay proxy, aes128-gcm@openssh.com; ${sshVersion}`,
        cpu: 'user+system seconds of every process on the path (ours: server, relay, agent; OpenSSH: the ssh client and its ProxyJump child, both sshd and their session children) per GB moved; not the client or target'
      },
      figures,
      baseline,
      ratios,
      targets: {
        loopback: { target: '>= 1.0x OpenSSH on GET and PUT at RTT 0', met: get0 >= 1 && put0 >= 1 },
        wan: { target: '>= 1.5x OpenSSH at every RTT above 0', met: wanRatios.length > 0 && wanRatios.every(r => r >= 1.5) },
        cpu: { target: 'CPU per GB <= OpenSSH (GET, RTT 0)', met: cpuOurs <= cpuTheirs },
        latency: { target: 'small GET p50 <= OpenSSH', met: ((figures.smallGetMs as { p50: number } | undefined)?.p50 ?? Infinity) <= ((baseline.smallGetMs as { p50: number } | undefined)?.p50 ?? 0) }
      },
      notes: [
        'Medians of interleaved rounds (ours, then OpenSSH). Four streams move the same total as one. The delay proxies are in this bench process for both contenders.',
        'Small GETs use node:http with a kept-alive agent in this process, which also serves the target: about 0.2 ms of every p50 on either side is this process (0.24 ms straight to the target, 0.06 ms with a bare socket client).'
      ]
    }
    writeResult(result)
    return result
  } finally {
    for (const p of [...(ssh?.procs ?? []), ...pipes]) p.kill('SIGKILL')
    await (pipesWan as Awaited<ReturnType<typeof startDelayProxy>> | null)?.close()
    for (const p of procs.reverse()) await p.stop()
    await wan.close()
    await (sshWan as Awaited<ReturnType<typeof startDelayProxy>> | null)?.close()
    await target.close()
    rmSync(home, { recursive: true, force: true })
  }
}
