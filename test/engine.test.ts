import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { OuroDB, OuroError } from '../lib/index.js';
import { EntryKind, FLAG_ZSTD, readEntryHeader } from '../blockstore/format.js';
import { readBlockIndex } from '../blockstore/store.js';
import { DatabaseKeys, nextNonce } from '../lib/crypto.js';
import { maybeCompress, openEntry } from '../lib/entry.js';
import { SealPool } from '../lib/seal-pool.js';
import { nodeVfs } from '../lib/vfs/index.js';
import { FAST_KDF, blockFiles, fixture, pseudoRandom, pseudoRandomStream, snapshotTree, tempDir, vfsWithWritev } from './helpers.js';

const small = { min: 4096, avg: 16384, max: 65536 };
const DEFAULT = { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024 };

async function openNew(dir = tempDir(), extra: Record<string, unknown> = {}) {
  const key = crypto.randomBytes(32);
  const db = await OuroDB.open(dir, { key, chunkSizes: small, ...extra });
  return { db, key, dir };
}

function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'resolved',
    (e: unknown) => {
      expect(e).toBeInstanceOf(OuroError);
      return (e as OuroError).code;
    },
  );
}

describe('round trips', () => {
  it('stores and reads back empty, 1-byte, chunk-boundary and multi-chunk values', async () => {
    const { db } = await openNew();
    const sizes = [0, 1, small.min - 1, small.min, small.min + 1, small.max - 1, small.max, small.max + 1, 3 * small.max + 17, 1_000_000];
    const stored: Array<[string, Buffer]> = [];
    for (const n of sizes) {
      const v = pseudoRandom(`rt${n}`, n);
      const r = await db.put(v);
      expect(r.size).toBe(n);
      expect(r.hash).toMatch(/^[0-9a-f]{64}$/);
      stored.push([r.hash, v]);
    }
    for (const [hash, v] of stored) {
      expect(Buffer.from(await db.get(hash)).equals(v)).toBe(true);
      expect((await db.stat(hash)).size).toBe(v.length);
      expect(await db.has(hash)).toBe(true);
    }
    await db.close();
  });

  it('accepts strings, Readables and async iterables, and streams values back', async () => {
    const { db } = await openNew();
    const s = await db.put('héllo wörld');
    expect(Buffer.from(await db.get(s.hash)).toString('utf8')).toBe('héllo wörld');
    const data = pseudoRandom('readable', 300_000);
    const r = await db.put(Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
    const parts: Uint8Array[] = [];
    for await (const p of db.stream(r.hash)) parts.push(p);
    expect(parts.length).toBeGreaterThan(1);
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    await db.close();
  });

  it('stores a 100 MiB streamed value and reads it back byte-identical', async () => {
    const { db } = await openNew(tempDir(), { chunkSizes: undefined });
    const total = 100 << 20;
    const r = await db.put(pseudoRandomStream('big', total));
    expect(r.size).toBe(total);
    const expected = crypto.createHash('sha256');
    for await (const p of pseudoRandomStream('big', total)) expected.update(p);
    const got = crypto.createHash('sha256');
    let n = 0;
    for await (const p of db.stream(r.hash)) {
      got.update(p);
      n += p.length;
    }
    expect(n).toBe(total);
    expect(got.digest('hex')).toBe(expected.digest('hex'));
    await db.close();
  });

  it('holds a bounded amount of memory while streaming 300 MiB in (live buffers after GC)', () => {
    const out = execFileSync(process.execPath, ['--expose-gc', fixture('stream-memory.js'), tempDir(), '300'], { encoding: 'utf8' });
    const { size, peakArrayBuffers } = JSON.parse(out) as { size: number; peakArrayBuffers: number };
    expect(size).toBe(300 << 20);
    // The write backlog limit is 32 MiB and the chunker holds 8 MiB: far below the value's 300 MiB.
    expect(peakArrayBuffers).toBeLessThan(96 << 20);
  });

  it('records metadata and the stat of an object', async () => {
    const { db } = await openNew();
    const r = await db.put('x', { meta: { b: '2', a: '1' } });
    const st = await db.stat(r.hash);
    expect(st).toMatchObject({ hash: r.hash, size: 1, chunks: 0, inline: true, type: 'value', key: null, parent: null, prev: [], meta: { a: '1', b: '2' } });
    expect(st.created.getTime()).toBeGreaterThan(Date.now() - 60_000);
    await db.close();
  });

  it('keeps values up to 4 KiB inline in their record, whatever their source, and chunks larger ones', async () => {
    const { db, dir, key } = await openNew();
    const cases: Array<[string, Buffer, (v: Buffer) => unknown, boolean]> = [
      ['bytes, 4 KiB', pseudoRandom('in1', 4096), (v) => v, true],
      ['bytes, 4 KiB + 1', pseudoRandom('in2', 4097), (v) => v, false],
      ['stream in pieces, 3000 B', pseudoRandom('in3', 3000), (v) => Readable.from([v.subarray(0, 10), v.subarray(10)]), true],
      ['stream, 200 kB', pseudoRandom('in4', 200_000), (v) => Readable.from([v]), false],
      ['empty stream (one empty inline value, as put(new Uint8Array(0)) makes)', Buffer.alloc(0), () => Readable.from([]), true],
    ];
    const hashes: string[] = [];
    for (const [name, v, as, inline] of cases) {
      const r = await db.put(as(v) as Buffer);
      hashes.push(r.hash);
      const st = await db.stat(r.hash);
      expect({ name, inline: st.inline, chunked: st.chunks > 0 }).toEqual({ name, inline, chunked: !inline && v.length > 0 });
    }
    const stats = await db.stats();
    // Inline values are stored once per object: they count fully as unique bytes.
    expect(stats.uniqueBytes).toBe(cases.reduce((n, c) => n + c[1].length, 0));
    await db.close();
    const again = await OuroDB.open(dir, { key, chunkSizes: small });
    for (let i = 0; i < cases.length; i++) expect(Buffer.from(await again.get(hashes[i]!)).equals(cases[i]![1])).toBe(true);
    await again.close();
  });
});

describe('seal pool (chunk ids and sealing on worker threads)', () => {
  it("never detaches or changes the caller's buffer, and streams hand chunks over without loss", async () => {
    const { db } = await openNew(tempDir(), { chunkSizes: DEFAULT });
    const value = pseudoRandom('pool', 5_000_000);
    const copy = Buffer.from(value);
    const r = await db.put(value);
    // Chunks of a caller's Uint8Array are copied to the workers, never transferred.
    expect(value.byteLength).toBe(5_000_000);
    expect(value.equals(copy)).toBe(true);
    const s = await db.put(Readable.from([value.subarray(0, 123_457), value.subarray(123_457)]));
    expect((await db.stat(r.hash)).chunks).toBeGreaterThan(4);
    // Same bytes, same chunk ids whichever path computed them: the stream put added no chunk.
    const st = await db.stats();
    expect(st.uniqueBytes).toBe(value.length);
    expect(Buffer.from(await db.get(r.hash)).equals(copy)).toBe(true);
    expect(Buffer.from(await db.get(s.hash)).equals(copy)).toBe(true);
    await db.close();
  });

  it('seals batched object records and small chunks exactly as the main thread would, in submission order', async () => {
    const material = { masterKey: crypto.randomBytes(32), databaseId: crypto.randomBytes(16) };
    const keys = new DatabaseKeys(material.masterKey, material.databaseId);
    const pool = new SealPool(material);
    // More entries than one batch holds, random and text, compressed and not, one of 64 KiB;
    // records and chunks in runs of uneven length, so batches of one kind are cut by the other.
    const entries = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? Buffer.from(`entry ${i} `.repeat(40 + i)) : pseudoRandom(`rec${i}`, i === 7 ? 64 * 1024 : 1 + ((i * 97) % 5000))));
    const kindOf = (i: number) => (i % 7 < 4 ? EntryKind.Object : EntryKind.Chunk);
    const copies = entries.map((r) => Buffer.from(r));
    const sealed = await Promise.all(entries.map((r, i) => pool.sealSmall(kindOf(i), r, i % 5 !== 0)));
    await pool.close();
    sealed.forEach(({ id, sealed: entry }, i) => {
      const kind = kindOf(i);
      expect(entries[i]!.equals(copies[i]!)).toBe(true); // the caller's bytes are copied, never moved
      expect(id.equals(kind === EntryKind.Chunk ? keys.chunkId(entries[i]!) : keys.objectId(entries[i]!))).toBe(true);
      expect(entry.id.equals(id)).toBe(true);
      expect(entry.kind).toBe(kind);
      expect(entry.plainLength).toBe(entries[i]!.length);
      expect(entry.hash.equals(crypto.createHash('sha256').update(entry.bytes).digest())).toBe(true);
      expect(Buffer.from(openEntry(keys.data, entry.bytes, { id, kind }, 'batch', 0)).equals(entries[i]!)).toBe(true);
      expect({ i, zstd: (entry.flags & FLAG_ZSTD) !== 0 }).toEqual({ i, zstd: i % 3 === 0 && i % 5 !== 0 });
    });
    expect(await codeOf(pool.sealSmall(EntryKind.Object, entries[1]!, true))).toBe('OURO_FAILED');
  });

  it('records of concurrent puts (packed, or sealed on the pool when large) hash like those of a lone put, and dedup against them', async () => {
    const { db, dir, key } = await openNew();
    const created = Date.UTC(2026, 0, 1);
    const values = Array.from({ length: 200 }, (_, i) => (i % 2 ? pseudoRandom(`v${i}`, 1024) : Buffer.from(`value ${i} `.repeat(30))));
    // One at a time: each record is hashed and sealed on the main thread.
    const lone: string[] = [];
    for (const v of values) lone.push((await db.put(v, { created })).hash);
    const keyedLone = (await db.put(values[1]!, { key: 'k/lone', created })).hash;
    const before = await db.stats();
    // All at once: the records go into packs; same records, same hashes, nothing new.
    const together = await Promise.all(values.map((v) => db.put(v, { created })));
    expect(together.map((r) => r.hash)).toEqual(lone);
    expect((await db.stats()).objects).toBe(before.objects);
    // New records, keyed and not, all readable after a reopen.
    const fresh = await Promise.all(values.map((v, i) => db.put(v, i % 2 ? { key: `k/${i}` } : {})));
    await db.close();
    const again = await OuroDB.open(dir, { key, chunkSizes: small });
    for (let i = 0; i < values.length; i++) expect(Buffer.from(await again.get(fresh[i]!.hash)).equals(values[i]!)).toBe(true);
    expect(Buffer.from(await again.getByKey('k/lone')).equals(values[1]!)).toBe(true);
    expect(keyedLone).toMatch(/^[0-9a-f]{64}$/);
    expect((await again.stats()).objects).toBe(before.objects + values.length);
    await again.close();
    const kinds = new Set<number>();
    for (const file of blockFiles(dir)) for (const row of (await readBlockIndex(nodeVfs, file)).rows) kinds.add(row.kind);
    expect(kinds.has(EntryKind.Pack)).toBe(true);

    // Records too large for a pack (over 16 KiB: here ~800 chunk ids each) go to the pool when
    // puts are in flight, and so do small chunks (here all of them, under 1 KiB), in batches.
    // Entries sealed on a worker carry its nonce prefix, not the main thread's.
    const tiny = { min: 64, avg: 256, max: 1024 };
    // sealInlineBytes 0: the pool from the first entry (by default a handle seals its first 64 MiB itself).
    const big = await openNew(tempDir(), { chunkSizes: tiny, sealInlineBytes: 0 });
    const large = Array.from({ length: 12 }, (_, i) => pseudoRandom(`large${i}`, 200_000));
    const lonePut = await big.db.put(pseudoRandom('lone', 6000)); // alone (and not inline): sealed on the main thread
    const hashes = await Promise.all(large.map((v) => big.db.put(v)));
    await big.db.close();
    const reopened = await OuroDB.open(big.dir, { key: big.key, chunkSizes: tiny });
    for (let i = 0; i < large.length; i++) expect(Buffer.from(await reopened.get(hashes[i]!.hash)).equals(large[i]!)).toBe(true);
    await reopened.close();
    const prefixes = { [EntryKind.Chunk]: new Set<string>(), [EntryKind.Object]: new Set<string>() } as Record<number, Set<string>>;
    for (const file of blockFiles(big.dir)) {
      const bytes = fs.readFileSync(file);
      for (const row of (await readBlockIndex(nodeVfs, file)).rows) {
        const header = readEntryHeader(bytes, row.offset, file, row.offset);
        expect([row.plainLength, row.flags]).toEqual([header.plainLength, header.flags]); // the footer agrees with each entry
        prefixes[row.kind]!.add(header.nonce.subarray(0, 16).toString('hex'));
      }
    }
    const mainPrefix = nextNonce().subarray(0, 16).toString('hex');
    expect([...prefixes[EntryKind.Object]!].filter((p) => p !== mainPrefix).length).toBeGreaterThan(0);
    expect([...prefixes[EntryKind.Chunk]!].filter((p) => p !== mainPrefix).length).toBeGreaterThan(0);
    expect(prefixes[EntryKind.Chunk]!.has(mainPrefix)).toBe(true); // the lone put's
    expect(lonePut.size).toBe(6000);
  });

  it('a closed pool refuses work with OURO_FAILED', async () => {
    const pool = new SealPool({ masterKey: crypto.randomBytes(32), databaseId: crypto.randomBytes(16) });
    const ticket = await pool.identify(pseudoRandom('t', 40_000), false);
    expect(ticket.id.length).toBe(32);
    await pool.close();
    expect(await codeOf(pool.seal(ticket, 1, true))).toBe('OURO_FAILED');
    expect(await codeOf(pool.identify(pseudoRandom('t', 40_000), false))).toBe('OURO_FAILED');
  });
});

describe('chunk buffers on their way to disk', () => {
  it('are lent again only after their write finished: a streamed value with slow writes reads back intact', async () => {
    // Every block write waits 15 ms before it starts. Meanwhile the put keeps cutting and sealing
    // chunks into pooled buffers; a buffer handed back before its write finished would be
    // overwritten by a later chunk, and that entry would fail authentication when read.
    let delayed = 0;
    const fsWithSlowWrites = vfsWithWritev(async (file, bufs, position) => {
      delayed++;
      await new Promise((r) => setTimeout(r, 15));
      return file.writev(bufs, position);
    });
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key, chunkSizes: small, fs: fsWithSlowWrites });
    const total = 6 * 1024 * 1024;
    const puts = await Promise.all(['a', 'b'].map((seed) => db.put(pseudoRandomStream(seed, total, 100_000))));
    expect(delayed).toBeGreaterThan(3);
    for (const [i, seed] of ['a', 'b'].entries()) expect(Buffer.from(await db.get(puts[i]!.hash)).equals(pseudoRandom(seed, total))).toBe(true);
    await db.close();
    const again = await OuroDB.open(dir, { key, chunkSizes: small });
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });
});

describe('deduplication', () => {
  it('stores repeated data once', async () => {
    const { db } = await openNew();
    const data = pseudoRandom('dup', 2_000_000);
    await db.put(data);
    const before = await db.stats();
    const again = await db.put(data);
    const edited = Buffer.concat([data.subarray(0, 1_000_000), Buffer.from('edit'), data.subarray(1_000_000)]);
    await db.put(edited);
    const after = await db.stats();
    expect(Buffer.from(await db.get(again.hash)).equals(data)).toBe(true);
    expect(after.objects).toBe(3);
    expect(after.logicalBytes).toBe(2 * data.length + edited.length);
    // The identical put added no chunk; the edit added only a few chunks around the change.
    expect(after.uniqueBytes - before.uniqueBytes).toBeLessThan(5 * small.max);
    expect(after.dedupRatio).toBeGreaterThan(2.5);
    await db.close();
  });

  it('deduplicates concurrent puts of the same value', async () => {
    const { db } = await openNew();
    const data = pseudoRandom('concurrent', 500_000);
    const results = await Promise.all(Array.from({ length: 16 }, () => db.put(data)));
    const st = await db.stats();
    expect(st.uniqueBytes).toBe(data.length);
    for (const r of results) expect(Buffer.from(await db.get(r.hash)).equals(data)).toBe(true);
    await db.close();
  });

  it('compresses compressible data and says so in stats', async () => {
    const { db } = await openNew();
    const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(50_000));
    const r = await db.put(text);
    expect(Buffer.from(await db.get(r.hash)).equals(text)).toBe(true);
    const st = await db.stats();
    expect(st.compressionRatio).toBeGreaterThan(5);
    expect(st.storedBytes).toBeLessThan(text.length / 5);
    await db.close();
  });

  it('skips zstd for random values up to 40 KiB (packs included) and compresses text wherever the windows fall', () => {
    const text = (n: number) => Buffer.from('export function addDays(date, amount) { return date + amount; }\n'.repeat(Math.ceil(n / 64))).subarray(0, n);
    for (const size of [300, 1024, 4096, 6000, 16 * 1024, 18 * 1024, 40 * 1024]) {
      expect({ size, random: maybeCompress(pseudoRandom(`r${size}`, size)) }).toEqual({ size, random: undefined });
      expect(maybeCompress(text(size))!.length).toBeLessThan(size / 2);
    }
    // A pack-sized buffer of random records with 2.5 KiB of text anywhere: a window lands on it.
    for (let at = 0; at <= 18 * 1024 - 2560; at += 700) {
      const mixed = pseudoRandom(`m${at}`, 18 * 1024);
      text(2560).copy(mixed, at);
      expect({ at, compressed: maybeCompress(mixed) !== undefined }).toEqual({ at, compressed: true });
    }
    // Larger values keep the zstd sample: random is refused by it, text compressed.
    expect(maybeCompress(pseudoRandom('big', 64 * 1024))).toBeUndefined();
    expect(maybeCompress(text(64 * 1024))!.length).toBeLessThan(64 * 1024 / 2);
  });
});

describe('keys and errors', () => {
  it('a wrong key or passphrase fails with OURO_WRONG_KEY and changes nothing on disk', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { passphrase: 'correct horse', kdf: FAST_KDF });
    const r = await db.put('secret');
    await db.close();
    const before = snapshotTree(dir);
    expect(await codeOf(OuroDB.open(dir, { passphrase: 'wrong horse' }))).toBe('OURO_WRONG_KEY');
    expect(await codeOf(OuroDB.open(dir, { key: crypto.randomBytes(32) }))).toBe('OURO_WRONG_KEY');
    expect(snapshotTree(dir)).toEqual(before);
    const again = await OuroDB.open(dir, { passphrase: 'correct horse' });
    expect(Buffer.from(await again.get(r.hash)).toString()).toBe('secret');
    await again.close();
  });

  it('never writes the master key or plaintext to disk', async () => {
    const { db, dir } = await openNew();
    const marker = Buffer.from('PLAINTEXT-MARKER-'.repeat(100));
    await db.put(marker, { meta: { note: 'META-MARKER-VALUE' } });
    await db.close();
    const files = Object.keys(snapshotTree(dir)).map((f) => fs.readFileSync(path.join(dir, f)));
    for (const f of files) {
      expect(f.includes(Buffer.from('PLAINTEXT-MARKER-'))).toBe(false);
      expect(f.includes(Buffer.from('META-MARKER-VALUE'))).toBe(false);
    }
  });

  it('a tampered block byte gives OURO_CORRUPTION, never wrong data', async () => {
    const { db, dir, key } = await openNew();
    const data = pseudoRandom('tamper', 200_000);
    const r = await db.put(data);
    await db.close();
    const [file] = blockFiles(dir);
    const bytes = fs.readFileSync(file!);
    // Flip a bit well inside the first entry's ciphertext (past the 40-byte header and 72-byte entry header).
    bytes[40 + 72 + 1000]! ^= 0x10;
    fs.writeFileSync(file!, bytes);
    const db2 = await OuroDB.open(dir, { key, chunkSizes: small });
    expect(await codeOf(db2.get(r.hash))).toBe('OURO_CORRUPTION');
    await db2.close();
  });

  it('refuses bad arguments, unknown hashes, closed handles and a second opener with typed codes', async () => {
    const { db, dir, key } = await openNew();
    expect(await codeOf(db.put(42 as unknown as string))).toBe('OURO_BAD_ARGUMENT');
    expect(await codeOf(db.put('x', { meta: { a: 1 as unknown as string } }))).toBe('OURO_BAD_ARGUMENT');
    expect(await codeOf(db.get('zz'))).toBe('OURO_BAD_ARGUMENT');
    expect(await codeOf(db.get('0'.repeat(64)))).toBe('OURO_NOT_FOUND');
    expect(await codeOf(db.stat('0'.repeat(64)))).toBe('OURO_NOT_FOUND');
    expect(await db.has('0'.repeat(64))).toBe(false);
    expect(await codeOf(OuroDB.open(dir, { key }))).toBe('OURO_LOCKED');
    expect(await codeOf(OuroDB.open(tempDir(), { key: new Uint8Array(5) }))).toBe('OURO_BAD_ARGUMENT');
    await db.close();
    expect(await codeOf(db.put('x'))).toBe('OURO_CLOSED');
  });

  it('refuses a descriptor or index of an unknown format version', async () => {
    const { db, dir, key } = await openNew();
    await db.close();
    const file = path.join(dir, 'OURODB.json');
    const d = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...d, version: 99 }));
    expect(await codeOf(OuroDB.open(dir, { key }))).toBe('OURO_UNSUPPORTED_VERSION');
  });

  it('refuses to create a new database over data whose descriptor is missing', async () => {
    const { db, dir, key } = await openNew();
    await db.put('x');
    await db.close();
    fs.rmSync(path.join(dir, 'OURODB.json'));
    expect(await codeOf(OuroDB.open(dir, { key }))).toBe('OURO_CORRUPTION');
  });
});

describe('group commit, blocks and stats', () => {
  it('64 concurrent small puts all read back, and blocks seal at the target size', async () => {
    const { db, dir, key } = await openNew(tempDir(), { blockSize: 64 * 1024 });
    const values = Array.from({ length: 640 }, (_, i) => pseudoRandom(`small${i}`, 1024));
    const results: Array<{ hash: string }> = [];
    for (let i = 0; i < values.length; i += 64) results.push(...(await Promise.all(values.slice(i, i + 64).map((v) => db.put(v)))));
    const st = await db.stats();
    expect(st.objects).toBe(640);
    expect(st.blocks).toBeGreaterThan(5);
    await db.close();
    const db2 = await OuroDB.open(dir, { key });
    for (let i = 0; i < values.length; i++) expect(Buffer.from(await db2.get(results[i]!.hash)).equals(values[i]!)).toBe(true);
    const st2 = await db2.stats();
    expect(st2.walRecords).toBe(0);
    expect(st2.blocks).toBe(blockFiles(dir).length);
    expect(await db2.countBlocks()).toBe(blockFiles(dir).length);
    await db2.close();
  });

  it('flush seals pending entries and empties the WAL; stats add up', async () => {
    const { db } = await openNew();
    await db.put(pseudoRandom('f', 100_000));
    const pending = await db.stats();
    expect(pending.walRecords).toBeGreaterThan(0);
    expect(pending.walBytes).toBeGreaterThan(100_000);
    await db.flush();
    const sealed = await db.stats();
    expect(sealed.walRecords).toBe(0);
    expect(sealed.walBytes).toBe(0);
    expect(sealed.blocks).toBe(1);
    expect(sealed.storedBytes).toBeGreaterThan(100_000);
    await db.close();
  });
});

describe('chunks gathering into groups (wal/commit.ts, GATHER_BYTES)', () => {
  /** Counts the block fdatasyncs `body` makes (the failpoint every block sync passes). */
  async function countingSyncs<T>(body: (synced: () => number) => Promise<T>): Promise<{ result: T; syncs: number }> {
    const { setFailpoint } = await import('../lib/failpoints.js');
    let syncs = 0;
    setFailpoint('block.fdatasync', () => void syncs++);
    try {
      const result = await body(() => syncs);
      return { result, syncs };
    } finally {
      setFailpoint('block.fdatasync', undefined);
    }
  }

  it('a streamed put syncs its chunks a few MiB at a time, not a group per chunk or two', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const total = 48 << 20;
    // A source that gives the event loop a turn between pieces, as a file or a socket does, and
    // with it the commit loop, which used to take whatever chunks were queued at that moment.
    async function* source() {
      for await (const piece of pseudoRandomStream('gather', total, 256 << 10)) {
        yield piece;
        await new Promise((r) => setImmediate(r));
      }
    }
    const { result, syncs } = await countingSyncs(() => db.put(source()));
    const { chunks } = await db.stat(result.hash);
    expect(chunks).toBeGreaterThan(100); // the premise: many chunks, each once a group of its own or two
    // 48 MiB in groups of up to 8 MiB, each syncing the one or two 16 MiB blocks it spans: 6 here.
    // Taken as they came, a group every turn or two, the same put made 77 syncs.
    expect(syncs).toBeLessThanOrEqual(20);
    expect(syncs).toBeGreaterThan(0);
    await db.close();
    const again = await OuroDB.open(dir, { key });
    let n = 0;
    for await (const part of again.stream(result.hash)) n += part.byteLength;
    expect(n).toBe(total);
    expect((await again.check({ readData: true })).problems).toEqual([]);
    await again.close();
  });

  it('the chunks of a stream that stalls are synced once nothing new comes, before its record', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    let resume!: () => void;
    const stalled = new Promise<void>((r) => (resume = r));
    let syncedWhileStalled = -1;
    const { result, syncs } = await countingSyncs(async (synced) => {
      async function* source() {
        yield* pseudoRandomStream('stall-a', 4 << 20);
        await stalled;
        yield* pseudoRandomStream('stall-b', 1 << 20);
      }
      const put = db.put(source());
      // Well past GATHER_IDLE_MS: the 4 MiB cut so far, under GATHER_BYTES, were synced all the same.
      await new Promise((r) => setTimeout(r, 1500));
      syncedWhileStalled = synced();
      resume();
      return put;
    });
    expect(syncedWhileStalled).toBeGreaterThan(0);
    expect(syncs).toBeGreaterThan(syncedWhileStalled); // the rest, with the record, synced after
    expect((await db.stat(result.hash)).size).toBe(5 << 20);
    await db.close();
  });
});

describe('a failed fsync (the "fsyncgate" lesson)', () => {
  it('is fatal to the handle, not to the data: writes stop with OURO_FAILED, reads go on, reopening recovers', async () => {
    const { setFailpoint } = await import('../lib/failpoints.js');
    const { db, dir, key } = await openNew();
    const acknowledged: Array<[string, Buffer]> = [];
    for (let i = 0; i < 20; i++) {
      const v = pseudoRandom(`ok${i}`, 2000 + i);
      acknowledged.push([(await db.put(v)).hash, v]);
    }
    setFailpoint('block.fdatasync', () => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    });
    try {
      const failed = await db.put(pseudoRandom('lost', 3000)).catch((err: unknown) => err);
      expect(failed).toMatchObject({ code: 'OURO_FAILED' });
      expect(String((failed as Error).cause)).toContain('EIO');
    } finally {
      setFailpoint('block.fdatasync', undefined);
    }
    // The handle refuses writes even now that fsync would work: the unsynced bytes' state is unknown.
    expect(await codeOf(db.put('after'))).toBe('OURO_FAILED');
    for (const [hash, v] of acknowledged) expect(Buffer.from(await db.get(hash)).equals(v)).toBe(true);
    await db.close();
    const again = await OuroDB.open(dir, { key, chunkSizes: small });
    try {
      for (const [hash, v] of acknowledged) expect(Buffer.from(await again.get(hash)).equals(v)).toBe(true);
      const r = await again.put('works again');
      expect(Buffer.from(await again.get(r.hash)).toString()).toBe('works again');
      expect((await again.check({ readData: true })).problems).toEqual([]);
    } finally {
      await again.close();
    }
  });
});
