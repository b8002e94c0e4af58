import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EntryKind, FLAG_ZSTD } from '../blockstore/format.js';
import { ChunkBuffers } from '../lib/chunk-buffers.js';
import { DatabaseKeys } from '../lib/crypto.js';
import { SEAL_OVERHEAD_BYTES, openEntry, sealEntry } from '../lib/entry.js';
import { SealPool } from '../lib/seal-pool.js';
import { pseudoRandom } from './helpers.js';

const KiB = 1024;

describe('chunk buffers', () => {
  it('lends power-of-two buffers with room to seal, and lends a returned one again', () => {
    const pool = new ChunkBuffers(32 * KiB, 1024 * KiB, 4 * 1024 * KiB);
    const a = pool.take(100 * KiB);
    expect(a.length).toBe(100 * KiB);
    expect(a.byteOffset).toBe(0);
    expect(a.buffer.byteLength).toBe(128 * KiB + SEAL_OVERHEAD_BYTES);
    // A chunk of exactly a power of two fits its class; the largest chunk fits the largest class.
    expect(pool.take(64 * KiB).buffer.byteLength).toBe(64 * KiB + SEAL_OVERHEAD_BYTES);
    expect(pool.take(1024 * KiB).buffer.byteLength).toBe(1024 * KiB + SEAL_OVERHEAD_BYTES);
    pool.give(a.buffer as ArrayBuffer);
    expect(pool.idleBytes).toBe(a.buffer.byteLength);
    const b = pool.take(90 * KiB);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.idleBytes).toBe(0);
    // The pool hands one buffer to one taker: after it is taken it is no longer spare.
    expect(pool.take(90 * KiB).buffer).not.toBe(a.buffer);
  });

  it('gives chunks outside the pooled range buffers of their own, and never keeps them', () => {
    const pool = new ChunkBuffers(32 * KiB, 1024 * KiB, 4 * 1024 * KiB);
    for (const n of [0, 1, 32 * KiB - 1, 1024 * KiB + 1]) {
      const b = pool.take(n);
      expect([b.length, b.byteOffset, b.buffer.byteLength]).toEqual([n, 0, n]);
      pool.give(b.buffer as ArrayBuffer);
    }
    expect(pool.idleBytes).toBe(0);
  });

  it('keeps no foreign, duplicate or detached buffer, and no more than its idle limit', () => {
    const pool = new ChunkBuffers(32 * KiB, 1024 * KiB, 300 * KiB);
    pool.give(new ArrayBuffer(128 * KiB)); // no room to seal: not one of ours
    pool.give(new ArrayBuffer(100 * KiB + SEAL_OVERHEAD_BYTES)); // not a power of two
    pool.give(new ArrayBuffer(2048 * KiB + SEAL_OVERHEAD_BYTES)); // larger than the largest chunk needs
    expect(pool.idleBytes).toBe(0);
    const a = pool.take(128 * KiB).buffer as ArrayBuffer;
    pool.give(a);
    pool.give(a);
    expect(pool.idleBytes).toBe(a.byteLength);
    const moved = pool.take(128 * KiB).buffer as ArrayBuffer;
    structuredClone(moved, { transfer: [moved] }); // what postMessage does: detached here
    pool.give(moved);
    expect(pool.idleBytes).toBe(0);
    const three = [pool.take(128 * KiB), pool.take(128 * KiB), pool.take(128 * KiB)];
    for (const b of three) pool.give(b.buffer as ArrayBuffer);
    expect(pool.idleBytes).toBe(2 * (128 * KiB + SEAL_OVERHEAD_BYTES));
  });
});

describe('sealing in place', () => {
  const keys = new DatabaseKeys(crypto.randomBytes(32), crypto.randomBytes(16));

  it('seals into the buffer the plaintext lies in, and the entry opens to the plaintext', () => {
    const pool = new ChunkBuffers(32 * KiB, 1024 * KiB, 0);
    for (const [name, plain] of [
      ['random', pseudoRandom('in-place', 200 * KiB)],
      ['text', Buffer.from('a line of text that compresses well\n'.repeat(6000))],
    ] as const) {
      const chunk = pool.take(plain.length);
      chunk.set(plain);
      const id = keys.chunkId(plain);
      const whole = Buffer.from(chunk.buffer, chunk.byteOffset);
      const sealed = sealEntry(keys.data, EntryKind.Chunk, id, chunk, true, whole);
      expect({ name, inPlace: sealed.bytes.buffer === chunk.buffer }).toEqual({ name, inPlace: true });
      expect({ name, zstd: (sealed.flags & FLAG_ZSTD) !== 0 }).toEqual({ name, zstd: name === 'text' });
      expect(sealed.hash.equals(crypto.createHash('sha256').update(sealed.bytes).digest())).toBe(true);
      expect(openEntry(keys.data, Buffer.from(sealed.bytes), { id, kind: EntryKind.Chunk }, 'mem', 0).equals(plain)).toBe(true);
    }
  });

  it('seals into a buffer of its own when the one offered is too small', () => {
    const plain = pseudoRandom('too-small', 50 * KiB);
    const into = Buffer.alloc(plain.length + SEAL_OVERHEAD_BYTES - 1);
    const id = keys.chunkId(plain);
    const sealed = sealEntry(keys.data, EntryKind.Chunk, id, plain, true, into);
    expect(sealed.bytes.buffer).not.toBe(into.buffer);
    expect(into.equals(Buffer.alloc(into.length))).toBe(true); // left untouched
    expect(openEntry(keys.data, sealed.bytes, { id, kind: EntryKind.Chunk }, 'mem', 0).equals(plain)).toBe(true);
  });
});

describe('seal pool buffers', () => {
  it('a sealed chunk comes back in the buffer it was sent in, and a dropped one comes back spare', async () => {
    const material = { masterKey: crypto.randomBytes(32), databaseId: crypto.randomBytes(16) };
    const keys = new DatabaseKeys(material.masterKey, material.databaseId);
    // No slab (lib/chunk-slab.ts): every chunk takes the buffers' path, the one a full slab falls back to.
    const pool = new SealPool(material, { size: 1, chunkMax: 1024 * KiB, slabBytes: 0 });
    const plain = pseudoRandom('round-trip', 300 * KiB);
    const chunk = pool.buffers.take(plain.length);
    chunk.set(plain);
    const sent = { byteLength: chunk.buffer.byteLength };
    const ticket = await pool.identify(chunk, true);
    expect(chunk.buffer.byteLength).toBe(0); // moved to the worker, not copied
    expect(ticket.id.equals(keys.chunkId(plain))).toBe(true);
    const sealed = await pool.seal(ticket, EntryKind.Chunk, true);
    expect(sealed.bytes.buffer.byteLength).toBe(sent.byteLength); // the same size class came back...
    expect(openEntry(keys.data, Buffer.from(sealed.bytes), { id: ticket.id, kind: EntryKind.Chunk }, 'mem', 0).equals(plain)).toBe(true);
    expect(pool.buffers.idleBytes).toBe(0);
    sealed.release!();
    sealed.release!(); // a second call is harmless
    expect(pool.buffers.idleBytes).toBe(sent.byteLength); // ...and is lent again once released
    // A caller's bytes are copied into a pool buffer, never moved; dropping hands that buffer back.
    const callers = pseudoRandom('dropped', 40 * KiB);
    const dropped = await pool.identify(callers, false);
    expect(callers.equals(pseudoRandom('dropped', 40 * KiB))).toBe(true);
    pool.drop(dropped);
    for (let i = 0; i < 100 && pool.buffers.idleBytes < sent.byteLength + 64 * KiB + SEAL_OVERHEAD_BYTES; i++) await new Promise((r) => setTimeout(r, 10));
    expect(pool.buffers.idleBytes).toBe(sent.byteLength + 64 * KiB + SEAL_OVERHEAD_BYTES);
    await pool.close();
  });
});
