import { Command, InvalidArgumentError } from 'commander'
import { parseStores, type StoreKind } from './lib/store.js'

const int = (v: string): number => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive whole number')
  return n
}

interface FleetOptions { agents: number, interval: number, stagger: number, perEndpoint: number }
interface StoreOptions { store: StoreKind[] }

/** A scenario command with the options every fleet scenario shares. */
function fleetCommand (name: string): Command {
  return program.command(name)
    .option('--agents <n>', 'agents', int, 15000)
    .option('--interval <s>', 'check-in interval, seconds', int, 5)
    .option('--stagger <s>', 'spread the (initial) agent starts over this many seconds', int, 20)
    .option('--per-endpoint <n>', 'agents per endpoint (1 = one endpoint each; up to 64 = cluster endpoints)', int, 1)
}

/** The server's store for a fleet scenario; `both` runs the scenario twice in one invocation, SQLite first. */
function withStoreOption (command: Command): Command {
  return command.option('--store <kind>', 'the server\'s store: sqlite (the data dir\'s file), postgres (a PostgreSQL 15 the bench starts) or both (one after the other, each to its own result file)', parseStores, ['sqlite'] as StoreKind[])
}

/** Runs a scenario once per store and prints each result; with two stores, then their figures side by side. */
async function perStore (stores: StoreKind[], run: (store: StoreKind) => Promise<{ figures: Record<string, unknown> }>): Promise<void> {
  const results: Array<{ store: StoreKind, figures: Record<string, unknown> }> = []
  for (const store of stores) {
    const result = await run(store)
    print(result)
    results.push({ store, figures: result.figures })
  }
  if (results.length < 2) return
  const side: Record<string, Record<string, unknown>> = {}
  for (const key of Object.keys(results[0].figures)) {
    if (typeof results[0].figures[key] !== 'number') continue
    side[key] = Object.fromEntries(results.map(r => [r.store, r.figures[key]]))
  }
  print({ sideBySide: side })
}

const program = new Command('bench')
  .description('relaygate benchmarks: each scenario is bounded, loopback only, and writes bench/results/<scenario>-<date>.json')
  .exitOverride()

program.command('micro-codec')
  .description('frame codec encode/decode against a naive reference implementation')
  .option('--frames <n>', 'frames per measurement', int, 1_000_000)
  .action(async (o: { frames: number }) => {
    const { run } = await import('./scenarios/micro-codec.js')
    print(await run(o))
  })

program.command('p3-tunnel-open')
  .description('P3: latency of the first proxied request on a closed tunnel (baseline: polling only, same run)')
  .option('--samples <n>', 'samples with flag push', int, 200)
  .option('--baseline-samples <n>', 'samples of the polling-only baseline', int, 20)
  .option('--interval <s>', 'check-in interval, seconds', int, 5)
  .action(async (o: { samples: number, baselineSamples: number, interval: number }) => {
    const { run } = await import('./scenarios/p3-tunnel-open.js')
    print(await run(o))
  })

program.command('p8-chaos-soak')
  .description('P8: agents behind 3 relays run jobs and proxied requests while faults are injected at random (kills, black holes, a full disk); then everything must settle with 0 anomalies')
  .option('--duration <s>', 'how long faults are injected, seconds', int, 600)
  .option('--agents <n>', 'real agents', int, 200)
  .option('--agents-per-host <n>', 'agents per host process (a SIGKILL takes them all down)', int, 20)
  .option('--job-every <s>', 'a new job (10 targets, a command) every this many seconds', int, 3)
  .option('--settle <s>', 'after the faults stop, wait at most this long for everything to settle', int, 240)
  .action(async (o: { duration: number, agents: number, agentsPerHost: number, jobEvery: number, settle: number }) => {
    const { run } = await import('./scenarios/p8-chaos-soak.js')
    const result = await run({ durationS: o.duration, agents: o.agents, agentsPerHost: o.agentsPerHost, jobEveryS: o.jobEvery, settleS: o.settle })
    print(result)
    if (result.targets?.anomalies?.met !== true) process.exitCode = 1
  })

program.command('p4-tunnel-throughput')
  .description('P4: large GETs through server, relay and agent vs direct to the target (same run)')
  .option('--sizes <mb>', 'comma-separated sizes in MB', '100,1024')
  .option('--repeats <n>', 'runs per size (best kept)', int, 2)
  .action(async (o: { sizes: string, repeats: number }) => {
    const { run } = await import('./scenarios/p4-tunnel-throughput.js')
    print(await run({ sizesMb: o.sizes.split(',').map(Number).filter(n => n > 0), repeats: o.repeats }))
  })

withStoreOption(fleetCommand('p2-relay-scale'))
  .description('P2: N real agents on one relay: relay CPU, RSS per agent, check-in round trip, wire bytes per agent')
  .option('--duration <s>', 'steady-state window, seconds', int, 60)
  .action(async (o: FleetOptions & StoreOptions & { duration: number }) => {
    const { run } = await import('./scenarios/p2-relay-scale.js')
    await perStore(o.store, async store => await run({ ...o, store }))
  })

withStoreOption(fleetCommand('p1-server-idle'))
  .description('P1: server CPU and relay-link bytes for N idle agents through 2 relays (baseline: direct check-ins, same run)')
  .option('--duration <s>', 'steady-state window, seconds', int, 60)
  .action(async (o: FleetOptions & StoreOptions & { duration: number }) => {
    const { run } = await import('./scenarios/p1-server-idle.js')
    await perStore(o.store, async store => await run({ ...o, store }))
  })

program.command('p5-artifact-fanout')
  .description('P5: one artifact to N agents through one relay (time to the last success, server egress per artifact); relay cache hits vs nginx (same run)')
  .option('--agents <n>', 'agents, each its own endpoint and files dir (N x size MB on the /tmp disk until the end)', int, 1000)
  .option('--size-mb <n>', 'artifact size, MB (MiB)', int, 50)
  .option('--clients <n>', 'concurrent keep-alive GETs in the relay-vs-nginx comparison', int, 100)
  .option('--requests <n>', 'GETs in total per side and round in that comparison', int, 300)
  .option('--timeout <s>', 'give up on the fan-out after this many seconds (what was reached is still recorded)', int, 600)
  .action(async (o: { agents: number, sizeMb: number, clients: number, requests: number, timeout: number }) => {
    const { run } = await import('./scenarios/p5-artifact-fanout.js')
    print(await run(o))
  })

program.command('p11-self-update')
  .description('P11: self-update of N agents behind one relay (canaries, then all): time to all updated, server egress per build; baseline: a plain job of the same size to the same agents (same run)')
  .option('--agents <n>', 'agents, each run as its systemd unit would', int, 1000)
  .option('--size-mb <n>', 'size of the new build, MiB (N x size on the /tmp disk until the end)', int, 16)
  .option('--canary <n>', 'canaries, updated before the rest', int, 10)
  .option('--timeout <s>', 'give up after this many seconds', int, 600)
  .action(async (o: { agents: number, sizeMb: number, canary: number, timeout: number }) => {
    const { run } = await import('./scenarios/p11-self-update.js')
    const result = await run(o)
    print(result)
    if (result.targets?.allUpdated?.met !== true) process.exitCode = 1
  })

withStoreOption(fleetCommand('p6-reconnect-storm'))
  .description('P6: restart a relay holding N agents: time until all are online again, server auth rate and CPU during the storm')
  .option('--timeout <s>', 'give up waiting for recovery after this many seconds', int, 120)
  .action(async (o: FleetOptions & StoreOptions & { timeout: number }) => {
    const { run } = await import('./scenarios/p6-reconnect-storm.js')
    await perStore(o.store, async store => await run({ ...o, store }))
  })

fleetCommand('p7-replica-failover')
  .description('P7: replicas behind haproxy on one PostgreSQL, N agents through 3 relays: server CPU per replica, then SIGKILL one replica: seconds until all relays re-linked and all agents online, longest API gap, job results lost (needs haproxy: apt-get install haproxy)')
  .option('--replicas <n>', 'server replicas', int, 3)
  .option('--steady <s>', 'steady-state window for the CPU figures, seconds', int, 30)
  .option('--job-targets <n>', 'agents the job running during the kill goes to', int, 300)
  .option('--timeout <s>', 'give up waiting for recovery after this many seconds', int, 120)
  .action(async (o: FleetOptions & { replicas: number, steady: number, jobTargets: number, timeout: number }) => {
    const { run } = await import('./scenarios/p7-replica-failover.js')
    print(await run(o))
  })

program.command('p9-tunnel-wan')
  .description('P9: GET through the tunnel with the relay across a WAN (a delay proxy between relay and server) vs plain TCP through the same delay, at several round-trip times')
  .option('--rtts <ms,...>', 'round-trip times, ms', '0,50,150')
  .option('--size-mb <n>', 'GET size, MiB', int, 100)
  .option('--repeats <n>', 'GETs per round-trip time and side (medians reported)', int, 3)
  .action(async (o: { rtts: string, sizeMb: number, repeats: number }) => {
    const { run } = await import('./scenarios/p9-tunnel-wan.js')
    print(await run({ rttsMs: o.rtts.split(',').map(Number).filter(n => n >= 0), sizeMb: o.sizeMb, repeats: o.repeats }))
  })

program.command('p10-vs-openssh')
  .description('P10: our tunnel beside ssh -J -L through two sshd, same shape, same delay: GET, PUT, four streams, CPU per GB, small-request latency (needs openssh-server: apt-get install openssh-server)')
  .option('--rtts <ms,...>', 'round-trip times between relay and server (and between the two sshd), ms', '0,50,150')
  .option('--size-mb <n>', 'bytes per transfer, MiB', int, 200)
  .option('--rounds <n>', 'interleaved rounds per case (medians reported)', int, 3)
  .option('--small <n>', 'small GETs for the latency figures (and the CPU per request: /proc counts 10 ms ticks, so a few thousand)', int, 2000)
  .action(async (o: { rtts: string, sizeMb: number, rounds: number, small: number }) => {
    const { run } = await import('./scenarios/p10-vs-openssh.js')
    print(await run({ rttsMs: o.rtts.split(',').map(Number).filter(n => n >= 0), sizeMb: o.sizeMb, rounds: o.rounds, small: o.small }))
  })

function print (result: unknown): void {
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}

try {
  await program.parseAsync(process.argv)
} catch (err) {
  const code = (err as { exitCode?: number }).exitCode
  if (code === undefined) process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(code === undefined ? 1 : code)
}
