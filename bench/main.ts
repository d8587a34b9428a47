import { Command, InvalidArgumentError } from 'commander'

const int = (v: string): number => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive whole number')
  return n
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

program.command('p4-tunnel-throughput')
  .description('P4: large GETs through server, relay and agent vs direct to the target (same run)')
  .option('--sizes <mb>', 'comma-separated sizes in MB', '100,1024')
  .option('--repeats <n>', 'runs per size (best kept)', int, 2)
  .action(async (o: { sizes: string, repeats: number }) => {
    const { run } = await import('./scenarios/p4-tunnel-throughput.js')
    print(await run({ sizesMb: o.sizes.split(',').map(Number).filter(n => n > 0), repeats: o.repeats }))
  })

function print (result: unknown): void {
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}

try {
  await program.parseAsync(process.argv)
} catch (err) {
  const code = (err as { exitCode?: number }).exitCode
  process.exit(code === undefined ? 1 : code)
}
