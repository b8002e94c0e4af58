/**
 * No product module grows past roughly 700 lines (the issue "The engine's shape"): one owner per
 * piece of state keeps them small. Where imports may go is checked by dependency-cruiser
 * (.dependency-cruiser.cjs, `npm run deps`, run by `npm test` before this).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './paths.js';

/** "Roughly 700": a module may pass it by a few dozen lines before it is split. */
const MAX_LINES = 750;

function sources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
    }
  };
  for (const dir of ['lib', 'wal', 'index', 'blockstore', 'carrier', 'bin']) walk(dir);
  return out;
}

describe('module size', () => {
  it(`no product module is over ${MAX_LINES} lines`, () => {
    const all = sources();
    expect(all.length).toBeGreaterThan(50);
    const long = all.map((f) => ({ f, lines: fs.readFileSync(path.join(repoRoot, f), 'utf8').split('\n').length })).filter((x) => x.lines > MAX_LINES);
    expect(long).toEqual([]);
  });
});
