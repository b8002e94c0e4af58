/**
 * The decoded-record cache (lib/record-cache.ts): least recently used out first, never more
 * bytes than its bound, and nothing inserted by a read that raced with a purge.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RecordCache } from '../lib/record-cache.js';
import { type ObjectRecord, encodeRecord } from '../lib/record.js';
import { ChunkList } from '../lib/chunk-list.js';

const record = (n: number): ObjectRecord => ({ type: 'value', size: n, chunks: new ChunkList(), key: null, parent: null, prev: [], created: n, meta: {}, inline: null });

describe('record cache', () => {
  it('keeps the most recently used records within its byte bound, whatever the sequence', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 300 })), { maxLength: 400 }), (ops) => {
        const max = 1000;
        const cache = new RecordCache(max);
        // A model: the records held, least recently used first.
        const used: Array<{ hex: string; bytes: number }> = [];
        for (const [isGet, n, bytes] of ops) {
          const hex = `r${n}`;
          if (isGet) {
            const hit = cache.get(hex);
            // Whatever the cache holds, it returns the record stored under that name.
            if (hit) expect(hit.size).toBe(n);
            const i = used.findIndex((u) => u.hex === hex);
            if (i >= 0 && hit) used.push(...used.splice(i, 1));
            // A record the cache dropped went in least-recently-used order: every record used
            // less recently than it is gone too (a get that misses changes nothing).
            if (i >= 0 && !hit) {
              for (const older of used.slice(0, i)) expect(cache.get(older.hex)).toBeUndefined();
              used.splice(0, i + 1);
            }
          } else {
            // A record set again after the cache dropped it is new to it: the model drops it
            // (and, by LRU order, every record older than it) before it goes in anew. Without
            // this the model kept its old place (fast-check found [r0, ..., r0 again, get r24]).
            const i = used.findIndex((u) => u.hex === hex);
            if (i >= 0 && !cache.has(hex)) {
              for (const older of used.slice(0, i)) expect(cache.has(older.hex)).toBe(false);
              used.splice(0, i + 1);
            }
            cache.set(hex, record(n), bytes, cache.generation);
            if (!used.some((u) => u.hex === hex)) used.push({ hex, bytes });
          }
          expect(cache.bytes).toBeLessThanOrEqual(max);
        }
      }),
      // The sequence that found the model's old gap (r0 set again after it was dropped).
      { examples: [[[[false, 0, 175], [false, 3, 20], [false, 24, 262], [false, 1, 269], [false, 2, 275], [false, 0, 1], [true, 24, 1]]]] },
    );
  });

  it('evicts least recently used first, and a read that is used again survives', () => {
    const cache = new RecordCache(10 * 100);
    for (let i = 0; i < 10; i++) cache.set(`r${i}`, record(i), 100, cache.generation);
    expect(cache.get('r0')?.size).toBe(0); // r0 is now the most recently used
    cache.set('r10', record(10), 100, cache.generation); // over the bound: the oldest go
    expect(cache.bytes).toBeLessThanOrEqual(1000);
    expect(cache.get('r1')).toBeUndefined();
    expect(cache.get('r0')?.size).toBe(0);
    expect(cache.get('r10')?.size).toBe(10);
    expect(cache.get('r9')?.size).toBe(9);
  });

  it('refuses an insert from before a purge, records over the size limit, and forgets evicted ones', () => {
    const cache = new RecordCache(1 << 20);
    const before = cache.generation;
    cache.evict(['r1']);
    cache.set('r1', record(1), 10, before);
    expect(cache.get('r1')).toBeUndefined();
    cache.set('big', record(2), 64 * 1024 + 1, cache.generation);
    expect(cache.get('big')).toBeUndefined();
    cache.set('r3', record(3), 10, cache.generation);
    expect(cache.bytes).toBe(10);
    cache.evict(['r3']);
    expect(cache.get('r3')).toBeUndefined();
    expect(cache.bytes).toBe(0);
  });

  it("keeps a put's record by its own copy of the encoded bytes, decoded when first read", () => {
    const cache = new RecordCache(1 << 20);
    const r: ObjectRecord = { type: 'value', size: 3, chunks: new ChunkList(), key: 'k', parent: null, prev: [], created: 7, meta: { a: 'b' }, inline: Buffer.from('abc') };
    const encoded = encodeRecord(r);
    cache.setEncoded('h1', encoded, cache.generation);
    expect(cache.bytes).toBe(encoded.byteLength);
    encoded.fill(0); // the encoder's buffer is reused: the cache must not depend on it
    expect(cache.get('h1')).toEqual(r);
    expect(cache.get('h1')).toBe(cache.get('h1')); // decoded once
    const stale = cache.generation;
    cache.evict(['h2']);
    cache.setEncoded('h2', encodeRecord(r), stale);
    expect(cache.get('h2')).toBeUndefined();
  });
});
