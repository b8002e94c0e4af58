/**
 * Stores written by earlier versions of the format must stay readable (STYLE.md 8: frozen
 * fixtures). test/stores/v1 and v2 (block format and index layout 2: packs) were each written
 * once by test/fixtures/make-frozen-store.ts and are never regenerated: if this test fails, the
 * change broke that format (bump the version and add a reader, do not rewrite the store).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EntryKind } from '../blockstore/format.js';
import { readBlockIndex } from '../blockstore/store.js';
import { OuroDB } from '../lib/index.js';
import { nodeVfs } from '../lib/vfs/index.js';
import { repoRoot } from './paths.js';
import { blockFiles, snapshotTree, tempDir } from './helpers.js';

interface Manifest {
  passphrase: string;
  values: Array<{ hash: string; size: number; sha256: string; meta: Record<string, string>; sealed: boolean }>;
}

describe.each(['v1', 'v2'])('frozen store, format %s', (version) => {
  const frozen = path.join(repoRoot, 'test', 'stores', version);
  it('opens, recovers its unsealed entries and reads every value byte-identical with its metadata', async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(frozen, 'manifest.json'), 'utf8')) as Manifest;
    const before = snapshotTree(frozen);
    const dir = path.join(tempDir(), 'db');
    fs.cpSync(path.join(frozen, 'db'), dir, { recursive: true });
    expect(fs.readdirSync(path.join(dir, 'open'))).toHaveLength(1);

    for (const round of ['first open (recovers)', 'reopen']) {
      const db = await OuroDB.open(dir, { passphrase: manifest.passphrase });
      for (const v of manifest.values) {
        const got = Buffer.from(await db.get(v.hash));
        expect({ round, hash: v.hash, sha256: crypto.createHash('sha256').update(got).digest('hex') }).toEqual({ round, hash: v.hash, sha256: v.sha256 });
        const st = await db.stat(v.hash);
        expect(st.size).toBe(v.size);
        expect(st.meta).toEqual(v.meta);
      }
      const stats = await db.stats();
      expect(stats.objects).toBe(manifest.values.length);
      expect(stats.walRecords).toBe(0);
      expect(stats.blocks).toBe(2);
      await db.close();
    }
    expect(fs.readdirSync(path.join(dir, 'open'))).toHaveLength(0);
    // v2 holds packs, sealed and recovered from the open block: both read above.
    const kinds = new Set<number>();
    for (const file of blockFiles(dir)) for (const row of (await readBlockIndex(nodeVfs, file)).rows) kinds.add(row.kind);
    expect(kinds.has(EntryKind.Pack)).toBe(version === 'v2');
    // The committed store itself is never touched.
    expect(snapshotTree(frozen)).toEqual(before);
  });
});
