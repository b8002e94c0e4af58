/**
 * Many writers and readers on one handle, a second process on the same directory, and close()
 * while operations are in flight.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { pseudoRandom, tempDir } from './helpers.js';
import { repoRoot } from './paths.js';

const key = Buffer.alloc(32, 6);

describe('concurrency', () => {
  it('concurrent writers and readers of the same keys see whole versions only', async () => {
    const db = await OuroDB.open(tempDir(), { key, blockSize: 256 * 1024, chunkSizes: { min: 4096, avg: 16384, max: 65536 } });
    try {
      const versions = new Map<string, Set<string>>();
      const value = (k: number, v: number) => pseudoRandom(`c${k}/${v}`, [10, 3000, 40_000][v % 3]!);
      const digest = (b: Uint8Array) => Buffer.from(b).toString('base64').slice(0, 60) + b.length;
      for (let k = 0; k < 8; k++) versions.set(`k${k}`, new Set());
      let writing = true;
      const writers = Array.from({ length: 8 }, async (_, w) => {
        for (let v = 0; v < 15; v++) {
          const k = (w + v) % 8;
          versions.get(`k${k}`)!.add(digest(value(k, v)));
          await db.put(value(k, v), { key: `k${k}` });
        }
      });
      const readers = Array.from({ length: 8 }, async () => {
        let reads = 0;
        while (writing || reads < 10) {
          const k = `k${reads % 8}`;
          const got = await db.getByKey(k).catch((err: { code?: string }) => {
            if (err.code !== 'OURO_NOT_FOUND') throw err;
            return undefined;
          });
          if (got) expect(versions.get(k)!.has(digest(got))).toBe(true);
          reads++;
          // A small read can complete without touching the event loop (record cache, synchronous
          // pread): a reader loop must yield for the writers' I/O callbacks to run.
          await new Promise((r) => setImmediate(r));
        }
        return reads;
      });
      await Promise.all(writers);
      writing = false;
      const reads = await Promise.all(readers);
      expect(reads.every((r) => r >= 10)).toBe(true);
      for (let k = 0; k < 8; k++) expect((await Array.fromAsync(db.history(`k${k}`))).length).toBe(15);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('a second process gets OURO_LOCKED (exit code 7) while the database is open', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { key });
    try {
      const keyFile = path.join(tempDir(), 'key');
      (await import('node:fs')).writeFileSync(keyFile, key);
      const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'bin', 'ouro.js'), '--key-file', keyFile, 'stats', dir], { encoding: 'utf8' });
      expect(r.status).toBe(7);
      expect(r.stderr).toContain('OURO_LOCKED');
    } finally {
      await db.close();
    }
  });

  it('close() while puts are in flight waits for them; later calls fail with OURO_CLOSED', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { key });
    const puts = Array.from({ length: 100 }, (_, i) => db.put(pseudoRandom(`f${i}`, i % 2 ? 100 : 70_000), { key: `f${i}` }));
    const closing = db.close();
    const results = await Promise.allSettled(puts);
    await closing;
    await expect(db.put('late')).rejects.toMatchObject({ code: 'OURO_CLOSED' });
    await expect(db.get('0'.repeat(64))).rejects.toMatchObject({ code: 'OURO_CLOSED' });
    const again = await OuroDB.open(dir, { key });
    try {
      results.forEach((r, i) => {
        if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'OURO_CLOSED' });
      });
      for (let i = 0; i < 100; i++) {
        if (results[i]!.status === 'fulfilled') expect(Buffer.from(await again.getByKey(`f${i}`)).equals(pseudoRandom(`f${i}`, i % 2 ? 100 : 70_000))).toBe(true);
      }
      expect(results.filter((r) => r.status === 'fulfilled').length).toBe(100);
    } finally {
      await again.close();
    }
  });
});
