/**
 * Bit rot: single bits and bytes flipped at random in block files, open block files and the
 * index directory. Every read returns the bytes that were written or a typed error, never other
 * data; check() names every damaged block; a destroyed index is rebuilt from the blocks.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OuroDB, OuroError } from '../lib/index.js';
import { filesUnder } from './files.js';
import { pseudoRandom, tempDir } from './helpers.js';
import { fixture } from './paths.js';

const key = Buffer.alloc(32, 8);
const open = (dir: string) => OuroDB.open(dir, { key, blockSize: 64 * 1024, chunkSizes: { min: 4096, avg: 16384, max: 65536 } });
const valueOf = (i: number) => pseudoRandom(`rot${i}`, [100, 3000, 20_000, 90_000][i % 4]!);

function flip(file: string, rnd: () => number, bytes: number): void {
  const b = fs.readFileSync(file);
  if (b.length === 0) return;
  for (let n = 0; n < bytes; n++) {
    const at = Math.floor(rnd() * b.length);
    b[at]! ^= rnd() < 0.5 ? 1 << Math.floor(rnd() * 8) : 1 + Math.floor(rnd() * 255);
  }
  fs.writeFileSync(file, b);
}

/** Every key reads back its own value or fails with an OuroError; never another value. */
async function readsAreRightOrTyped(db: OuroDB, count: number): Promise<{ right: number; typed: number }> {
  let right = 0;
  let typed = 0;
  for (let i = 0; i < count; i++) {
    try {
      const got = Buffer.from(await db.getByKey(`k${i}`));
      expect(got.equals(valueOf(i)), `k${i} returned other data`).toBe(true);
      right++;
    } catch (err) {
      if (!(err instanceof OuroError)) throw err;
      typed++;
    }
  }
  return { right, typed };
}

async function populate(dir: string, count: number): Promise<void> {
  const db = await open(dir);
  for (let i = 0; i < count; i++) await db.put(valueOf(i), { key: `k${i}` });
  await db.close();
}

describe('bit rot', () => {
  it('in sealed blocks: reads are right or typed errors, and check names every damaged block', async () => {
    for (let round = 0; round < 6; round++) {
      const dir = tempDir();
      await populate(dir, 40);
      const seed = crypto.randomBytes(4).readUInt32LE(0);
      let s = seed;
      const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
      const blocks = filesUnder(path.join(dir, 'blocks'));
      const damaged = blocks.filter(() => rnd() < 0.3);
      for (const f of damaged) flip(f, rnd, 1 + Math.floor(rnd() * 3));
      const db = await open(dir);
      try {
        await readsAreRightOrTyped(db, 40);
        const report = await db.check({ readData: true });
        const named = new Set(report.problems.map((p) => p.block));
        for (const f of damaged) {
          const id = path.basename(f, '.blk');
          expect(named.has(id), `seed ${seed}: damage in ${id} not reported`).toBe(true);
        }
      } finally {
        await db.close();
      }
    }
  });

  it('in open block files of a crash image: open refuses with a typed error or everything reads right', async () => {
    for (let round = 0; round < 6; round++) {
      const dir = tempDir();
      const db = await OuroDB.open(dir, { key, blockSize: 16 << 20 });
      for (let i = 0; i < 20; i++) await db.put(valueOf(i), { key: `k${i}` });
      const image = tempDir();
      fs.cpSync(dir, image, { recursive: true });
      await db.close();
      const open = filesUnder(path.join(image, 'open'));
      expect(open.length).toBe(1);
      let s = round + 1;
      flip(open[0]!, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32), 1);
      const reopened = await OuroDB.open(image, { key }).catch((err: unknown) => {
        expect(err).toBeInstanceOf(OuroError);
        return undefined;
      });
      if (reopened) {
        try {
          expect((await readsAreRightOrTyped(reopened, 20)).typed).toBe(0);
        } finally {
          await reopened.close();
        }
      }
    }
  });

  it('in the index directory: reads are right or typed errors; a destroyed index is rebuilt', async () => {
    // Each damaged index is opened and read in a child process. Reads verify LevelDB's block
    // checksums (patches/README.md), but compactions do not (paranoid_checks is off), and a
    // flipped bit that yields a key shorter than 8 bytes trips an assert() in LevelDB
    // (dbformat.h, ExtractUserKey) that aborts the whole process (seen once, before reads were
    // verified, taking the test runner down with it). That abort is a known limit
    // (docs/design.md); what must never happen is other data.
    let completed = 0;
    for (let round = 0; round < 6; round++) {
      const dir = tempDir();
      await populate(dir, 40);
      let s = round + 7;
      const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
      for (const f of filesUnder(path.join(dir, 'index')).filter((f) => /\.(ldb|log)$/.test(f))) flip(f, rnd, 1 + Math.floor(rnd() * 4));
      const r = spawnSync(process.execPath, [fixture('damaged-index-reader.js'), dir, key.toString('hex'), '40'], { encoding: 'utf8' });
      if (r.signal === 'SIGABRT' && /leveldb.*Assertion/.test(r.stderr)) continue;
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      const lines = r.stdout.trim().split('\n');
      expect(lines.at(-1)).toBe('done');
      for (const line of lines.slice(0, -1)) {
        const [what, i, detail] = line.split(' ');
        if (what === 'read') expect(detail, `k${i} returned other data`).toBe(crypto.createHash('sha256').update(valueOf(Number(i))).digest('hex'));
        else expect(['typed', 'open-typed'], line).toContain(what);
      }
      completed++;
    }
    expect(completed).toBeGreaterThan(0);
    // Destroyed outright: every index file overwritten with garbage. Open rebuilds from the blocks.
    const dir = tempDir();
    await populate(dir, 40);
    for (const f of filesUnder(path.join(dir, 'index'))) fs.writeFileSync(f, crypto.randomBytes(fs.statSync(f).size || 64));
    const db = await open(dir);
    try {
      expect(await readsAreRightOrTyped(db, 40)).toEqual({ right: 40, typed: 0 });
    } finally {
      await db.close();
    }
  });
});
