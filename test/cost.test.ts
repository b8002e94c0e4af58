// Cost per byte (issue 34): what ingest allocates per chunk and gives back at once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { READ_AHEAD_BYTES, putPaths, readReusing, writeValue } from '../bin/cli/put.js';
import { AeadKey, freeNow, nextNonce, xchachaOpen, xchachaSealInto } from '../lib/crypto.js';
import { maybeCompress } from '../lib/entry.js';
import { OuroDB } from '../lib/index.js';
import { CountingVfs, pseudoRandomStream, tempDir } from './helpers.js';
import type { VfsFile } from '../lib/vfs/index.js';

const MiB = 1 << 20;

afterEach(() => vi.restoreAllMocks());

describe('sealing hands the cipher output back at once', () => {
  it('sealing 32 chunks of 1 MiB leaves no ciphertext buffers behind for the collector', () => {
    const key = new AeadKey(crypto.randomBytes(32));
    const plain = crypto.randomBytes(MiB);
    const out = Buffer.allocUnsafeSlow(MiB + 16);
    const aad = Buffer.alloc(8);
    const before = process.memoryUsage().arrayBuffers;
    let sealed = 0;
    for (let i = 0; i < 32; i++) {
      const nonce = nextNonce();
      sealed += xchachaSealInto(key, nonce, plain, aad, out, 0);
      if (i === 31) expect(xchachaOpen(key, nonce, out, aad).equals(plain)).toBe(true);
    }
    expect(sealed).toBe(32 * (MiB + 16));
    // Left to the collector, 32 MiB of ciphertext would still be counted here (a full collection
    // starts only after ~64 MiB of external memory).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * MiB);
  });

  it('freeNow detaches only a buffer that owns its whole ArrayBuffer', () => {
    const own = Buffer.allocUnsafeSlow(64 * 1024);
    freeNow(own);
    expect(own.buffer.byteLength).toBe(0);
    const big = Buffer.allocUnsafeSlow(128 * 1024);
    const slice = big.subarray(1024, 64 * 1024 + 1024);
    freeNow(slice);
    expect(big.buffer.byteLength).toBe(128 * 1024);
    const small = Buffer.allocUnsafeSlow(100);
    freeNow(small);
    expect(small.byteLength).toBe(100);
  });
});

describe('compression probe', () => {
  it('a large random chunk is not handed to zstd at all, a large text one still is', () => {
    const spy = vi.spyOn(zlib, 'zstdCompressSync');
    expect(maybeCompress(crypto.randomBytes(MiB))).toBeUndefined();
    expect(spy).not.toHaveBeenCalled();
    const text = Buffer.from('the quick brown fox jumps over the lazy dog, again and again; '.repeat(20_000).slice(0, MiB));
    const packed = maybeCompress(text);
    expect(spy).toHaveBeenCalled();
    expect(packed!.length).toBeLessThan(text.length / 4);
    expect(zlib.zstdDecompressSync(packed!).equals(text)).toBe(true);
  });
});

describe('`ouro put` reads a large file into one reused buffer', () => {
  it('yields the file in order from a single ArrayBuffer and closes the descriptor', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-cost-'));
    try {
      const file = path.join(dir, 'f');
      const data = crypto.randomBytes(3 * MiB + 12345);
      fs.writeFileSync(file, data);
      const fd = fs.openSync(file, 'r');
      const memories = new Set<ArrayBufferLike>();
      const copies: Buffer[] = [];
      for await (const piece of readReusing(fd)) {
        memories.add(piece.buffer);
        copies.push(Buffer.from(piece));
      }
      expect(copies.length).toBeGreaterThan(3); // the premise: several reads
      expect(memories.size).toBe(1);
      expect(Buffer.concat(copies).equals(data)).toBe(true);
      expect(() => fs.fstatSync(fd)).toThrow(); // closed
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('restore hands each chunk back once it is written', () => {
  it('streaming 32 MiB to a file leaves neither sealed nor plain chunk buffers for the collector', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    try {
      const { hash } = await db.put(pseudoRandomStream('restore', 32 * MiB));
      const want = crypto.createHash('sha256');
      for await (const piece of db.stream(hash)) want.update(piece);
      const file = path.join(tempDir(), 'out');
      const pieces: Uint8Array[] = [];
      const seen = async function* () {
        for await (const piece of db.stream(hash)) {
          pieces.push(piece);
          yield piece;
        }
      };
      const before = process.memoryUsage().arrayBuffers;
      await writeValue(seen(), file);
      const grown = process.memoryUsage().arrayBuffers - before;
      expect(pieces.length).toBeGreaterThan(32); // the premise: many chunks (256 KiB on average)
      expect(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')).toBe(want.digest('hex'));
      // Every piece written was freed, and so were the sealed bytes each was opened from: left to
      // the collector, 64 MiB of the two would still be counted here.
      expect(pieces.every((p) => p.byteLength === 0)).toBe(true);
      expect(grown).toBeLessThan(8 * MiB);
    } finally {
      await db.close();
    }
  });

  it('the sealed bytes of each chunk read are freed once opened', async () => {
    // The file system seam sees the buffer each chunk's sealed bytes are read into.
    const reads: Buffer[] = [];
    class Recording extends CountingVfs {
      override async open(p: string, flags: 'r' | 'r+'): Promise<VfsFile> {
        const f = await super.open(p, flags);
        return { ...f, read: (buf, offset, length, position) => (length >= 64 * 1024 && reads.push(buf), f.read(buf, offset, length, position)) };
      }
    }
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const first = await OuroDB.open(dir, { key });
    const { hash } = await first.put(pseudoRandomStream('sealed', 8 * MiB));
    await first.close();
    const db = await OuroDB.open(dir, { key, fs: new Recording() });
    try {
      let bytes = 0;
      for await (const piece of db.stream(hash)) bytes += piece.byteLength;
      expect(bytes).toBe(8 * MiB);
      expect(reads.length).toBeGreaterThan(8); // the premise: the chunks were read through the seam
      expect(reads.filter((b) => b.byteLength !== 0)).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('a piece of an inline value is a copy: changing it changes no later read', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    try {
      const { hash } = await db.put('small value');
      const first = await db.get(hash);
      first.fill(0x21);
      expect(Buffer.from(await db.get(hash)).toString()).toBe('small value');
    } finally {
      await db.close();
    }
  });
});

describe('`ouro put` of many files bounds the bytes read ahead', () => {
  it('files of 1-4 MiB read and not yet stored stay within READ_AHEAD_BYTES, not 64 files', async () => {
    const dir = tempDir();
    const sizes = Array.from({ length: 40 }, (_, i) => MiB + ((i * 997_331) % (3 * MiB)));
    sizes.forEach((n, i) => fs.writeFileSync(path.join(dir, `f${String(i).padStart(2, '0')}`), crypto.randomBytes(n)));
    // A database that holds each value a while before its put returns, as a busy one does.
    let held = 0;
    let most = 0;
    let atOnce = 0;
    let mostAtOnce = 0;
    const put = async (value: unknown) => {
      const n = (value as Buffer).length ?? 0;
      held += n;
      atOnce++;
      most = Math.max(most, held);
      mostAtOnce = Math.max(mostAtOnce, atOnce);
      await new Promise((r) => setTimeout(r, 5));
      held -= n;
      atOnce--;
      return { hash: crypto.randomBytes(32).toString('hex'), size: n };
    };
    const db = {
      put,
      putHinted: async (read: () => Promise<unknown>) => ({ ...(await put(await read())), read: true }),
      flush: async () => {},
    };
    const report = await putPaths(db as unknown as OuroDB, [dir], {});
    expect(report.files).toBe(40);
    expect(report.failed).toEqual([]);
    expect(mostAtOnce).toBeGreaterThan(2); // the premise: puts still overlap
    expect(sizes.reduce((a, b) => a + b, 0)).toBeGreaterThan(4 * READ_AHEAD_BYTES); // would all fit in 64 puts
    expect(most).toBeLessThanOrEqual(READ_AHEAD_BYTES);
  });
});
