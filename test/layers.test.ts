/**
 * The engine's layers (docs/design.md, "The engine's shape"): imports only go down, from the
 * public facade (lib/db.ts) to the engine modules of lib/, then wal/, index/ and blockstore/.
 * The leaf helpers of lib/ may be imported from any layer. `import type` counts: a type that
 * points up is a dependency that points up. Only index/leveldb.ts imports classic-level. And no
 * product module of these layers grows past ~700 lines.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './paths.js';

const LEAVES = new Set(['lib/errors.ts', 'lib/bytes.ts', 'lib/fsutil.ts', 'lib/failpoints.ts', 'lib/crypto.ts', 'lib/entry.ts', 'lib/record.ts', 'lib/pack.ts', 'lib/versions.ts', 'lib/keyname.ts']);
/** Users of the public API that live in lib/: above the facade. */
const CLIENTS = new Set(['lib/index.ts', 'lib/archive.ts', 'lib/ipfs-blockstore.ts', 'lib/inspect.ts']);
/**
 * Leaves that read a lower layer's formats (an entry's header, a head's shape). Each is a data
 * definition, not engine state, and nothing below imports the leaf back.
 */
const LEAF_FORMAT_IMPORTS = new Set(['lib/entry.ts -> blockstore/format.ts', 'lib/versions.ts -> index/values.ts']);

function layer(file: string): number {
  if (LEAVES.has(file) || file.startsWith('lib/vfs/')) return 0;
  if (file.startsWith('blockstore/')) return 1;
  if (file.startsWith('index/')) return 2;
  if (file.startsWith('wal/')) return 3;
  if (file === 'lib/db.ts') return 5;
  if (CLIENTS.has(file)) return 6;
  return 4; // the engine modules of lib/
}

function sources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
    }
  };
  for (const dir of ['lib', 'wal', 'index', 'blockstore']) walk(dir);
  return out;
}

function importsOf(file: string): string[] {
  const src = fs.readFileSync(path.join(repoRoot, file), 'utf8');
  return [...src.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+'([^']+)'/gms)].map((m) => m[1]!);
}

function resolve(from: string, spec: string): string {
  const target = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec)).replace(/\.js$/, '.ts');
  return fs.existsSync(path.join(repoRoot, target)) ? target : target.replace(/\.ts$/, '/index.ts');
}

describe('engine layers', () => {
  it('imports (type imports included) only go down the layers', () => {
    const up: string[] = [];
    for (const file of sources()) {
      for (const spec of importsOf(file)) {
        if (!spec.startsWith('.')) continue;
        const target = resolve(file, spec);
        if (layer(target) === 0) continue;
        if (LEAF_FORMAT_IMPORTS.has(`${file} -> ${target}`)) continue;
        if (layer(file) === 0 || layer(target) > layer(file)) up.push(`${file} -> ${target}`);
      }
    }
    expect(up).toEqual([]);
  });

  it('only index/leveldb.ts imports classic-level', () => {
    const importers = sources().filter((f) => importsOf(f).includes('classic-level'));
    expect(importers).toEqual(['index/leveldb.ts']);
  });

  it('no product module of the engine is over 700 lines', () => {
    const long = sources()
      .map((f) => ({ f, lines: fs.readFileSync(path.join(repoRoot, f), 'utf8').split('\n').length }))
      .filter((x) => x.lines > 700);
    expect(long).toEqual([]);
  });
});
