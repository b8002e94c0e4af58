/**
 * Hostile input: every decoder fed random, truncated and mutated bytes, and the public API fed
 * random keys, options and failing streams. Only typed errors (OuroError) may come out, never a
 * RangeError from reading past a buffer, never a hang, never wrong data.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EntryKind, readEntryHeader } from '../blockstore/format.js';
import { BlockStore, verifyBlockEntries } from '../blockstore/store.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { decodeBlockInfo, decodeCount, decodeHeads, decodeLocation } from '../index/values.js';
import zlib from 'node:zlib';
import { Packr } from 'msgpackr';
import { AeadKey, deriveKey, xchachaSeal } from '../lib/crypto.js';
import { openEntry, sealEntry } from '../lib/entry.js';
import { OuroDB, OuroError, exportArchive, importArchive } from '../lib/index.js';
import { decodeRecord, encodeRecord } from '../lib/record.js';
import { ChunkList } from '../lib/chunk-list.js';
import { decodeWalRecords, encodeWalRecords } from '../wal/record.js';
import { pseudoRandom, tempDir } from './helpers.js';

/** Runs fn; it may return, or throw an OuroError. Anything else fails the property. */
function typedOnly(fn: () => unknown): boolean {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof OuroError)) throw err;
  }
  return true;
}

async function typedOnlyAsync(fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof OuroError)) throw err;
  }
  return true;
}

const mutate = (bytes: Buffer) =>
  fc.oneof(
    fc.nat({ max: Math.max(0, bytes.length - 1) }).map((n) => bytes.subarray(0, n)),
    fc.tuple(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 })).map(([at, x]) => {
      const b = Buffer.from(bytes);
      b[at]! ^= x;
      return b;
    }),
    fc.uint8Array({ maxLength: 600 }).map((r) => Buffer.concat([bytes, Buffer.from(r)])),
  );

const record = encodeRecord({ type: 'value', size: 3, chunks: new ChunkList(), key: 'k', parent: null, prev: [crypto.randomBytes(32)], created: 1, meta: { a: 'b' }, inline: Buffer.from('abc') });

describe('decoders on hostile bytes', () => {
  it('object records', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => typedOnly(() => decodeRecord(b, 'fuzz'))), { numRuns: 500 });
    fc.assert(fc.property(mutate(record), (b) => typedOnly(() => decodeRecord(b, 'fuzz'))), { numRuns: 500 });
  });

  it('WAL values, index values', () => {
    const wal = encodeWalRecords([{ id: crypto.randomBytes(32), kind: EntryKind.Chunk, flags: 0, length: 100, plainLength: 20, hash: crypto.randomBytes(32) }]);
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }).map((u) => Buffer.from(u)), mutate(wal)), (b) => typedOnly(() => decodeWalRecords(b, 40))), { numRuns: 500 });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (u) => {
        const b = Buffer.from(u);
        return typedOnly(() => decodeHeads(b)) && typedOnly(() => decodeLocation(b)) && typedOnly(() => decodeBlockInfo(b)) && typedOnly(() => decodeCount(b));
      }),
      { numRuns: 500 },
    );
  });

  it('entries: headers and sealed payloads; a damaged entry never opens', () => {
    const key = new AeadKey(crypto.randomBytes(32));
    const id = crypto.randomBytes(32);
    const sealed = sealEntry(key, EntryKind.Chunk, id, pseudoRandom('e', 500)).bytes;
    fc.assert(fc.property(fc.uint8Array({ minLength: 72, maxLength: 72 }), (u) => typedOnly(() => readEntryHeader(Buffer.from(u), 0, 'f', 0))), { numRuns: 500 });
    fc.assert(
      fc.property(mutate(sealed), (b) => {
        try {
          const plain = openEntry(key, b, { id, kind: EntryKind.Chunk }, 'f', 0);
          // Only an untouched entry may open (appending bytes changes its length: refused).
          expect(b.equals(sealed)).toBe(true);
          expect(plain.equals(pseudoRandom('e', 500))).toBe(true);
        } catch (err) {
          if (!(err instanceof OuroError)) throw err;
        }
        return true;
      }),
      { numRuns: 500 },
    );
  });

  it('block files: random, truncated and damaged ones are refused with typed errors', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key, blockSize: 64 * 1024 });
    for (let i = 0; i < 5; i++) await db.put(pseudoRandom(`b${i}`, 9000));
    await db.close();
    const blocksDir = path.join(dir, 'blocks');
    const file = fs.readdirSync(blocksDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name))[0]!;
    const good = fs.readFileSync(file);
    const store = new BlockStore(nodeVfs, dir, Buffer.from(JSON.parse(fs.readFileSync(path.join(dir, 'OURODB.json'), 'utf8')).databaseId, 'hex'));
    const probe = path.join(dir, 'probe.blk');
    const goodId = (await store.readIndex(file)).id;
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutate(good), fc.uint8Array({ maxLength: 2000 }).map((u) => Buffer.from(u))), async (b) => {
        fs.writeFileSync(probe, b);
        return typedOnlyAsync(async () => {
          const index = await store.readIndex(probe);
          // A damaged block that still parses is caught by an entry's footer hash, or (damage in
          // bytes no check covers, such as the trailer's reserved bytes) by its id, which is
          // what the index and the file name hold.
          const bad = await verifyBlockEntries(nodeVfs, probe, index.rows);
          if (!b.equals(good)) expect(bad.length > 0 || !index.id.equals(goodId)).toBe(true);
        });
      }),
      { numRuns: 200 },
    );
  });

  it('archives: random, truncated and damaged ones end in typed errors, never a hang or a huge allocation', async () => {
    const work = tempDir();
    const key = Buffer.alloc(32, 9);
    const a = await OuroDB.open(path.join(work, 'a'), { key });
    await a.put(pseudoRandom('arc', 50_000), { key: 'x', meta: { m: '1' } });
    await a.put('small', { key: 'y' });
    const chunks: Buffer[] = [];
    const sink = new (await import('node:stream')).Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    });
    await exportArchive(a, sink, { key });
    await a.close();
    const archive = Buffer.concat(chunks);
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutate(archive), fc.uint8Array({ maxLength: 3000 }).map((u) => Buffer.from(u))), async (b) => {
        const db = await OuroDB.open(path.join(work, `t${n++}`), { key });
        try {
          return await typedOnlyAsync(() => importArchive(db, Readable.from([b]), { key }));
        } finally {
          await db.close();
        }
      }),
      { numRuns: 60 },
    );
    // A frame that claims 4 GiB is refused from its length field, before any allocation.
    const huge = Buffer.from(archive);
    huge.writeUInt32LE(0xffffffff, 64);
    const db = await OuroDB.open(path.join(work, 'huge'), { key });
    await expect(importArchive(db, Readable.from([huge]), { key })).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
    await db.close();
  });
});

describe('archives written from the documented format (an independent writer)', () => {
  /** An archive built from docs/FORMAT.md alone, with the given frame plaintexts. */
  function archive(key: Buffer, frames: Buffer[]): Buffer {
    const header = Buffer.alloc(64);
    header.write('OUROARC\0', 0, 'latin1');
    header.writeUInt16LE(1, 8);
    header.writeUInt16LE(64, 10);
    const id = crypto.randomBytes(16);
    id.copy(header, 12);
    header[28] = 2;
    const salt = crypto.randomBytes(16);
    salt.copy(header, 32);
    header.writeUInt32LE(zlib.crc32(header.subarray(0, 60)), 60);
    const aead = new AeadKey(deriveKey(key, salt, 'ourodb/v1/archive'));
    const out: Buffer[] = [header];
    frames.forEach((plain, n) => {
      const head = Buffer.alloc(28);
      head.writeUInt32LE(plain.length, 0);
      const nonce = crypto.randomBytes(24);
      nonce.copy(head, 4);
      const aad = Buffer.alloc(28);
      id.copy(aad, 0);
      aad.writeBigUInt64LE(BigInt(n), 16);
      aad.writeUInt32LE(plain.length, 24);
      out.push(head, xchachaSeal(aead, nonce, plain, aad));
    });
    return Buffer.concat(out);
  }
  const frame = (type: number, body: Uint8Array) => Buffer.concat([Buffer.from([type]), body]);

  it('imports a well-formed one, and refuses authenticated but malformed frames with typed errors', async () => {
    const key = Buffer.alloc(32, 3);
    const value = Buffer.from('written by hand');
    const good = archive(key, [
      frame(1, new Packr({ useRecords: false }).pack(['a'.repeat(64), 0, 'hand/made', null, [], 1_700_000_000_000, [['by', 'test']], value.length])),
      frame(2, value),
      frame(3, crypto.createHash('sha256').update(value).digest()),
      frame(4, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])),
    ]);
    const work = tempDir();
    const db = await OuroDB.open(path.join(work, 'db'), { key });
    try {
      await importArchive(db, Readable.from([good]), { key });
      expect(Buffer.from(await db.getByKey('hand/made')).toString()).toBe('written by hand');
      expect((await db.stat((await db.head('hand/made'))!)).meta).toEqual({ by: 'test' });
      // The same object with `created` as a uint 64 (msgpackr writes it as a float64): an
      // independent writer may choose either form of the integer.
      const object = new Packr({ useRecords: false }).pack(['b'.repeat(64), 0, 'hand/uint64', null, [], 1_700_000_000_000, [], value.length]).toString('hex');
      expect(object).toContain('cb4278bcfe56800000');
      const uint64 = Buffer.from(object.replace('cb4278bcfe56800000', 'cf0000018bcfe56800'), 'hex');
      await importArchive(db, Readable.from([archive(key, [frame(1, uint64), frame(2, value), frame(3, crypto.createHash('sha256').update(value).digest()), frame(4, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]))])]), { key });
      expect((await db.stat((await db.head('hand/uint64'))!)).created.getTime()).toBe(1_700_000_000_000);
      let n = 0;
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 64 }).map((u) => Buffer.from(u)), fc.anything().map((v) => Buffer.from(new Packr({ useRecords: false }).pack(v)))), async (body) => {
          const target = await OuroDB.open(path.join(work, `m${n++}`), { key });
          try {
            return await typedOnlyAsync(() => importArchive(target, Readable.from([archive(key, [frame(1, body), frame(4, Buffer.alloc(8))])]), { key }));
          } finally {
            await target.close();
          }
        }),
        { numRuns: 40 },
      );
    } finally {
      await db.close();
    }
  });
});

describe('the public API on hostile input', () => {
  it('random keys and options: accepted and read back, or refused with OURO_BAD_ARGUMENT', async () => {
    const db = await OuroDB.open(tempDir(), { key: Buffer.alloc(32, 4) });
    try {
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 400 }), fc.constantFrom('', '\0', 'a\0b', '\ud800x', 'x'.repeat(1100))), fc.uint8Array({ maxLength: 100 }), async (k, v) => {
          try {
            await db.put(v, { key: k });
          } catch (err) {
            expect(err).toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
            return true;
          }
          expect(Buffer.from(await db.getByKey(k)).equals(Buffer.from(v))).toBe(true);
          expect((await db.list({ prefix: k, limit: 1 }).next()).value?.key).toBe(k);
          return true;
        }),
        { numRuns: 150 },
      );
      for (const bad of [null, 5, 'x', { meta: 5 }, { meta: { a: 1 } }, { durability: 'sometimes' }, { parent: 'zz' }, { ifHead: 'abc', key: 'k' }, { prev: 'x', key: 'k' }, { ifHead: null }, { created: -1 }, { signal: 'no' }]) {
        await expect(db.put('v', bad as never)).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      }
      for (const bad of [undefined, null, 5, {}, [1, 2]]) await expect(db.put(bad as never)).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(Array.fromAsync(db.list({ limit: -1 }))).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.children('nothex')).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.gc({ threshold: 2 })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.check({ sample: -1 })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await db.close();
    }
  });

  it('a stream that fails midway or is aborted writes no object, and the handle stays usable', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { key: Buffer.alloc(32, 5), chunkSizes: { min: 4096, avg: 16384, max: 65536 } });
    try {
      const before = (await db.stats()).objects;
      async function* failing(): AsyncGenerator<Uint8Array> {
        yield pseudoRandom('s1', 100_000);
        throw new Error('source broke');
      }
      await expect(db.put(failing(), { key: 'broken' })).rejects.toThrow('source broke');
      const controller = new AbortController();
      async function* slow(): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < 50; i++) {
          if (i === 3) controller.abort(new Error('user cancelled'));
          yield pseudoRandom(`s${i}`, 50_000);
        }
      }
      await expect(db.put(slow(), { key: 'aborted', signal: controller.signal })).rejects.toThrow('user cancelled');
      await expect(db.put('x', { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
      expect((await db.stats()).objects).toBe(before);
      expect(await db.head('broken')).toBeNull();
      expect(await db.head('aborted')).toBeNull();
      const ok = await db.put('still works', { key: 'after' });
      expect(await db.head('after')).toBe(ok.hash);
      // The chunks the failed puts stored are unreferenced: check is clean and gc removes them.
      await db.flush();
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });
});
