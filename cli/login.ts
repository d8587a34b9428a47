import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { RelaygateError } from '../protocol/errors.js'
import { writeFileAtomic } from '../common/files.js'

/**
 * What `relaygate login` keeps for the operator commands (like `gh auth
 * login`): the server's URL, its pin, and the admin token, in
 * $XDG_CONFIG_HOME/relaygate/cli.json (~/.config/…), mode 0600.
 */
export interface LoginConfig {
  server: string
  serverFingerprint?: string
  token: string
}

/** The file `relaygate login` writes ($RELAYGATE_CLI_CONFIG overrides it). */
export function loginFile (): string {
  const override = process.env.RELAYGATE_CLI_CONFIG
  if (override !== undefined && override !== '') return override
  const base = process.env.XDG_CONFIG_HOME !== undefined && process.env.XDG_CONFIG_HOME !== '' ? process.env.XDG_CONFIG_HOME : join(homedir(), '.config')
  return join(base, 'relaygate', 'cli.json')
}

/** The saved login, or null when there is none. */
export function readLogin (): LoginConfig | null {
  const file = loginFile()
  if (!existsSync(file)) return null
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new RelaygateError('RG_ERR_CONFIG', `${file} is not JSON (${(err as Error).message}): run relaygate login again`)
  }
  const c = parsed as Partial<LoginConfig>
  if (typeof c.server !== 'string' || typeof c.token !== 'string') throw new RelaygateError('RG_ERR_CONFIG', `${file} lacks server or token: run relaygate login again`)
  return { server: c.server, token: c.token, ...(typeof c.serverFingerprint === 'string' ? { serverFingerprint: c.serverFingerprint } : {}) }
}

export function saveLogin (config: LoginConfig): string {
  const file = loginFile()
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  writeFileAtomic(file, JSON.stringify(config, null, 2) + '\n', 0o600)
  chmodSync(file, 0o600)
  return file
}
