import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { Versions } from '../common/self-update.js'
import { VERSION } from '../common/version.js'
import type { Command } from 'commander'
import { RelaygateError } from '../protocol/errors.js'
import { isOneFile, extractEmbedded } from '../common/embedded.js'
import { packageRoot } from '../server/static.js'
import { opt } from './options.js'
import { decodeJoinToken } from '../protocol/token.js'

type Role = 'agent' | 'relay'

/** What `relaygate install <role>` puts where (paths on the target system; --root prefixes them all). */
export function installLayout (role: Role): { bin: string, env: string, unit: string, dataDir: string } {
  return {
    bin: '/opt/relaygate/bin/relaygate',
    env: `/etc/relaygate/${role}.env`,
    unit: `/etc/systemd/system/relaygate-${role}.service`,
    dataDir: `/var/lib/relaygate-${role}`
  }
}

/**
 * The unit from deploy/systemd, made to run the installed executable as a
 * dynamic user with the env file. The one-file executable runs through the
 * link in its data dir, which self-updates switch (issue 16); before each
 * start the installed executable's update-guard points the link at the
 * current version and rolls back a new one that keeps failing.
 */
function unitText (role: Role, execStart: string): string {
  const name = `relaygate-${role}.service`
  const template = isOneFile() ? readFileSync(extractEmbedded(`deploy/${name}`), 'utf8') : readFileSync(join(packageRoot(), 'deploy', 'systemd', name), 'utf8')
  const layout = installLayout(role)
  const run = isOneFile() ? join(layout.dataDir, 'bin', 'relaygate') : execStart
  const guard = isOneFile() ? `ExecStartPre=${execStart} update-guard --data-dir ${layout.dataDir}\n` : ''
  return template
    .replace(/^User=relaygate\nGroup=relaygate\n/m, 'DynamicUser=yes\n')
    .replace(/^EnvironmentFile=-?.*$/m, `EnvironmentFile=${layout.env}`)
    .replace(/^ExecStart=.*$/m, `${guard}ExecStart=${run} ${role} --data-dir ${layout.dataDir} --ready-file /run/relaygate-${role}/ready.json`)
}

/** RELAYGATE_<FLAG>=value lines (what the unit's EnvironmentFile holds: the secrets stay out of the unit and of ps). */
function envText (settings: Record<string, string | undefined>): string {
  const lines: string[] = []
  for (const [flag, value] of Object.entries(settings)) {
    if (value === undefined) continue
    if (/[\n\r\0]/.test(value)) throw new RelaygateError('RG_ERR_CONFIG', `--${flag}: a value on one line, please`)
    lines.push(`RELAYGATE_${flag.toUpperCase().replace(/-/g, '_')}=${value}`)
  }
  return lines.join('\n') + '\n'
}

/**
 * Installs this executable as a systemd service (issue 16): copies it to
 * /opt/relaygate/bin, writes the options to /etc/relaygate/<role>.env (mode
 * 0600) and the unit, then enables and starts it when systemd runs here.
 * Returns what it did, for the user.
 */
export function install (role: Role, settings: Record<string, string | undefined>, options: { root: string, start: boolean }): string[] {
  const layout = installLayout(role)
  const at = (path: string): string => join(options.root, path)
  const notes: string[] = []
  // The one file itself; from npm, the CLI that is running (node and its script).
  const execStart = isOneFile() ? layout.bin : `${process.execPath} ${realpathSync(process.argv[1])}`
  try {
    if (isOneFile()) {
      mkdirSync(dirname(at(layout.bin)), { recursive: true })
      copyFileSync(process.execPath, at(layout.bin) + '.new')
      chmodSync(at(layout.bin) + '.new', 0o755)
      renameSync(at(layout.bin) + '.new', at(layout.bin))
    }
    mkdirSync(dirname(at(layout.env)), { recursive: true, mode: 0o755 })
    writeFileSync(at(layout.env), envText(settings), { mode: 0o600 })
    chmodSync(at(layout.env), 0o600)
    mkdirSync(dirname(at(layout.unit)), { recursive: true })
    writeFileSync(at(layout.unit), unitText(role, execStart), { mode: 0o644 })
    notes.push(`installed ${isOneFile() ? at(layout.bin) : execStart}`, `wrote ${at(layout.env)} (mode 0600) and ${at(layout.unit)}`)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EACCES' || code === 'EPERM') throw new RelaygateError('RG_ERR_CONFIG', `cannot write ${(err as { path?: string }).path ?? 'the files'}: run the install as root`)
    throw err
  }
  const systemd = options.root === '/' && existsSync('/run/systemd/system')
  if (options.start && systemd) {
    execFileSync('systemctl', ['daemon-reload'], { stdio: 'inherit' })
    execFileSync('systemctl', ['enable', '--now', `relaygate-${role}`], { stdio: 'inherit' })
    notes.push(`started: systemctl status relaygate-${role}`)
  } else if (options.start) {
    notes.push(`systemd is not running here: start it as the unit would, with the environment of ${layout.env}:`, `  ${execStart} ${role} --data-dir ${layout.dataDir}`)
  }
  return notes
}

/** `relaygate install agent|relay`: what the one-line install command runs once the download checked out; `relaygate update-guard`: what its unit runs before each start. */
export function registerInstallCommands (program: Command, fail: (err: unknown) => never): void {
  program.command('update-guard')
    .description('Before each start of an installed service (its ExecStartPre): point <data-dir>/bin/relaygate at the current version, roll back a new one that keeps failing.')
    .addOption(opt('--data-dir <dir>', 'the service\'s data directory').makeOptionMandatory())
    .action((o: Record<string, any>) => {
      try {
        const versions = new Versions(resolve(o.dataDir), { execPath: process.execPath, version: VERSION, oneFile: isOneFile() })
        process.stdout.write(`relaygate update-guard: ${versions.guard()}\n`)
      } catch (err) { fail(err) }
    })
  const installCmd = program.command('install').description('Install this executable as a systemd service (what the one-line install command runs).')
  const common = (cmd: Command): Command => cmd
    .addOption(opt('--root <dir>', 'install under this folder instead of / (for packaging and tests)').default('/'))
    .option('--no-start', 'write the files only')
  const done = (role: Role, settings: Record<string, string | undefined>, o: Record<string, any>): void => {
    try {
      // A token that cannot work is refused here, not by a service that then fails at every boot.
      if (settings['join-token'] !== undefined) {
        try {
          decodeJoinToken(settings['join-token'])
        } catch (err) {
          throw new RelaygateError('RG_ERR_BAD_JOIN_TOKEN', `--join-token: ${(err as Error).message}`)
        }
      }
      for (const line of install(role, settings, { root: o.root, start: o.start !== false })) process.stdout.write(`${line}\n`)
    } catch (err) { fail(err) }
  }
  common(installCmd.command('agent')
    .description('Install the agent: its join token goes into /etc/relaygate/agent.env.')
    .addOption(opt('--join-token <token>', 'join token from POST /api/endpoints').makeOptionMandatory())
    .addOption(opt('--tunnel-target <url>', 'where tunnel streams go: http://host:port, tcp://host:port or unix:/path'))
    .addOption(opt('--proxy <url>', 'an HTTP CONNECT proxy to the relays (written to the env file)')))
    .action((o: Record<string, any>) => done('agent', { 'join-token': o.joinToken, 'tunnel-target': o.tunnelTarget, proxy: o.proxy }, o))
  common(installCmd.command('relay')
    .description('Install the relay: server URL and token go into /etc/relaygate/relay.env.')
    .addOption(opt('--server <url>', 'the server to link to').makeOptionMandatory())
    .addOption(opt('--token <token>', 'relay token from POST /api/relays').makeOptionMandatory())
    .addOption(opt('--server-fingerprint <sha256>', 'pin the server\'s self-signed HTTPS certificate'))
    .addOption(opt('--proxy <url>', 'an HTTP CONNECT proxy to the server (written to the env file)')))
    .action((o: Record<string, any>) => done('relay', { server: o.server, token: o.token, 'server-fingerprint': o.serverFingerprint, proxy: o.proxy }, o))
}
