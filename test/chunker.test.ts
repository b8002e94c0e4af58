import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Chunker } from '../lib/chunker.js';
import { gearTable } from '../lib/crypto.js';
import { GEAR_WASM } from '../lib/gear-wasm.js';
import { BadArgumentError } from '../lib/errors.js';
import { pseudoRandom } from './helpers.js';

const gear = gearTable(crypto.randomBytes(32), crypto.randomBytes(16));
const sizes = { min: 2048, avg: 8192, max: 32768 };

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of it) out.push(Buffer.from(c));
  return out;
}

async function* pieces(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

describe('FastCDC chunker', () => {
  it('respects min and max, covers the input exactly, and averages near the target', () => {
    const c = new Chunker(gear, sizes);
    const data = pseudoRandom('cdc', 4 << 20);
    const chunks = [...c.chunkBytes(data)];
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    for (const ch of chunks.slice(0, -1)) {
      expect(ch.length).toBeGreaterThanOrEqual(sizes.min);
      expect(ch.length).toBeLessThanOrEqual(sizes.max);
    }
    const avg = data.length / chunks.length;
    expect(avg).toBeGreaterThan(sizes.avg / 2);
    expect(avg).toBeLessThan(sizes.avg * 2);
  });

  it('cuts exactly where the plain one-byte FastCDC loop in JavaScript does', () => {
    // The algorithm as docs/FORMAT.md-independent reference: roll, check the top-bit mask per byte.
    const reference = (buf: Uint8Array, start: number, end: number, s: typeof sizes): number => {
      const n = end - start;
      if (n <= s.min) return n;
      const bits = Math.log2(s.avg);
      const maskS = (0xffffffff << (32 - bits - 2)) | 0;
      const maskL = (0xffffffff << (32 - bits + 2)) | 0;
      let h = 0;
      for (let i = start + s.min; i < start + Math.min(s.max, n); i++) {
        h = ((h << 1) + gear[buf[i]!]!) | 0;
        if ((h & (i < start + Math.min(s.avg, n) ? maskS : maskL)) === 0) return i - start + 1;
      }
      return Math.min(s.max, n);
    };
    for (const s of [sizes, { min: 64, avg: 256, max: 1024 }, { min: 4097, avg: 16384, max: 65535 }]) {
      const c = new Chunker(gear, s);
      const data = pseudoRandom(`ref${s.min}`, 2 << 20);
      let cuts = 0;
      for (let start = 0; start < data.length; ) {
        // Ends short of `max` by 0-2 bytes: cuts at the limit, at the end of input and before it.
        const end = Math.min(data.length, start + s.max + (cuts % 3));
        const len = c.cut(data, start, end);
        expect(len).toBe(reference(data, start, end, s));
        start += len;
        cuts++;
      }
      expect(cuts).toBeGreaterThan(20);
    }
  });

  it('cuts values larger than its window the same way in memory and streamed, whatever the piece sizes', async () => {
    // The window holds 2 * max bytes: a 1 MiB value slides it many times.
    const c = new Chunker(gear, sizes);
    const data = pseudoRandom('slide', 1 << 20);
    const inMemory = [...c.chunkBytes(data)];
    let at = 0;
    for (const chunk of inMemory) {
      expect(chunk.length).toBe(c.cut(data, at, data.length));
      at += chunk.length;
    }
    expect(at).toBe(data.length);
    const streamed = await collect(c.chunkStream(pieces(data, 3 * sizes.max + 5)));
    expect(streamed.map((b) => b.length)).toEqual(inMemory.map((b) => b.length));
    // Two passes at once (concurrent puts) each get their own window.
    const a = c.chunkBytes(data);
    const b = c.chunkBytes(pseudoRandom('other', 1 << 20));
    const first = a.next().value!;
    b.next();
    expect(Buffer.from(first).equals(inMemory[0]!)).toBe(true);
    expect([first, ...a].map((x) => x.length)).toEqual(inMemory.map((x) => x.length));
  });

  it('runs the gear loop compiled from lib/gear.wat (lib/gear-wasm.ts is up to date)', async () => {
    // @ts-expect-error: a plain .mjs script without type declarations
    const { compileGear } = (await import('../scripts/build-gear-wasm.mjs')) as { compileGear: () => Promise<Buffer> };
    expect((await compileGear()).equals(GEAR_WASM)).toBe(true);
  });

  it('cuts a stream exactly as it cuts the same bytes in memory, whatever the piece sizes', async () => {
    const c = new Chunker(gear, sizes);
    const data = pseudoRandom('stream', 1 << 20);
    const expected = [...c.chunkBytes(data)].map((b) => Buffer.from(b));
    for (const piece of [1, 7, 4096, 100_000, 1 << 20]) {
      const got = await collect(c.chunkStream(pieces(data, piece)));
      expect(got.map((b) => b.length)).toEqual(expected.map((b) => b.length));
    }
  });

  it('resynchronises after an insertion: most chunks are shared with the original', () => {
    const c = new Chunker(gear, sizes);
    const data = pseudoRandom('edit', 2 << 20);
    const edited = Buffer.concat([data.subarray(0, 500_000), Buffer.from('inserted bytes'), data.subarray(500_000)]);
    const ids = (b: Buffer) => new Set([...c.chunkBytes(b)].map((x) => crypto.createHash('sha256').update(x).digest('hex')));
    const a = ids(data);
    const b = ids(edited);
    const shared = [...b].filter((x) => a.has(x)).length;
    expect(shared / a.size).toBeGreaterThan(0.9);
  });

  it('cuts differently under a different key (the gear table is secret)', () => {
    const data = pseudoRandom('keyed', 1 << 20);
    const a = [...new Chunker(gear, sizes).chunkBytes(data)].map((x) => x.length);
    const b = [...new Chunker(gearTable(crypto.randomBytes(32), crypto.randomBytes(16)), sizes).chunkBytes(data)].map((x) => x.length);
    expect(a).not.toEqual(b);
  });

  it('rejects impossible sizes and non-byte stream items', async () => {
    expect(() => new Chunker(gear, { min: 100, avg: 1000, max: 4000 })).toThrow(BadArgumentError);
    expect(() => new Chunker(gear, { min: 5000, avg: 4096, max: 8192 })).toThrow(BadArgumentError);
    const c = new Chunker(gear, sizes);
    async function* bad(): AsyncGenerator<unknown> {
      yield 'a string';
    }
    await expect(collect(c.chunkStream(bad() as AsyncIterable<Uint8Array>))).rejects.toThrow(BadArgumentError);
  });
});
