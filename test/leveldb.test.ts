/**
 * The LevelDB under the index and WAL verifies the checksum of every block it reads. classic-level
 * ships LevelDB with that off, and then a flipped bit in a table can read back as a missing key or
 * a different value, silently. patches/classic-level+3.0.0.patch turns it on and
 * scripts/postinstall.mjs builds the patched source; this fails when the prebuilt binary is the
 * one in use (as when that build failed).
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from '../index/leveldb.js';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';
import { fixture } from './paths.js';

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

/**
 * The same patch writes zeros 1 MiB ahead of the end of each LevelDB write-ahead log, so that a
 * synced write overwrites bytes already on disk instead of growing the file (patches/README.md).
 * LevelDB's log reader must take the zeros for padding: after a close, and after a kill -9 that
 * leaves them behind a torn tail.
 */
describe('LevelDB write-ahead logs written ahead with zeros', () => {
  const logsOf = (dir: string) => fs.readdirSync(dir).filter((f) => /^\d+\.log$/.test(f)).map((f) => path.join(dir, f));

  it('a log holds zeros past its records after synced writes, and reopens with every key', async () => {
    const dir = tempDir();
    let db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    for (let i = 0; i < 300; i++) await db.put(`k${i}`, valueOf(i), { sync: true });
    // 300 records of ~90 bytes: under 32 KiB of log, so everything from 512 KiB on is the zeros.
    const [log] = logsOf(dir);
    const bytes = fs.readFileSync(log!);
    expect(bytes.length).toBeGreaterThanOrEqual(1 << 20);
    expect(bytes.subarray(0, 32 << 10).some((b) => b !== 0)).toBe(true);
    expect(bytes.subarray(512 << 10).every((b) => b === 0)).toBe(true);
    await db.close();
    db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await db.open();
    try {
      for (let i = 0; i < 300; i++) expect((await db.get(`k${i}`))?.equals(valueOf(i)), `k${i}`).toBe(true);
    } finally {
      await db.close();
    }
  });

  it('writes without sync write no zeros ahead', async () => {
    const dir = tempDir();
    const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await db.open();
    try {
      for (let i = 0; i < 300; i++) await db.put(`k${i}`, valueOf(i));
      const sizes = logsOf(dir).map((f) => fs.statSync(f).size);
      expect(sizes.length).toBe(1);
      expect(sizes[0]).toBeGreaterThan(0);
      expect(sizes[0]).toBeLessThan(64 << 10);
    } finally {
      await db.close();
    }
  });

  it('a writer killed with SIGKILL leaves a database that opens with every acknowledged put', async () => {
    for (let round = 0; round < 4; round++) {
      const dir = tempDir();
      const child = spawn(process.execPath, [fixture('ldb-writer.js'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      // Killed at a different point each round, once it has acknowledged some puts.
      const after = 200 + round * 700;
      await new Promise<void>((resolve) => {
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.split('\n').length > after && !child.killed) child.kill('SIGKILL');
        });
        child.on('exit', () => resolve());
      });
      const acknowledged = out.split('\n').filter((l) => /^\d+$/.test(l)).length;
      expect(acknowledged).toBeGreaterThanOrEqual(after);
      expect(logsOf(dir).some((f) => fs.statSync(f).size >= 1 << 20)).toBe(true);
      const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      await db.open();
      try {
        for (let i = 0; i < acknowledged; i++) expect((await db.get(`k${i}`))?.equals(valueOf(i)), `k${i} of ${acknowledged}`).toBe(true);
      } finally {
        await db.close();
      }
    }
  });
});
