/**
 * The LevelDB under the index and WAL verifies the checksum of every block it reads. classic-level
 * ships LevelDB with that off, and then a flipped bit in a table can read back as a missing key or
 * a different value, silently. patches/classic-level+3.0.0.patch turns it on and
 * scripts/postinstall.mjs builds the patched source; this fails when the prebuilt binary is the
 * one in use (as when that build failed).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const valueOf = (i: number) => crypto.createHash('sha512').update(`v${i}`).digest();

describe('LevelDB block checksums', () => {
  it('a flipped bit in a table reads as LEVEL_CORRUPTION, never as a missing key or another value', async () => {
    let corrupt = 0;
    for (let round = 0; round < 8; round++) {
      const dir = tempDir();
      let db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      for (let i = 0; i < 2000; i += 100) await db.batch(Array.from({ length: 100 }, (_, j) => ({ type: 'put' as const, key: `k${i + j}`, value: valueOf(i + j) })));
      await db.compactRange('a', 'z'); // into .ldb tables
      await db.close();
      const tables = fs.readdirSync(dir).filter((f) => f.endsWith('.ldb'));
      expect(tables.length).toBeGreaterThan(0);
      for (const f of tables) {
        // One bit in the first half of the file: the data blocks (the index and footer are at the end).
        const b = fs.readFileSync(path.join(dir, f));
        b[Math.floor(((round + 1) / 18) * b.length)]! ^= 1 << round;
        fs.writeFileSync(path.join(dir, f), b);
      }
      db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      await db.open();
      try {
        for (let i = 0; i < 2000; i++) {
          try {
            const v = await db.get(`k${i}`);
            expect(v?.equals(valueOf(i)), `k${i} read back missing or different`).toBe(true);
          } catch (err) {
            expect((err as { code?: string }).code, String(err)).toBe('LEVEL_CORRUPTION');
            corrupt++;
          }
        }
      } finally {
        await db.close();
      }
    }
    expect(corrupt).toBeGreaterThan(0);
  });
});
