import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { ChunkSlab } from '../lib/chunk-slab.js';
import { EntryKind } from '../blockstore/format.js';
import { DatabaseKeys } from '../lib/crypto.js';
import { openEntry } from '../lib/entry.js';
import { SLAB_BYTES, SealPool } from '../lib/seal-pool.js';
import { pseudoRandom, pseudoRandomStream, tempDir, vfsWithWritev } from './helpers.js';

describe('ChunkSlab', () => {
  it('never hands out bytes of a slot not given back, whatever the order slots come back in', () => {
    const slab = new ChunkSlab(1 << 20);
    const rnd = pseudoRandom('slab-ring', 200_000);
    let r = 0;
    const next = () => rnd.readUInt32LE((r = (r + 4) % (rnd.length - 4)));
    const live = new Map<number, number>(); // at -> end
    let refused = 0;
    for (let step = 0; step < 20_000; step++) {
      if (live.size > 0 && next() % 3 === 0) {
        // Give back a random live slot (out of order, as a dropped chunk or a later block's write).
        const ats = [...live.keys()];
        const at = ats[next() % ats.length]!;
        live.delete(at);
        slab.give(at);
        continue;
      }
      const length = 1 + (next() % (256 * 1024));
      const at = slab.take(length);
      if (at < 0) {
        refused++;
        continue;
      }
      expect(at + length).toBeLessThanOrEqual(slab.memory.byteLength);
      for (const [a, end] of live) expect(at + length <= a || at >= end).toBe(true);
      live.set(at, at + length);
    }
    expect(refused).toBeGreaterThan(0); // the ring did fill up
    for (const at of live.keys()) slab.give(at);
    expect(slab.taken).toBe(0);
    expect(slab.take(1 << 20)).toBe(0); // all of it free again
  });

  it('refuses (-1) rather than wait when the oldest slot is still taken', () => {
    const slab = new ChunkSlab(4096);
    const a = slab.take(2048);
    const b = slab.take(2048);
    expect([a, b]).toEqual([0, 2048]);
    expect(slab.take(64)).toBe(-1);
    slab.give(b); // behind a: not free yet
    expect(slab.take(64)).toBe(-1);
    slab.give(a);
    expect(slab.take(4096)).toBe(0);
  });
});

describe('seal pool and slab', () => {
  it('seals a chunk in its slot, and frees the slot on release or drop, not before', async () => {
    const material = { masterKey: crypto.randomBytes(32), databaseId: crypto.randomBytes(16) };
    const keys = new DatabaseKeys(material.masterKey, material.databaseId);
    const pool = new SealPool(material, { size: 1, chunkMax: 1024 * 1024, slabBytes: 4 * 1024 * 1024 });
    const plain = pseudoRandom('slab-round-trip', 300 * 1024);
    const chunk = pool.takeChunk(plain.length);
    expect(chunk.buffer).toBe(pool.slab.memory);
    chunk.set(plain);
    const ticket = await pool.identify(chunk, true);
    expect(ticket.id.equals(keys.chunkId(plain))).toBe(true);
    // A put holds every chunk's id until its record commits: the id is copied into Node's pool of
    // small buffers, not kept as the 32-byte ArrayBuffer structured clone made for it.
    expect(ticket.id.buffer.byteLength).toBe(Buffer.poolSize);
    const sealed = await pool.seal(ticket, EntryKind.Chunk, true);
    expect(sealed.bytes.buffer).toBe(pool.slab.memory); // sealed in place
    expect(sealed.bytes.byteOffset).toBe(chunk.byteOffset);
    expect(openEntry(keys.data, Buffer.from(sealed.bytes), { id: ticket.id, kind: EntryKind.Chunk }, 'mem', 0).equals(plain)).toBe(true);
    // A caller's bytes are copied into a slot; dropping the chunk frees it.
    const callers = pseudoRandom('slab-dropped', 40 * 1024);
    const dropped = await pool.identify(callers, false);
    expect(pool.slab.taken).toBe(2);
    pool.drop(dropped);
    expect(pool.slab.taken).toBe(2); // behind the sealed one, which is still unwritten
    sealed.release!();
    expect(pool.slab.taken).toBe(0);
    await pool.close();
  });
});

describe('identified and sealed in one round trip', () => {
  it('seals in the chunk\'s slot, answers with the hash in an array of its own, and frees the slot on release', async () => {
    const material = { masterKey: crypto.randomBytes(32), databaseId: crypto.randomBytes(16) };
    const keys = new DatabaseKeys(material.masterKey, material.databaseId);
    const pool = new SealPool(material, { size: 1, chunkMax: 1024 * 1024, slabBytes: 4 * 1024 * 1024 });
    const plain = pseudoRandom('one-trip', 200 * 1024);
    const chunk = pool.takeChunk(plain.length);
    chunk.set(plain);
    const sealed = await pool.identifyAndSeal(chunk, true, EntryKind.Chunk, true);
    expect(sealed.id.equals(keys.chunkId(plain))).toBe(true);
    expect(sealed.bytes.buffer).toBe(pool.slab.memory);
    expect(sealed.hash.buffer.byteLength).toBe(32); // its own array, not a view of Node's 8 KiB pool
    expect(openEntry(keys.data, Buffer.from(sealed.bytes), { id: sealed.id, kind: EntryKind.Chunk }, 'mem', 0).equals(plain)).toBe(true);
    expect(pool.slab.taken).toBe(1);
    sealed.release!();
    expect(pool.slab.taken).toBe(0);
    await pool.close();
  });

  it('a value streamed twice is stored once', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const chunkSizes = { min: 32 * 1024, avg: 64 * 1024, max: 256 * 1024 };
    const db = await OuroDB.open(dir, { key, chunkSizes });
    const total = 8 * 1024 * 1024;
    const first = await db.put(pseudoRandomStream('twice', total, 100_000));
    const after = (await db.stats()).uniqueBytes;
    const second = await db.put(pseudoRandomStream('twice', total, 100_000));
    expect(second.hash).not.toBe(first.hash); // records carry their creation time
    expect((await db.stats()).uniqueBytes).toBe(after); // the chunks deduplicated
    expect(Buffer.from(await db.get(second.hash)).equals(pseudoRandom('twice', total))).toBe(true);
    await db.close();
    const again = await OuroDB.open(dir, { key, chunkSizes });
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });
});

describe('chunks in the slab on their way to disk', () => {
  it('keep their bytes until their write has finished, and read back intact', async () => {
    // Every block write waits 10 ms before it starts. Meanwhile two puts keep cutting chunks into
    // the slab and the workers seal them there; a slot given back before its write finished would
    // be overwritten by a later chunk: the bytes handed to writev would change before they reach
    // the file (checked here), and the entry would fail authentication when read.
    let slabWrites = 0;
    let changed = 0;
    const fsWithSlowWrites = vfsWithWritev(async (file, bufs, position) => {
      const copies = bufs.map((b) => Buffer.from(b));
      if (bufs.some((b) => b.buffer instanceof SharedArrayBuffer)) slabWrites++;
      await new Promise((r) => setTimeout(r, 10));
      const n = await file.writev(bufs, position);
      bufs.forEach((b, i) => {
        if (!b.equals(copies[i]!)) changed++;
      });
      return n;
    });
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const chunkSizes = { min: 32 * 1024, avg: 64 * 1024, max: 256 * 1024 };
    // sealInlineBytes 0: the workers seal from the first chunk (by default a handle seals its
    // first 64 MiB itself, and a chunk sealed here leaves its slot at once: covered below).
    const db = await OuroDB.open(dir, { key, chunkSizes, fs: fsWithSlowWrites, sealInlineBytes: 0 });
    // 2 x 20 MiB through the slab (SLAB_BYTES): the ring wraps and fills (chunks then take buffers of their own).
    const total = 20 * 1024 * 1024;
    const seeds = ['slab-a', 'slab-b'];
    const puts = await Promise.all(seeds.map((seed) => db.put(pseudoRandomStream(seed, total, 100_000))));
    expect(slabWrites).toBeGreaterThan(3);
    expect(changed).toBe(0);
    for (const [i, seed] of seeds.entries()) expect(Buffer.from(await db.get(puts[i]!.hash)).equals(pseudoRandom(seed, total))).toBe(true);
    await db.close();
    const again = await OuroDB.open(dir, { key, chunkSizes });
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });
  it('sealed on the caller\'s thread (before the first worker) are sealed in their slot, which goes back once written', async () => {
    // The first sealInlineBytes of a handle are sealed on the main thread. They are sealed in
    // the chunk's own slot, as a worker seals them (an entry of its own per chunk was ~230 fresh
    // buffers of ~280 KiB in a large put's first second), so the block's writes come from the
    // slab, and a slot goes back only once its write has finished: no byte handed to writev may
    // change before then. Were slots never given back, the ring would stay full after the
    // inline phase and no later write would come from the slab.
    // Counted in bytes, not writev calls: how many writes a block's bytes take depends on how
    // they batch behind the slow writes (a run here had exactly 3 calls for 24 MiB).
    let slabBytes = 0;
    let changed = 0;
    const slowFs = vfsWithWritev(async (file, bufs, position) => {
      const copies = bufs.map((b) => Buffer.from(b));
      for (const b of bufs) if (b.buffer instanceof SharedArrayBuffer) slabBytes += b.length;
      await new Promise((r) => setTimeout(r, 10));
      const n = await file.writev(bufs, position);
      bufs.forEach((b, i) => {
        if (!b.equals(copies[i]!)) changed++;
      });
      return n;
    });
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const chunkSizes = { min: 32 * 1024, avg: 64 * 1024, max: 256 * 1024 };
    const db = await OuroDB.open(dir, { key, chunkSizes, fs: slowFs, sealInlineBytes: 24 * 1024 * 1024 });
    const inline = await db.put(pseudoRandomStream('inline', 24 * 1024 * 1024, 100_000));
    // Sealed in place (0 when each entry was a buffer of its own); behind the slow writes the ring
    // fills (4.03-4.05 MiB of a 4 MiB slab in three runs here) and the rest take buffers of their own.
    expect(slabBytes).toBeGreaterThan(SLAB_BYTES / 2);
    const before = slabBytes;
    const pooled = await db.put(pseudoRandomStream('pooled', 20 * 1024 * 1024, 100_000));
    expect(slabBytes - before).toBeGreaterThan(SLAB_BYTES); // the workers' entries, in slots the inline phase gave back
    expect(changed).toBe(0);
    expect(Buffer.from(await db.get(inline.hash)).equals(pseudoRandom('inline', 24 * 1024 * 1024))).toBe(true);
    expect(Buffer.from(await db.get(pooled.hash)).equals(pseudoRandom('pooled', 20 * 1024 * 1024))).toBe(true);
    expect((await db.check()).problems).toEqual([]);
    await db.close();
  });
  it('an aborted put and a put whose source fails give their slots back: later writes still come from the slab', async () => {
    // The ring frees a slot only once every older slot is back (lib/chunk-slab.ts), so one slot
    // kept by a put that ended early would leave every later chunk in a buffer of its own once
    // the ring has gone round (SLAB_BYTES). The puts after the failures write 48 MiB: most of it
    // must come from the slab.
    let slabBytes = 0;
    const countingFs = vfsWithWritev(async (file, bufs, position) => {
      for (const b of bufs) if (b.buffer instanceof SharedArrayBuffer) slabBytes += b.length;
      return file.writev(bufs, position);
    });
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const chunkSizes = { min: 32 * 1024, avg: 64 * 1024, max: 256 * 1024 };
    const db = await OuroDB.open(dir, { key, chunkSizes, fs: countingFs, sealInlineBytes: 0 });
    // 16 MiB streamed in 256 KiB pieces; once 3 MiB have gone, `atCut` runs before each piece,
    // while the put's chunks are in slots on their way.
    async function* cutShort(seed: string, atCut: () => void): AsyncGenerator<Uint8Array> {
      let sent = 0;
      for await (const piece of pseudoRandomStream(seed, 16 * 1024 * 1024, 256 * 1024)) {
        if (sent >= 3 * 1024 * 1024) atCut();
        sent += piece.length;
        yield piece;
      }
    }
    let aborted = 0;
    let failed = 0;
    for (let round = 0; round < 4; round++) {
      const controller = new AbortController();
      await db.put(cutShort(`abort${round}`, () => controller.abort(new Error('given up'))), { signal: controller.signal }).catch((err: unknown) => {
        if ((err as Error).message === 'given up') aborted++;
      });
      const breakSource = () => {
        throw new Error('source broke');
      };
      await db.put(cutShort(`fail${round}`, breakSource)).catch((err: unknown) => {
        if ((err as Error).message === 'source broke') failed++;
      });
    }
    // The premise: every put ended early, in the way it was meant to.
    expect([aborted, failed]).toEqual([4, 4]);
    const before = slabBytes;
    expect(before).toBeGreaterThan(0);
    const after = await db.put(pseudoRandomStream('after', 48 * 1024 * 1024, 1 << 20));
    expect(slabBytes - before).toBeGreaterThan(32 * 1024 * 1024);
    expect(Buffer.from(await db.get(after.hash)).equals(pseudoRandom('after', 48 * 1024 * 1024))).toBe(true);
    expect((await db.check()).problems).toEqual([]);
    await db.close();
  });
});
