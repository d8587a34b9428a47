/**
 * What installs a one-file executable (issue 16): the one-line command the
 * dashboard and the CLI print, and the script a relay (agent.sh) or the
 * server (relay.sh) serves. Both download the executable from where the new
 * machine can reach, check it against a sha256 the administrator copied
 * from the server (so neither the relay nor the network can swap it), and
 * run its own `relaygate install <role>`.
 */

/** A shell word: as it is when it holds nothing the shell would read, else in single quotes. */
const quote = (value: string): string => /^[A-Za-z0-9._:/@=+,-]+$/.test(value) ? value : `'${value.replace(/'/g, "'\\''")}'`

/** The one line to paste on the new machine (as root): nothing it downloads runs before its sha256 matched. */
export function installCommand (from: string, name: string, sha256: string, role: 'agent' | 'relay', args: string[]): string {
  return [
    `curl -fsSLo relaygate ${quote(`${from}/install/${name}`)}`,
    `echo ${quote(`${sha256}  relaygate`)} | sha256sum -c -`,
    'chmod 755 relaygate',
    `./relaygate install ${role} ${args.map(quote).join(' ')}`
  ].join(' && ')
}

/** The same steps as a script, for `curl -fsSL <from>/install/<role>.sh | sh -s -- --sha256 <hex> …`. */
export function installScript (from: string, name: string, role: 'agent' | 'relay'): string {
  return `#!/bin/sh
# relaygate ${role} installer. Downloads ${name} from ${from},
# checks it against the sha256 you give (copy it from your server's page: this
# script came from the same place as the executable and proves nothing), then
# runs its "install ${role}" with the rest of the arguments, as root.
set -eu
if [ "$#" -lt 2 ] || [ "$1" != "--sha256" ]; then
  echo "usage: sh ${role}.sh --sha256 <hex> [relaygate install ${role} options]" >&2
  exit 2
fi
sha="$2"
shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSLo "$tmp/relaygate" ${quote(`${from}/install/${name}`)}
if ! echo "$sha  $tmp/relaygate" | sha256sum -c - >/dev/null 2>&1; then
  echo "relaygate: the download does not match --sha256; nothing was installed" >&2
  exit 1
fi
chmod 755 "$tmp/relaygate"
"$tmp/relaygate" install ${role} "$@"
`
}

/** http://host[:port] from a Host header, or null for anything else. */
export function baseFromHost (host: string | undefined, secure: boolean): string | null {
  if (host === undefined || !/^[A-Za-z0-9.[\]:-]{1,262}$/.test(host)) return null
  return `${secure ? 'https' : 'http'}://${host}`
}
