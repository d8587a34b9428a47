#!/usr/bin/env node
// npm run dist [-- --out DIR] [--version V]
//
// Builds the one-file executable (issue 16): every role of the CLI in one
// CommonJS bundle (esbuild), made a Node single executable application
// (node --experimental-sea-config, postject) with the native addons and the
// dashboard as embedded assets; beside it a SHA256SUMS file. The executable
// runs on a linux-x64 host without Node (it is this machine's node binary
// with the bundle injected). --version stamps another version into the build
// (tests make two builds that differ only in it).
import { build } from 'esbuild'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { copyFileSync, chmodSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))
const { values } = parseArgs({ options: { out: { type: 'string' }, version: { type: 'string' } } })
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const version = values.version ?? pkg.version
if (!/^[0-9A-Za-z.+-]{1,64}$/.test(version)) throw new Error(`--version: not a version: ${version}`)
const out = resolve(values.out ?? join(root, 'dist-bin'))
const work = join(out, '.build')
rmSync(work, { recursive: true, force: true })
mkdirSync(work, { recursive: true })
const target = `${process.platform}-${process.arch}`

const sha256 = bytes => createHash('sha256').update(bytes).digest('hex')

// ---- the files embedded in the executable ----
const assets = {}
const uwsBinary = join(dirname(require.resolve('uWebSockets.js')), '..', 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`)
assets['uws.node'] = uwsBinary
assets['better_sqlite3.node'] = require.resolve('better-sqlite3/build/Release/better_sqlite3.node')
for (const role of ['agent', 'relay']) assets[`deploy/relaygate-${role}.service`] = join(root, 'deploy', 'systemd', `relaygate-${role}.service`)
const uiDir = join(root, 'server', 'ui')
for (const name of readdirSync(uiDir)) assets[`ui/${name}`] = join(uiDir, name)
// The dashboard's vendor modules: the ES module beside each CommonJS build (server/static.ts).
for (const [file, specifier] of Object.entries({ 'preact.mjs': 'preact', 'hooks.mjs': 'preact/hooks', 'htm.mjs': 'htm' })) {
  assets[`ui/vendor/${file}`] = require.resolve(specifier).replace(/\.js$/, '.mjs')
}
const manifest = { version, files: Object.fromEntries(Object.entries(assets).map(([name, path]) => [name, sha256(readFileSync(path))])) }
writeFileSync(join(work, 'manifest.json'), JSON.stringify(manifest, null, 2))
assets['manifest.json'] = join(work, 'manifest.json')

// ---- the bundles ----
const embedded = join(root, 'common', 'embedded.ts')
/**
 * Native addons come out of the executable's assets (`assets`) or, in a
 * per-role .mjs, out of bytes the bundle carries (`bytes`), instead of
 * node_modules (common/embedded.ts).
 */
const natives = from => ({
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
    const addon = { uws: ['uws.node', uwsBinary], bindings: ['better_sqlite3.node', assets['better_sqlite3.node']] }
    b.onLoad({ filter: /.*/, namespace: 'embedded-native' }, args => {
      const [name, file] = addon[args.path]
      const load = from === 'assets'
        ? `require(${JSON.stringify(embedded)}).loadEmbeddedAddon(${JSON.stringify(name)})`
        : `require(${JSON.stringify(embedded)}).loadAddonBytes(${JSON.stringify(name)}, require(${JSON.stringify(file)}))`
      return { resolveDir: root, loader: 'js', contents: args.path === 'uws' ? `module.exports = ${load}` : `module.exports = () => ${load}` }
    })
  }
})
const common = { bundle: true, platform: 'node', target: 'node20', minifySyntax: true, sourcemap: false, legalComments: 'none', logLevel: 'warning' }
const bundle = join(work, 'relaygate.cjs')
await build({
  ...common,
  entryPoints: [join(root, 'cli', 'main.ts')],
  outfile: bundle,
  format: 'cjs',
  plugins: [natives('assets')],
  define: { 'import.meta.url': 'importMetaUrl' },
  banner: { js: "const importMetaUrl = require('node:url').pathToFileURL(__filename).href;" }
})
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
    plugins: [natives('bytes')],
    define: { RELAYGATE_BUNDLE_ROLE: JSON.stringify(role), RELAYGATE_BUNDLE_VERSION: JSON.stringify(version) },
    banner: { js: "import { createRequire as createRequireForBundle } from 'node:module'; const require = createRequireForBundle(import.meta.url);" }
  })
  chmodSync(outfile, 0o755)
  roleBundles.push(outfile)
}

// ---- the single executable application ----
const exe = join(out, `relaygate-${target}`)
const seaConfig = join(work, 'sea-config.json')
writeFileSync(seaConfig, JSON.stringify({ main: bundle, output: join(work, 'sea.blob'), disableExperimentalSEAWarning: true, useCodeCache: false, useSnapshot: false, assets }))
/** Runs a build step quietly; its output is shown only if it fails. */
function quiet (args) {
  try {
    execFileSync(process.execPath, args, { stdio: 'pipe' })
  } catch (err) {
    process.stderr.write(`${err.stdout ?? ''}${err.stderr ?? ''}`)
    throw err
  }
}
quiet(['--experimental-sea-config', seaConfig])
rmSync(exe, { force: true })
copyFileSync(process.execPath, exe)
chmodSync(exe, 0o755)
// postject warns about ELF note sections it does not need.
quiet([require.resolve('postject/dist/cli.js'), exe, 'NODE_SEA_BLOB', join(work, 'sea.blob'), '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'])

const files = [exe, ...roleBundles]
writeFileSync(join(out, 'SHA256SUMS'), files.map(f => `${sha256(readFileSync(f))}  ${basename(f)}\n`).join(''))
rmSync(work, { recursive: true, force: true })
for (const f of files) process.stdout.write(`${relative(process.cwd(), f)}  ${(statSync(f).size / 1e6).toFixed(1)} MB  version ${version}\n`)
