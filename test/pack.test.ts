/**
 * Packs: the records of puts that meet at one group commit sealed as one entry (lib/pack.ts).
 * Every path that finds records by their entries (reads, check, rebuild, gc, adoption) must see
 * the records inside packs as it sees records in entries of their own.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import zlib from 'node:zlib';
import { ClassicLevel } from '../index/leveldb.js';
import { EntryKind, decodeHeader, encodeHeader } from '../blockstore/format.js';
import { keys } from '../index/keys.js';
import { readBlockIndex } from '../blockstore/store.js';
import { readBlockRecords } from '../lib/adopt.js';
import { AeadKey, DatabaseKeys, xchachaDecryptRange, xchachaSeal } from '../lib/crypto.js';
import { CorruptionError } from '../lib/errors.js';
import { INDEX_FORMAT_VERSION, OuroDB, OuroError } from '../lib/index.js';
import { DESCRIPTOR_FILE, readDescriptor, unlock } from '../lib/keyring.js';
import { decodePack, encodePack, recordInPack } from '../lib/pack.js';
import { type ObjectRecord, decodeRecord, encodeRecord } from '../lib/record.js';
import { ChunkList } from '../lib/chunk-list.js';
import { nodeVfs } from '../lib/vfs/index.js';
import { blockFiles, pseudoRandom, tempDir } from './helpers.js';

/** Puts `n` keyed text values, 64 at a time (so that records meet at group commits), under a directory object. */
async function putMany(db: OuroDB, n: number, tag = 'v'): Promise<Map<string, Buffer>> {
  const dir = await db.put('', { key: 'dir/', meta: { type: 'directory' } });
  const values = new Map<string, Buffer>();
  for (let i = 0; i < n; i++) values.set(`dir/file-${String(i).padStart(4, '0')}`, Buffer.from(`${tag} ${i}: ${pseudoRandom(`${tag}${i}`, 300).toString('base64')}\n`));
  const entries = [...values];
  for (let i = 0; i < entries.length; i += 64) {
    await Promise.all(entries.slice(i, i + 64).map(([key, value]) => db.put(value, { key, parent: dir.hash, meta: { type: 'file' } })));
  }
  return values;
}

/** Rows of every sealed block of the database in `dir`, by kind. */
async function rowKinds(dir: string): Promise<Record<number, number>> {
  const kinds: Record<number, number> = {};
  for (const file of blockFiles(dir)) for (const row of (await readBlockIndex(nodeVfs, file)).rows) kinds[row.kind] = (kinds[row.kind] ?? 0) + 1;
  return kinds;
}

async function expectAll(db: OuroDB, values: Map<string, Buffer>): Promise<void> {
  for (const [key, value] of values) expect(Buffer.from(await db.getByKey(key)).equals(value), key).toBe(true);
}

describe('pack format', () => {
  it('round-trips records and refuses a table that does not add up or a record asked for at the wrong place', () => {
    const records = [0, 1, 2].map((i) => ({ hash: crypto.randomBytes(32), bytes: pseudoRandom(`r${i}`, 10 + i * 100) }));
    const { plain, id, slots } = encodePack(records);
    expect(id).toHaveLength(32);
    const decoded = decodePack(plain, 'test');
    expect(decoded.map((r) => r.hash.toString('hex'))).toEqual(records.map((r) => r.hash.toString('hex')));
    records.forEach((r, i) => expect(recordInPack(plain, decoded, r.hash, slots[i]!, 'test').equals(r.bytes)).toBe(true));
    // The right slot under another record's hash, and a slot that is no record's.
    expect(() => recordInPack(plain, decoded, records[1]!.hash, slots[0]!, 'test')).toThrow(/does not hold record/);
    expect(() => recordInPack(plain, decoded, records[0]!.hash, { offset: slots[0]!.offset + 1, length: 10 }, 'test')).toThrow(/does not hold record/);
    expect(() => decodePack(plain.subarray(0, plain.length - 1), 'test')).toThrow(/do not add up/);
    const future = Buffer.from(plain);
    future.writeUInt32LE(2, 0);
    expect(() => decodePack(future, 'test')).toThrow(expect.objectContaining({ code: 'OURO_UNSUPPORTED_VERSION' }));
    expect(() => encodePack(records.slice(0, 1))).toThrow(RangeError);
  });
});

describe('reading part of a sealed entry', () => {
  it('xchachaDecryptRange gives exactly the plaintext bytes of any range', () => {
    const key = new AeadKey(crypto.randomBytes(32));
    const nonce = crypto.randomBytes(24);
    const plain = pseudoRandom('range', 5000);
    const sealed = xchachaSeal(key, nonce, plain, Buffer.from('aad'));
    for (const [at, n] of [[0, 1], [0, 64], [1, 100], [63, 2], [64, 64], [1000, 1234], [4999, 1], [130, 4870]] as const) {
      expect(xchachaDecryptRange(key, nonce, at, sealed.subarray(at, at + n)).equals(plain.subarray(at, at + n)), `${at}+${n}`).toBe(true);
    }
  });

  it('a record in an uncompressed pack is read alone: damage to it fails it, not its neighbours', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const values = Array.from({ length: 128 }, (_, i) => pseudoRandom(`random${i}`, 1000));
    const hashes: string[] = [];
    for (let i = 0; i < values.length; i += 64) hashes.push(...(await Promise.all(values.slice(i, i + 64).map((v, j) => db.put(v, { key: `r/${i + j}` })))).map((r) => r.hash));
    await db.close();
    let damaged = false;
    for (const file of blockFiles(dir)) {
      const row = (await readBlockIndex(nodeVfs, file)).rows.find((r) => r.kind === EntryKind.Pack);
      if (!row) continue;
      expect(row.flags).toBe(0); // random values: the pack was not worth compressing
      // Flip a byte in the middle of the pack's last record (just before the 16-byte tag).
      const fd = fs.openSync(file, 'r+');
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, row.offset + row.length - 16 - 500);
      b.writeUInt8(b.readUInt8(0) ^ 1, 0);
      fs.writeSync(fd, b, 0, 1, row.offset + row.length - 16 - 500);
      fs.closeSync(fd);
      damaged = true;
      break;
    }
    expect(damaged).toBe(true);
    const db2 = await OuroDB.open(dir, { key });
    const failed: number[] = [];
    for (let i = 0; i < values.length; i++) {
      await db2.get(hashes[i]!).then(
        (got) => expect(Buffer.from(got).equals(values[i]!)).toBe(true),
        (err: unknown) => {
          expect(err).toMatchObject({ code: 'OURO_CORRUPTION' });
          failed.push(i);
        },
      );
    }
    expect(failed).toHaveLength(1);
    expect((await db2.check({ readData: true })).ok).toBe(false);
    await db2.close();
  });
});

describe('format versions', () => {
  it('reads blocks of versions 1 and 2 and refuses a later one; an index of layout 1 is marked 2 on open, a later one refused', async () => {
    const header = encodeHeader({ seq: 7, databaseId: crypto.randomBytes(16) });
    expect(header.readUInt16LE(8)).toBe(2);
    for (const version of [1, 2]) {
      const h = Buffer.from(header);
      h.writeUInt16LE(version, 8);
      h.writeUInt32LE(zlib.crc32(h.subarray(0, 36)), 36);
      expect(decodeHeader(h, 'test').seq).toBe(7);
    }
    const later = Buffer.from(header);
    later.writeUInt16LE(3, 8);
    later.writeUInt32LE(zlib.crc32(later.subarray(0, 36)), 36);
    expect(() => decodeHeader(later, 'test')).toThrow(expect.objectContaining({ code: 'OURO_UNSUPPORTED_VERSION' }));

    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const { hash } = await db.put('kept');
    await db.close();
    const setLayout = async (v: number) => {
      const ldb = new ClassicLevel<Buffer, Buffer>(`${dir}/index`, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v, 0);
      await ldb.put(keys.meta('format'), b);
      await ldb.close();
    };
    const layout = async () => {
      const ldb = new ClassicLevel<Buffer, Buffer>(`${dir}/index`, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      const v = (await ldb.get(keys.meta('format')))!.readUInt32LE(0);
      await ldb.close();
      return v;
    };
    await setLayout(1);
    const old = await OuroDB.open(dir, { key });
    expect(Buffer.from(await old.get(hash)).toString()).toBe('kept');
    await old.close();
    expect(await layout()).toBe(INDEX_FORMAT_VERSION);
    await setLayout(INDEX_FORMAT_VERSION + 1);
    await expect(OuroDB.open(dir, { key })).rejects.toMatchObject({ code: 'OURO_UNSUPPORTED_VERSION' });
  });
});

describe('records of concurrent puts', () => {
  it('share packs, and every read, history, check and rebuild sees them as records', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const values = await putMany(db, 400);
    await db.flush();
    const kinds = await rowKinds(dir);
    // Most records went into packs: far fewer object and pack rows than the 401 records.
    expect(kinds[EntryKind.Pack]).toBeGreaterThan(0);
    expect((kinds[EntryKind.Object] ?? 0) + kinds[EntryKind.Pack]!).toBeLessThan(200);
    await expectAll(db, values);
    const stats = await db.stats();
    expect(stats.objects).toBe(401);
    expect(stats.storedBytes).toBe(blockFiles(dir).reduce((n, f) => n + fs.statSync(f).size, 0));
    const dirHash = (await db.head('dir/'))!;
    expect((await db.children(dirHash)).length).toBe(400);
    expect(await db.check({ readData: true })).toMatchObject({ ok: true, problems: [] });

    // A second version of some keys: their history reads through packs too.
    await Promise.all([...values.keys()].slice(0, 50).map((k) => db.put(`changed ${k}`, { key: k })));
    for await (const v of db.history('dir/file-0007')) expect(v.version === 2 ? 'changed dir/file-0007' : values.get('dir/file-0007')!.toString()).toBe(Buffer.from(await db.get(v.hash)).toString());
    await db.rebuildIndex();
    expect((await db.stats()).objects).toBe(451);
    expect(Buffer.from(await db.getByKey('dir/file-0049')).toString()).toBe('changed dir/file-0049');
    await expectAll(db, new Map([...values].slice(50)));
    expect(await db.check({ readData: true })).toMatchObject({ ok: true, problems: [] });
    await db.close();

    const again = await OuroDB.open(dir, { key });
    await expectAll(again, new Map([...values].slice(50)));
    await again.close();
  });

  it('gc compacts a block whose packs lost records to a purge: the rest stay readable and counted', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const values = await putMany(db, 300);
    await db.flush();
    expect((await rowKinds(dir))[EntryKind.Pack]).toBeGreaterThan(0);
    const purged = [...values.keys()].filter((_, i) => i % 3 !== 0);
    for (const k of purged) await db.purge(k);
    await db.flush();
    const storedBefore = (await db.stats()).storedBytes;
    const report = await db.gc({ threshold: 1 });
    expect(report.blocksRemoved).toBeGreaterThan(0);
    expect((await db.stats()).storedBytes).toBeLessThan(storedBefore);
    const kept = new Map([...values].filter(([k]) => !purged.includes(k)));
    await expectAll(db, kept);
    for (const k of purged.slice(0, 10)) expect(await db.head(k)).toBe(null);
    await db.flush();
    const stats = await db.stats();
    expect(stats.objects).toBe(kept.size + 1);
    expect(stats.storedBytes).toBe(blockFiles(dir).reduce((n, f) => n + fs.statSync(f).size, 0));
    expect(await db.check({ readData: true })).toMatchObject({ ok: true, problems: [] });
    await db.close();
    const again = await OuroDB.open(dir, { key });
    await expectAll(again, kept);
    await again.close();
  });

  it('a damaged pack fails its records with a corruption error, and check names it', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const values = await putMany(db, 200);
    await db.close();
    // Flip one payload byte of the first pack in the first block that has one.
    let damaged: { file: string; offset: number } | undefined;
    for (const file of blockFiles(dir)) {
      const row = (await readBlockIndex(nodeVfs, file)).rows.find((r) => r.kind === EntryKind.Pack);
      if (!row) continue;
      const fd = fs.openSync(file, 'r+');
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, row.offset + row.length - 20);
      b.writeUInt8(b.readUInt8(0) ^ 0x40, 0);
      fs.writeSync(fd, b, 0, 1, row.offset + row.length - 20);
      fs.closeSync(fd);
      damaged = { file, offset: row.offset };
      break;
    }
    expect(damaged).toBeDefined();
    const db2 = await OuroDB.open(dir, { key });
    const codes = new Set<string>();
    for (const k of values.keys()) {
      await db2.getByKey(k).then(
        () => codes.add('ok'),
        (err: unknown) => codes.add(err instanceof OuroError ? err.code : String(err)),
      );
    }
    expect(codes).toEqual(new Set(['ok', 'OURO_CORRUPTION']));
    const report = await db2.check({ readData: true });
    expect(report.ok).toBe(false);
    expect(report.problems.some((p) => p.kind === 'entry-corrupt')).toBe(true);
    await db2.close();
  });

  it('a block with packs yields every record to a member adopting it', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const values = await putMany(db, 150);
    const hashes = new Set<string>();
    for (const k of values.keys()) hashes.add((await db.head(k))!);
    await db.close();
    const descriptor = await readDescriptor(`${dir}/${DESCRIPTOR_FILE}`);
    const keys = new DatabaseKeys(await unlock(descriptor, { key }), Buffer.from(descriptor.databaseId, 'hex'));
    const found = new Map<string, { key: string | null }>();
    for (const file of blockFiles(dir)) {
      const { rows } = await readBlockIndex(nodeVfs, file);
      for (const [hash, r] of await readBlockRecords(nodeVfs, file, rows, keys)) found.set(hash, r.record);
    }
    for (const h of hashes) expect(found.get(h)?.key).toMatch(/^dir\/file-/);
    expect(found.size).toBe(151);
  });
});

describe('object record bytes (FORMAT.md, "Object record")', () => {
  const record = (over: Partial<ObjectRecord>): ObjectRecord => ({ type: 'value', size: 3, chunks: new ChunkList(), key: 'k', parent: null, prev: [], created: 1_700_000_000_000, meta: { a: 'b' }, inline: Buffer.from('abc'), ...over });

  it('are written as the format gives them: shortest integers below 2^32, float64 above, shortest headers', () => {
    // Spelled out from FORMAT.md, not from the encoder's output.
    const expected = [
      '9b', // array of 11
      '01', // record version 1
      '00', // type: value
      '03', // size 3 (positive fixint)
      'c400', // chunk ids: bin 8 of length 0
      '90', // chunk sizes: []
      'a16b', // key "k" (fixstr)
      'c0', // parent: nil
      '90', // prev: []
      'cb4278bcfe56800000', // created 1,700,000,000,000: float64, big-endian
      '9192a161a162', // meta [["a", "b"]]
      'c403616263', // inline: bin 8 "abc"
    ].join('');
    expect(encodeRecord(record({})).toString('hex')).toBe(expected);
    const id = Buffer.alloc(32, 7);
    const chunked = encodeRecord(record({ size: 70_000, chunks: ChunkList.of([{ id, size: 300 }, { id, size: 69_700 }]), key: null, meta: {}, inline: null, created: 200 }));
    const ids = `c440${id.toString('hex').repeat(2)}`; // bin 8 of 64 bytes
    expect(chunked.toString('hex')).toBe(`9b0100ce00011170${ids}92cd012cce00011044c0c090ccc890c0`);
  });

  it('are read with integers in any MessagePack form another writer may choose, uint 64 included', () => {
    const ours = encodeRecord(record({})).toString('hex');
    const asUint64 = Buffer.from(ours.replace('cb4278bcfe56800000', 'cf0000018bcfe56800'), 'hex');
    expect(decodeRecord(asUint64, 'uint64').created).toBe(1_700_000_000_000);
    const sizeAsUint16 = Buffer.from(ours.replace(/^9b010003/, '9b0100cd0003'), 'hex');
    expect(decodeRecord(sizeAsUint16, 'uint16').size).toBe(3);
    // Beyond 2^53 a number is no longer exact: refused as corrupt, never rounded.
    const tooBig = Buffer.from(ours.replace('cb4278bcfe56800000', 'cf0020000000000001'), 'hex');
    expect(() => decodeRecord(tooBig, 'too big')).toThrow(CorruptionError);
  });
});
