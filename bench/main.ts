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

function print (result: unknown): void {
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}

try {
  await program.parseAsync(process.argv)
} catch (err) {
  const code = (err as { exitCode?: number }).exitCode
  process.exit(code === undefined ? 1 : code)
}
