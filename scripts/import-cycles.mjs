#!/usr/bin/env node
/**
 * Import cycles among the TypeScript files under the given directories (default: carrier), like
 * `madge --circular --extensions ts`: every static import and re-export counts, `import type`
 * and `export type ... from` included (a type-only cycle is still coupling). Prints each cycle
 * found (one per strongly connected component, as a path) and exits 1 if there is any.
 *
 *   node scripts/import-cycles.mjs [dir ...]
 *
 * Only relative imports are followed (`./x.js` resolves to `./x.ts`); packages are leaves.
 */
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const dirs = process.argv.slice(2);
if (dirs.length === 0) dirs.push('carrier');

const files = [];
const walk = (dir) => {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) files.push(path.resolve(p));
  }
};
for (const d of dirs) walk(d);
const inScope = new Set(files);

/** Relative module specifiers of every import, export-from and import() in `file`. */
function importsOf(file) {
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const out = [];
  const visit = (node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) out.push(node.moduleSpecifier.text);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) out.push(node.argument.literal.text);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) out.push(node.arguments[0].text);
    ts.forEachChild(node, visit);
  };
  visit(src);
  return out
    .filter((s) => s.startsWith('.'))
    .map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')))
    .filter((p) => inScope.has(p));
}

const graph = new Map(files.map((f) => [f, importsOf(f)]));

// Tarjan's strongly connected components: each with more than one file (or a self-import) holds a cycle.
let index = 0;
const stack = [];
const meta = new Map();
const components = [];
const strong = (v) => {
  meta.set(v, { index, low: index, on: true });
  index++;
  stack.push(v);
  for (const w of graph.get(v)) {
    if (!meta.has(w)) {
      strong(w);
      meta.get(v).low = Math.min(meta.get(v).low, meta.get(w).low);
    } else if (meta.get(w).on) meta.get(v).low = Math.min(meta.get(v).low, meta.get(w).index);
  }
  if (meta.get(v).low === meta.get(v).index) {
    const c = [];
    let w;
    do {
      w = stack.pop();
      meta.get(w).on = false;
      c.push(w);
    } while (w !== v);
    if (c.length > 1 || graph.get(v).includes(v)) components.push(c);
  }
};
for (const f of files) if (!meta.has(f)) strong(f);

/** One cycle through the component, as a path from its first file back to it. */
const cycleIn = (component) => {
  const set = new Set(component);
  const start = [...component].sort()[0];
  const prev = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const w of graph.get(v)) {
      if (!set.has(w)) continue;
      if (w === start) {
        const pathOut = [];
        for (let x = v; x !== null; x = prev.get(x)) pathOut.unshift(x);
        return [...pathOut, start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return component;
};

const rel = (f) => path.relative(process.cwd(), f);
for (const c of components) console.log(`cycle (${c.length} files: ${c.map(rel).sort().join(', ')}): ${cycleIn(c).map(rel).join(' -> ')}`);
console.log(`${files.length} files, ${components.length === 0 ? 'no import cycles' : `${components.length} group${components.length === 1 ? '' : 's'} of files in import cycles`}`);
process.exit(components.length === 0 ? 0 : 1);
