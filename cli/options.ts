import { InvalidArgumentError, Option, type Command } from 'commander'

/**
 * An option that also reads RELAYGATE_<FLAG> from the environment, or
 * RELAYGATE_<SCOPE>_<FLAG> with a scope: an operator command's options that
 * name one object (`endpoint create --name`) read variables of their own, so
 * that a RELAYGATE_NAME meant for the relay never names an endpoint.
 */
export function opt (flags: string, description: string, scope?: string): Option {
  const long = /--([a-z0-9-]+)/.exec(flags)?.[1] ?? ''
  const name = (scope === undefined ? long : `${scope}-${long}`).toUpperCase().replace(/-/g, '_')
  return new Option(flags, description).env(`RELAYGATE_${name}`)
}

export function parsePort (value: string): number {
  const n = Number(value)
  if (!/^-?\d+$/.test(value.trim()) || !Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number from 0 to 65535 (0 picks a free port).')
  return n
}

/** `[host:]port` to listen on: 8022, 0.0.0.0:8022, [::1]:8022; the host defaults to 127.0.0.1 (this machine only). */
export function parseListen (value: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]:|([^:[\]]+):)?(\d+)$/.exec(value.trim())
  if (m === null) throw new InvalidArgumentError('must be [host:]port, e.g. 8022, 0.0.0.0:8022 or [::1]:8022.')
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port: parsePort(m[3]) }
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

/** Repeatable list of ports: "22,5432" or the flag given twice. */
export function collectPorts (value: string, previous: number[] | undefined): number[] {
  const out = [...(previous ?? [])]
  for (const part of value.split(',').map(s => s.trim()).filter(s => s !== '')) out.push(parsePort(part))
  for (const p of out) if (p === 0) throw new InvalidArgumentError('ports must be 1-65535.')
  return out
}

const truthy = ['1', 'true', 'yes', 'on']
const falsy = ['0', 'false', 'no', 'off', '']

/**
 * Commander turns a boolean flag on whenever its environment variable is
 * set, even to "false" or "0". Read the value instead (run as a preAction
 * hook): true/1/yes/on, false/0/no/off, anything else is a usage error.
 */
export function envBooleans (command: Command): void {
  for (const option of command.options) {
    if (option.required || option.optional || option.envVar === undefined) continue
    const name = option.attributeName()
    if (command.getOptionValueSource(name) !== 'env') continue
    const raw = (process.env[option.envVar] ?? '').trim().toLowerCase()
    if (truthy.includes(raw)) command.setOptionValueWithSource(name, !option.negate, 'env')
    else if (falsy.includes(raw)) command.setOptionValueWithSource(name, option.negate, 'env')
    else command.error(`error: ${option.envVar} (${option.long ?? name}) must be true or false, got "${raw}"`, { exitCode: 2, code: 'relaygate.invalidEnv' })
  }
}
