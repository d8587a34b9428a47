import { readFileSync } from 'node:fs'
import { InvalidArgumentError, Option, type Command } from 'commander'
import { parse } from 'yaml'
import { opt } from './options.js'

/**
 * Config files for `relaygate server|relay|agent --config FILE` (or
 * RELAYGATE_CONFIG): a YAML (or JSON) mapping whose keys are the long flag
 * names, kebab-case or camelCase (`data-dir` or `dataDir`). Values go
 * through the same parsers as the flags.
 *
 * Precedence: command-line flag > environment variable > config file > default.
 *
 * Commander checks mandatory options before any hook runs, so a command
 * that takes --config has its mandatory options checked here instead, after
 * the file is applied (the message is commander's own).
 */

const USAGE = 2
const deferredMandatory = new WeakMap<Command, Option[]>()

/** The `--config <file>` option (env RELAYGATE_CONFIG). */
export function configOption (): Option {
  return opt('--config <file>', 'YAML or JSON file of options (keys are the long flag names); flags and RELAYGATE_* variables win over it')
}

/**
 * preSubcommand hook: if the subcommand takes --config, its mandatory
 * options are checked after the file is read (see applyConfigFile).
 */
export function deferMandatoryOptions (subcommand: Command): void {
  if (!subcommand.options.some(o => o.long === '--config')) return
  const mandatory = subcommand.options.filter(o => o.mandatory)
  for (const o of mandatory) o.mandatory = false
  deferredMandatory.set(subcommand, mandatory)
}

function kebab (key: string): string {
  return key.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)
}

function fail (command: Command, message: string, code: string): never {
  command.error(`error: ${message}`, { exitCode: USAGE, code })
  throw new Error('unreachable')
}

function describe (value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value)
}

/** A file value as the option would have it from the command line, through its parser. */
function convert (command: Command, option: Option, value: unknown, file: string, inverted: boolean): unknown {
  const bad = (why: string): never => fail(command, `option '${option.flags}' in ${file}: ${why}`, 'relaygate.configInvalid')
  if (value === null) bad('has no value')
  if (!option.required && !option.optional) {
    // A switch (--allow-exec): true or false. `push-flags: false` means --no-push-flags.
    const raw = String(value).trim().toLowerCase()
    let on: boolean
    if (typeof value === 'boolean') on = value
    else if (['true', 'yes', 'on', '1'].includes(raw)) on = true
    else if (['false', 'no', 'off', '0'].includes(raw)) on = false
    else return bad(`must be true or false, got ${describe(value)}`)
    if (inverted) on = !on
    return option.negate ? !on : on
  }
  const scalar = (v: unknown): string => {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v)
    return bad(`must be a string or a number, got ${describe(v)}`)
  }
  const items = Array.isArray(value) ? value : [value]
  if (Array.isArray(value) && option.parseArg === undefined) bad('takes one value, not a list')
  if (option.parseArg === undefined) {
    const s = scalar(value)
    if (option.argChoices !== undefined && !option.argChoices.includes(s)) bad(`must be one of ${option.argChoices.join(', ')}, got ${s}`)
    return s
  }
  // Lists fold through the parser as if the flag were repeated.
  let out: unknown
  for (const item of items) {
    const s = scalar(item)
    try {
      out = option.parseArg(s, out)
    } catch (err) {
      if (err instanceof InvalidArgumentError || (err as { code?: string }).code === 'commander.invalidArgument') bad(`value '${s}' is invalid. ${(err as Error).message}`)
      throw err
    }
  }
  return out
}

function readConfig (command: Command, file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    return fail(command, `--config: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'relaygate.configUnreadable')
  }
  let data: unknown
  try {
    data = parse(text, { prettyErrors: false, uniqueKeys: true })
  } catch (err) {
    const first = (err as Error).message.split('\n')[0]
    return fail(command, `--config: ${file} is not valid YAML or JSON: ${first}`, 'relaygate.configSyntax')
  }
  if (data === null || data === undefined) return {}
  if (typeof data !== 'object' || Array.isArray(data)) return fail(command, `--config: ${file} must hold a mapping of option names to values`, 'relaygate.configSyntax')
  return data as Record<string, unknown>
}

/**
 * preAction hook: applies the config file to every option that has no value
 * from the command line or the environment, then checks mandatory options.
 */
export function applyConfigFile (command: Command): void {
  const file = command.opts().config as string | undefined
  if (file !== undefined) {
    const data = readConfig(command, file)
    const owners = [command, ...ancestors(command)]
    const seen = new Map<Option, string>()
    for (const [key, value] of Object.entries(data)) {
      const long = `--${kebab(key)}`
      let found: { cmd: Command, option: Option, inverted: boolean } | undefined
      for (const cmd of owners) {
        const option = cmd.options.find(o => o.long === long) ?? cmd.options.find(o => o.negate && o.long === `--no-${kebab(key)}`)
        if (option !== undefined) {
          found = { cmd, option, inverted: option.long !== long }
          break
        }
      }
      if (found === undefined || long === '--config' || long === '--help' || long === '--version') {
        fail(command, `${file}: unknown key "${key}" (not an option of relaygate ${command.name()})`, 'relaygate.configUnknownKey')
      }
      const { cmd, option, inverted } = found
      const twice = seen.get(option)
      if (twice !== undefined) fail(command, `${file}: keys "${twice}" and "${key}" are the same option`, 'relaygate.configDuplicateKey')
      seen.set(option, key)
      if (Array.isArray(value) && value.length === 0 && option.parseArg !== undefined) continue // an empty list: none
      // Checked even when a flag or the environment overrides it: a bad file is found early.
      const converted = convert(command, option, value, file, inverted)
      const name = option.attributeName()
      const source = cmd.getOptionValueSource(name)
      if (source !== undefined && source !== 'default') continue // the flag or the environment wins
      cmd.setOptionValueWithSource(name, converted, 'config')
    }
  }
  for (const option of deferredMandatory.get(command) ?? []) {
    if (command.getOptionValue(option.attributeName()) === undefined) {
      command.error(`error: required option '${option.flags}' not specified`, { exitCode: USAGE, code: 'commander.missingMandatoryOptionValue' })
    }
  }
}

function ancestors (command: Command): Command[] {
  const out: Command[] = []
  for (let c = command.parent; c !== null; c = c.parent) out.push(c)
  return out
}
