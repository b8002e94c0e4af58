/**
 * Ranged reads: db.get(hash, { start, end }) and db.stream(hash, { start, end }) give exactly the
 * bytes [start, end) of the value (end exclusive, clipped to the value), reading only the chunks
 * the range lies in. Checked against a Buffer oracle over values of many chunks.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { CountingVfs, pseudoRandom, tempDir } from './helpers.js';

const KEY = Buffer.alloc(32, 9);
// Small chunks, so a value of a few hundred KiB has about a hundred of them.
const SMALL = { key: KEY, blockSize: 64 * 1024, chunkSizes: { min: 512, avg: 2048, max: 8192 } };

/** The pieces stream() yields for the whole value: one per chunk, so their sizes are the chunk sizes. */
async function chunkSizes(db: OuroDB, hash: string): Promise<number[]> {
  const sizes: number[] = [];
  for await (const piece of db.stream(hash)) sizes.push(piece.byteLength);
  return sizes;
}

async function readRange(db: OuroDB, hash: string, range: { start?: number; end?: number }): Promise<Buffer> {
  const pieces: Uint8Array[] = [];
  for await (const piece of db.stream(hash, range)) pieces.push(piece);
  return Buffer.concat(pieces);
}

/** A deterministic stream of integers below n (the test's ranges are reproducible). */
function randomInts(seed: string): (n: number) => number {
  let state = crypto.createHash('sha256').update(seed).digest();
  return (n) => {
    state = crypto.createHash('sha256').update(state).digest();
    return state.readUInt32LE(0) % n;
  };
}

/** Compressible: text with repeats, which zstd shrinks. */
function compressible(length: number): Buffer {
  const words = ['alpha ', 'beta ', 'gamma ', 'delta ', 'epsilon\n'];
  const next = randomInts('words');
  const out: string[] = [];
  let n = 0;
  while (n < length) {
    const w = words[next(words.length)]!;
    out.push(w);
    n += w.length;
  }
  return Buffer.from(out.join('')).subarray(0, length);
}

describe('ranged reads', () => {
  it('gives the bytes of random ranges, chunk boundaries, empty and whole ranges, for chunked (incompressible and compressed), inline and empty values', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const values = {
        incompressible: pseudoRandom('range-random', 300_000),
        compressible: compressible(250_000),
        inline: pseudoRandom('range-inline', 3000),
        empty: Buffer.alloc(0),
      };
      const next = randomInts('ranges');
      for (const [name, value] of Object.entries(values)) {
        const { hash } = await db.put(value);
        const sizes = await chunkSizes(db, hash);
        if (value.length > 100_000) expect(sizes.length, `${name} has many chunks`).toBeGreaterThan(40);
        const check = async (start: number | undefined, end: number | undefined) => {
          const want = value.subarray(start ?? 0, Math.min(end ?? value.length, value.length));
          const range = { ...(start === undefined ? {} : { start }), ...(end === undefined ? {} : { end }) };
          expect(Buffer.from(await db.get(hash, range)).equals(want), `${name} get ${JSON.stringify(range)}`).toBe(true);
          expect((await readRange(db, hash, range)).equals(want), `${name} stream ${JSON.stringify(range)}`).toBe(true);
        };
        // Whole, open-ended, empty and past-the-end ranges.
        await check(undefined, undefined);
        await check(0, value.length);
        await check(undefined, Math.floor(value.length / 3));
        await check(Math.floor(value.length / 3), undefined);
        await check(7, 7);
        await check(value.length, value.length);
        await check(value.length, value.length + 10);
        await check(value.length + 5, value.length + 10);
        await check(Math.max(0, value.length - 5), value.length + 1000);
        // Every chunk boundary, one byte either side, and single bytes across it.
        let at = 0;
        for (const size of sizes.slice(0, -1)) {
          at += size;
          await check(at - 1, at + 1);
          await check(at, at + 1);
          await check(at - 1, at);
          await check(at - 1, undefined);
          await check(0, at);
        }
        // Random ranges.
        for (let i = 0; i < 120 && value.length > 0; i++) {
          const a = next(value.length + 1);
          const b = a + next(Math.min(value.length + 50, 40_000) + 1);
          await check(a, b);
        }
      }
      // The premise of "compressed": some chunk (the compressible value's) was stored compressed.
      expect((await db.stats()).compressionRatio).toBeGreaterThan(1.5);
    } finally {
      await db.close();
    }
  });

  it('reads only the chunks the range lies in', async () => {
    const dir = tempDir();
    const value = pseudoRandom('range-reads', 400_000);
    const first = await OuroDB.open(dir, SMALL);
    const { hash } = await first.put(value);
    await first.close();
    const vfs = new CountingVfs();
    // Reopened, so nothing of the value is cached: every byte it reads is counted.
    const db = await OuroDB.open(dir, { ...SMALL, fs: vfs });
    try {
      await db.stat(hash); // the record, read once and cached
      let before = vfs.readBytes;
      expect(Buffer.from(await db.get(hash)).equals(value)).toBe(true);
      // The premise: reading the whole value reads at least its bytes.
      expect(vfs.readBytes - before).toBeGreaterThanOrEqual(value.length);
      before = vfs.readBytes;
      const start = 250_000;
      expect(Buffer.from(await db.get(hash, { start, end: start + 10 })).equals(value.subarray(start, start + 10))).toBe(true);
      // At most two chunks (of at most 8 KiB each, with their entry headers) were read.
      expect(vfs.readBytes - before).toBeLessThanOrEqual(2 * (8192 + 200));
      before = vfs.readBytes;
      const tail = await readRange(db, hash, { start: value.length - 100_000 });
      expect(tail.equals(value.subarray(value.length - 100_000))).toBe(true);
      expect(vfs.readBytes - before).toBeLessThan(100_000 + 2 * (8192 + 200) + 100 * 200);
    } finally {
      await db.close();
    }
  });

  it('refuses a range that is not one with BadArgumentError', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const { hash } = await db.put(pseudoRandom('range-bad', 20_000));
      for (const range of [{ start: -1 }, { end: -1 }, { start: 1.5 }, { start: 10, end: 9 }, { start: '1' }, null, 5]) {
        await expect(db.get(hash, range as never), JSON.stringify(range)).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      }
      // The same check in stream(), before anything is read.
      await expect(readRange(db, hash, { start: 5, end: 2 })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await db.close();
    }
  });
});
