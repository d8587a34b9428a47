import { InvalidArgumentError, Option } from 'commander'

/** An option that also reads RELAYGATE_<FLAG> from the environment. */
export function opt (flags: string, description: string): Option {
  const long = /--([a-z0-9-]+)/.exec(flags)?.[1] ?? ''
  return new Option(flags, description).env(`RELAYGATE_${long.toUpperCase().replace(/-/g, '_')}`)
}

export function parsePort (value: string): number {
  const n = Number(value)
  if (!/^-?\d+$/.test(value.trim()) || !Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number from 0 to 65535 (0 picks a free port).')
  return n
}

export function parsePortOrOff (value: string): number {
  if (value === 'off' || value === '-1') return -1
  return parsePort(value)
}

export function parseCount (value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value.trim()) || n < 1 || n > 1000) throw new InvalidArgumentError('must be a whole number from 1 to 1000.')
  return n
}

export function parseBytes (value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i.exec(value.trim())
  if (m === null) throw new InvalidArgumentError('must be a byte count such as 1073741824, 512MiB or 10GiB.')
  const unit = (m[2] ?? 'b').toLowerCase()[0]
  const mult = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit] ?? 1
  return Math.floor(Number(m[1]) * mult)
}

export function parseSeconds (value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('must be a number of seconds (0 = never).')
  return n
}

/** Repeatable option; from the environment a comma-separated list. */
export function collect (value: string, previous: string[] | undefined): string[] {
  const parts = value.split(',').map(s => s.trim()).filter(s => s !== '')
  return [...(previous ?? []), ...parts]
}
