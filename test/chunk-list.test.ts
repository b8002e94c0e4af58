/**
 * The packed chunk list a put fills and a decoded record carries (lib/chunk-list.ts), and the
 * pins by 48-bit key that keep a put's chunks from gc until its record commits (wal/inflight.ts).
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { IndexStore } from '../index/store.js';
import { toHex } from '../lib/bytes.js';
import { ChunkList } from '../lib/chunk-list.js';
import { OuroDB } from '../lib/index.js';
import { decodeRecord, encodeRecord } from '../lib/record.js';
import { InFlight, pinKey } from '../wal/inflight.js';
import { pseudoRandom, tempDir } from './helpers.js';

const id = (n: number) => crypto.createHash('sha256').update(`chunk ${n}`).digest();

describe('ChunkList', () => {
  it('keeps value order when ids come out of order, and refuses to give its ids until every place has one', () => {
    const list = new ChunkList();
    const sizes: number[] = [];
    const places: number[] = [];
    // 300 chunks: past the first capacity and past the pool-sized id buffer (grown several times).
    for (let i = 0; i < 300; i++) {
      const size = 1000 + i;
      sizes.push(size);
      if (i % 3 === 0) list.push(id(i), size);
      else places.push(list.reserve(size));
    }
    expect(list.length).toBe(300);
    expect(() => list.ids()).toThrow(/200 places without an id/);
    expect(list.has(1)).toBe(false);
    expect(list.has(0)).toBe(true);
    // Set in reverse order, as a seal pool may answer.
    for (const at of [...places].reverse()) list.set(at, id(at));
    expect(() => list.set(places[0]!, id(0))).toThrow(/not reserved/);
    const ids = list.ids();
    expect(ids.length).toBe(300 * 32);
    for (let i = 0; i < 300; i++) {
      expect(ids.subarray(i * 32, (i + 1) * 32).equals(id(i)), `id ${i}`).toBe(true);
      expect(list.id(i).equals(id(i))).toBe(true);
      expect(list.size(i)).toBe(sizes[i]);
    }
    expect([...list.sizes()]).toEqual(sizes);
    expect(list.totalSize).toBe(sizes.reduce((a, b) => a + b, 0));
    expect(Array.from(list, (c) => c.size)).toEqual(sizes);
  });

  it('encodes as the list of objects it replaced did, and a decoded record lists views of its own bytes', () => {
    const refs = Array.from({ length: 40 }, (_, i) => ({ id: id(i), size: 100 + i }));
    const size = refs.reduce((n, r) => n + r.size, 0);
    const record = { type: 'value' as const, size, chunks: ChunkList.of(refs), key: 'k', parent: null, prev: [], created: 5, meta: {}, inline: null };
    const bytes = encodeRecord(record);
    // The format's fields 3 and 4 (docs/FORMAT.md): the ids as one bin, the sizes as one array.
    const concatenated = Buffer.concat(refs.map((r) => r.id));
    expect(bytes.includes(concatenated)).toBe(true);
    const back = decodeRecord(bytes, 'test');
    expect(back.chunks.length).toBe(40);
    expect(back.chunks.totalSize).toBe(size);
    expect(back.chunks.ids().equals(concatenated)).toBe(true);
    // No copy per chunk: every id is a view of the same memory as the record's ids.
    expect(back.chunks.id(0).buffer).toBe(back.chunks.id(39).buffer);
    expect(encodeRecord(back).equals(bytes)).toBe(true);
  });
});

describe('pins', () => {
  it("key a chunk by its id's first 48 bits, the same from its bytes and from its hex", () => {
    for (let i = 0; i < 200; i++) {
      const b = crypto.randomBytes(32);
      expect(pinKey(b)).toBe(Number.parseInt(toHex(b).slice(0, 12), 16));
    }
    expect(pinKey(Buffer.alloc(32, 0xff))).toBe(2 ** 48 - 1);
  });

  it('count per key: an id stays held until each of its pins is undone, and ids sharing 48 bits keep each other', () => {
    const held = new InFlight({} as IndexStore);
    const a = id(1);
    const b = Buffer.from(a);
    b[31] = b[31]! ^ 1; // another id, same first 48 bits
    const c = id(2);
    held.pin(a);
    held.pin(a);
    held.pin(b);
    expect(held.isHeld(toHex(a))).toBe(true);
    expect(held.isHeld(toHex(c))).toBe(false);
    held.unpin(a);
    held.unpin(a);
    // b's pin keeps a too: a pin only ever keeps a chunk, so sharing one errs on the safe side.
    expect(held.isHeld(toHex(a))).toBe(true);
    held.unpin(b);
    expect(held.isHeld(toHex(a))).toBe(false);
    expect(held.isHeld(toHex(b))).toBe(false);
    expect(held.pinCount).toBe(0);
  });

  it('keep the chunks a put in progress found stored through gc, until its record commits', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32), blockSize: 64 * 1024, chunkSizes: { min: 512, avg: 2048, max: 8192 } });
    try {
      const value = pseudoRandom('pinned through gc', 256 * 1024);
      const first = await db.put(value, { key: 'a' });
      const chunks = (await db.stat(first.hash)).chunks;
      expect(chunks).toBeGreaterThan(30);
      await db.flush();
      // Nothing names the chunks now: gc could drop every one of them.
      await db.purge('a');
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let sent = false;
      // The same bytes and 64 KiB more: every chunk of `value` but its last is cut again as it
      // was (content-defined), while the chunker waits for the end with the new bytes' tail.
      const longer = Buffer.concat([value, pseudoRandom('after it', 64 * 1024)]);
      const source = async function* () {
        for (let at = 0; at < longer.length; at += 16 * 1024) yield longer.subarray(at, at + 16 * 1024);
        sent = true;
        await gate;
      };
      const again = db.put(source(), { key: 'b' });
      while (!sent) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 50)); // the chunks cut so far are checked and pinned
      const during = await db.gc({ threshold: 1 });
      release();
      const second = await again;
      // gc went over the chunks' blocks while the put held them: it copied them as live and
      // dropped at most the value's last chunk, the one not cut again.
      expect(during.bytesCopied).toBeGreaterThan(0);
      expect(during.entriesDropped).toBeLessThanOrEqual(1);
      expect(Buffer.from(await db.getByKey('b')).equals(longer)).toBe(true);
      expect((await db.check({ readData: true })).problems).toEqual([]);
      // Once nothing pins or names them, the same chunks go.
      await db.purge('b');
      await db.flush(); // gc compacts sealed blocks: the open one's too
      const after = await db.gc({ threshold: 1 });
      expect(after.entriesDropped).toBeGreaterThanOrEqual(chunks - 1);
      expect((await db.stats()).chunks).toBe(0);
    } finally {
      await db.close();
    }
  });
});
