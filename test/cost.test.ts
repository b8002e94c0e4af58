// Cost per byte (issue 34): what ingest allocates per chunk and gives back at once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { readReusing } from '../bin/cli/put.js';
import { AeadKey, freeNow, nextNonce, xchachaOpen, xchachaSealInto } from '../lib/crypto.js';
import { maybeCompress } from '../lib/entry.js';

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
