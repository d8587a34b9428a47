import t from 'tap'
import fs from 'node:fs'
import { join, relative, dirname, resolve } from 'node:path'
import ts from 'typescript'
import { root } from '../helpers/child.js'

/**
 * The folder names are the architecture: each folder may import only the
 * ones listed here (DESIGN.md "Layout"). server, relay and agent never
 * import each other; only the relay uses the artifact cache; protocol/ is
 * the wire and imports nothing of ours but itself.
 */
const ALLOWED: Record<string, readonly string[]> = {
  protocol: [],
  common: ['protocol'],
  cache: ['protocol', 'common'],
  server: ['protocol', 'common'],
  relay: ['protocol', 'common', 'cache'],
  agent: ['protocol', 'common'],
  cli: ['protocol', 'common', 'server', 'relay', 'agent'],
  bench: ['protocol', 'common', 'server', 'relay', 'agent', 'cache']
}
const FOLDERS = Object.keys(ALLOWED)

/** Longest function allowed in the process folders (lines, from its first line to its closing brace). */
const MAX_FUNCTION_LINES = 120
const SIZE_CHECKED = ['server', 'relay', 'agent', 'cache', 'common', 'protocol']

function sources (folder: string): string[] {
  const out: string[] = []
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts')) out.push(path)
    }
  }
  walk(join(root, folder))
  return out
}

function parse (file: string): ts.SourceFile {
  return ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
}

/** Relative import specifiers of a module (static imports, re-exports and dynamic imports). */
export function importsOf (src: ts.SourceFile): string[] {
  const specs: string[] = []
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier)) {
      specs.push(node.moduleSpecifier.text)
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments.length === 1 && ts.isStringLiteral(node.arguments[0])) {
      specs.push(node.arguments[0].text)
    }
    ts.forEachChild(node, visit)
  }
  visit(src)
  return specs.filter(s => s.startsWith('.'))
}

/** The import-rule violations of one file: "from -> to" for each folder it may not import. */
export function violations (file: string, specs: string[]): string[] {
  const from = relative(root, file).split('/')[0]
  const out: string[] = []
  for (const spec of specs) {
    const to = relative(root, resolve(dirname(file), spec)).split('/')[0]
    if (to === from || !FOLDERS.includes(to)) continue
    if (!ALLOWED[from].includes(to)) out.push(`${relative(root, file)} imports ${spec} (${from} -> ${to})`)
  }
  return out
}

t.test('folders import only what the layout allows (server, relay and agent never each other)', async t => {
  const found: string[] = []
  let files = 0
  for (const folder of FOLDERS) {
    for (const file of sources(folder)) {
      files++
      found.push(...violations(file, importsOf(parse(file))))
    }
  }
  t.ok(files > 50, `${files} files checked`)
  t.same(found, [], 'no import crosses the layout')
})

t.test('the import check catches a crossing', async t => {
  const fake = join(root, 'agent', 'x.ts')
  t.same(violations(fake, ['../protocol/index.js', './jobs.js', '../common/files.js']), [], 'allowed imports pass')
  t.equal(violations(fake, ['../relay/relay.js']).length, 1, 'agent -> relay is caught')
  t.equal(violations(fake, ['../cache/index.js']).length, 1, 'agent -> cache is caught')
  t.equal(violations(join(root, 'server', 'x.ts'), ['../cache/index.js']).length, 1, 'server -> cache is caught')
  t.equal(violations(join(root, 'protocol', 'x.ts'), ['../common/files.js']).length, 1, 'protocol -> common is caught')
  const src = ts.createSourceFile('x.ts', "import a from '../relay/a.js'\nexport * from '../server/b.js'\nconst c = await import('../agent/c.js')", ts.ScriptTarget.Latest)
  t.same(importsOf(src), ['../relay/a.js', '../server/b.js', '../agent/c.js'], 'static, re-export and dynamic imports are read')
})

t.test(`no function in ${SIZE_CHECKED.join(', ')} is longer than ${MAX_FUNCTION_LINES} lines`, async t => {
  const long: string[] = []
  for (const folder of SIZE_CHECKED) {
    for (const file of sources(folder)) {
      const src = parse(file)
      const visit = (node: ts.Node): void => {
        if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
          const first = src.getLineAndCharacterOfPosition(node.getStart(src)).line
          const last = src.getLineAndCharacterOfPosition(node.end).line
          const lines = last - first + 1
          const name = 'name' in node && node.name !== undefined ? (node.name as ts.Node).getText(src) : '(anonymous)'
          if (lines > MAX_FUNCTION_LINES) long.push(`${relative(root, file)}:${first + 1} ${name}: ${lines} lines`)
        }
        ts.forEachChild(node, visit)
      }
      visit(src)
    }
  }
  t.same(long, [], 'every function fits')
})
