/**
 * db.concat(hashes, options): a new value whose bytes are the parts' bytes in order and whose
 * record names the parts' chunks (none read, sealed or written again): how an S3 multipart
 * upload's parts are stored once. Its chunks must stay live while either the parts or the
 * concatenation names them, through gc, purge, reopen, rebuildIndex and export/import.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { OuroDB, type PutResult, exportArchive, importArchiveNew } from '../lib/index.js';
import { CountingVfs, pseudoRandom, tempDir } from './helpers.js';

const KEY = Buffer.alloc(32, 11);
const SMALL = { key: KEY, blockSize: 64 * 1024, chunkSizes: { min: 512, avg: 2048, max: 8192 } };

/** Parts as a multipart upload and odd callers make them: chunked, inline, empty, compressible. */
function partValues(): Buffer[] {
  return [
    pseudoRandom('part-0', 40_000),
    pseudoRandom('part-1', 25_000),
    Buffer.alloc(0),
    Buffer.from('x'.repeat(30_000)),
    pseudoRandom('part-4', 1000), // inline, as an upload's last part may be
  ];
}

async function expectBytes(db: OuroDB, hash: string, want: Buffer, label: string): Promise<void> {
  expect(Buffer.from(await db.get(hash)).equals(want), label).toBe(true);
}

describe('concat', () => {
  it('makes the parts\' bytes in order, for 1..N parts with empty ones and repeats, naming their chunks', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const values = partValues();
      const parts: PutResult[] = [];
      for (const v of values) parts.push(await db.put(v));
      const stats = await Promise.all(parts.map((p) => db.stat(p.hash)));
      expect(stats[0]!.chunks).toBeGreaterThan(5);
      expect(stats[4]!.inline).toBe(true);
      const cases: number[][] = [[0], [1], [0, 1], [0, 0], [2], [2, 2], [4], [0, 2, 1], [1, 0, 1, 3], [3, 2, 0, 2, 1, 0], [0, 1, 2, 3, 4], [4, 0, 4, 1]];
      for (const picks of cases) {
        const want = Buffer.concat(picks.map((i) => values[i]!));
        const r = await db.concat(picks.map((i) => parts[i]!.hash));
        expect(r.size).toBe(want.length);
        await expectBytes(db, r.hash, want, `concat of ${picks.join(',')}`);
        // Ranged reads see the concatenation as any other value.
        const mid = Math.floor(want.length / 2);
        expect(Buffer.from(await db.get(r.hash, { start: Math.max(0, mid - 3), end: mid + 3000 })).equals(want.subarray(Math.max(0, mid - 3), mid + 3000))).toBe(true);
        if (!picks.includes(4)) {
          // No inline part: the record lists exactly the parts' chunks.
          expect((await db.stat(r.hash)).chunks, `chunks of ${picks.join(',')}`).toBe(picks.reduce((n, i) => n + stats[i]!.chunks, 0));
        }
      }
      // An empty list is the empty value; the empty part alone too.
      const none = await db.concat([]);
      expect(none.size).toBe(0);
      expect((await db.get(none.hash)).byteLength).toBe(0);
    } finally {
      await db.close();
    }
  });

  it('reads no chunk and stores no chunk when the parts are chunked', async () => {
    const dir = tempDir();
    const first = await OuroDB.open(dir, SMALL);
    const values = [pseudoRandom('big-0', 300_000), pseudoRandom('big-1', 300_000), pseudoRandom('big-2', 200_000)];
    const parts: PutResult[] = [];
    for (const v of values) parts.push(await first.put(v));
    await first.close();
    const vfs = new CountingVfs();
    const db = await OuroDB.open(dir, { ...SMALL, fs: vfs });
    try {
      const before = await db.stats();
      const read = vfs.readBytes;
      const r = await db.concat(parts.map((p) => p.hash), { key: 'big' });
      // Only the parts' records were read (a few KiB each), not their 800 KB of chunks.
      expect(vfs.readBytes - read).toBeLessThan(40_000);
      const after = await db.stats();
      expect(after.chunks).toBe(before.chunks);
      expect(after.uniqueBytes).toBe(before.uniqueBytes);
      expect(after.logicalBytes - before.logicalBytes).toBe(800_000);
      expect(after.objects).toBe(before.objects + 1);
      await expectBytes(db, r.hash, Buffer.concat(values), 'the concatenation');
      // The premise of the read count: reading the value reads its chunks.
      expect(vfs.readBytes - read).toBeGreaterThan(800_000);
    } finally {
      await db.close();
    }
  });

  it('stores inline parts: inline when the whole fits, else as chunks cut by the chunker', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const small = [pseudoRandom('s0', 1000), pseudoRandom('s1', 2000), Buffer.alloc(0), pseudoRandom('s2', 1096)];
      const hashes = await Promise.all(small.map(async (v) => (await db.put(v)).hash));
      const fits = await db.concat(hashes);
      expect(fits.size).toBe(4096);
      expect((await db.stat(fits.hash)).inline).toBe(true);
      await expectBytes(db, fits.hash, Buffer.concat(small), 'inline concatenation');
      const many = await db.concat([...hashes, ...hashes, ...hashes]);
      expect((await db.stat(many.hash)).inline).toBe(false);
      await expectBytes(db, many.hash, Buffer.concat([...small, ...small, ...small]), 'inline parts past the inline size');
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('takes the options of put: key, meta, parent, ifHead, durability, signal, expectHash', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const a = await db.put(pseudoRandom('opt-a', 20_000));
      const b = await db.put(pseudoRandom('opt-b', 9_000));
      const want = Buffer.concat([pseudoRandom('opt-a', 20_000), pseudoRandom('opt-b', 9_000)]);
      const root = await db.put('root');
      const v1 = await db.concat([a.hash, b.hash], { key: 'obj', meta: { etag: '"abc-2"' }, parent: root.hash, ifHead: null });
      expect(await db.head('obj')).toBe(v1.hash);
      expect(Buffer.from(await db.getByKey('obj')).equals(want)).toBe(true);
      const st = await db.stat(v1.hash);
      expect(st.meta).toEqual({ etag: '"abc-2"' });
      expect(st.parent).toBe(root.hash);
      expect(st.key).toBe('obj');
      expect(await db.children(root.hash)).toEqual([v1.hash]);
      // Compare-and-set refuses a stale head and writes nothing.
      await expect(db.concat([b.hash], { key: 'obj', ifHead: null })).rejects.toMatchObject({ code: 'OURO_CONFLICT' });
      const v2 = await db.concat([b.hash, a.hash], { key: 'obj', ifHead: v1.hash, durability: 'relaxed' });
      await db.flush();
      const history = [];
      for await (const v of db.history('obj')) history.push(v.hash);
      expect(history).toEqual([v2.hash, v1.hash]);
      const aborted = new AbortController();
      aborted.abort(new Error('stop'));
      await expect(db.concat([a.hash], { key: 'obj', signal: aborted.signal })).rejects.toThrow('stop');
      await expect(db.concat([a.hash], { expectHash: 'ab'.repeat(32) })).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
      expect(await db.head('obj')).toBe(v2.hash);
    } finally {
      await db.close();
    }
  });

  it('concatenates a part put relaxed and not yet committed', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const v = pseudoRandom('relaxed', 50_000);
      const p = await db.put(v, { durability: 'relaxed' });
      const r = await db.concat([p.hash, p.hash]);
      await expectBytes(db, r.hash, Buffer.concat([v, v]), 'relaxed part');
    } finally {
      await db.close();
    }
  });

  it('refuses what is not a list of values', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const v = await db.put('value', { key: 'k' });
      const gone = await db.delete('k');
      await expect(db.concat('nope' as never)).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.concat(['xyz'])).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.concat([v.hash, 'ab'.repeat(32)])).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      await expect(db.concat([v.hash, gone.hash])).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.concat([v.hash], { meta: 'x' as never })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      expect((await db.stats()).objects).toBe(2);
    } finally {
      await db.close();
    }
  });

  it('gc keeps the chunks either the parts or the concatenation names, and reclaims them when neither does', async () => {
    const dir = tempDir();
    let db = await OuroDB.open(dir, SMALL);
    try {
      const values = partValues();
      const parts: PutResult[] = [];
      for (const [i, v] of values.entries()) parts.push(await db.put(v, { key: `part/${i}` }));
      const want = Buffer.concat([...values, values[0]!]);
      const whole = await db.concat([...parts.map((p) => p.hash), parts[0]!.hash], { key: 'whole' });
      // A second concatenation of the same parts, to purge while the first stays.
      const other = await db.concat([parts[1]!.hash, parts[0]!.hash], { key: 'other' });
      await db.flush();
      // The parts go first: what they stored is kept for the concatenations.
      for (let i = 0; i < values.length; i++) expect((await db.purge(`part/${i}`)).versions).toBe(1);
      const gc1 = await db.gc({ threshold: 1 });
      await expectBytes(db, whole.hash, want, 'after the parts were purged and collected');
      await expectBytes(db, other.hash, Buffer.concat([values[1]!, values[0]!]), 'the second concatenation');
      expect((await db.check({ readData: true })).problems).toEqual([]);
      // The premise: gc compacted the blocks the parts were written in, copying out what is live.
      expect(gc1.blocksRemoved).toBeGreaterThan(0);
      expect(gc1.bytesCopied).toBeGreaterThan(0);
      await db.purge('other');
      await db.gc({ threshold: 1 });
      await expectBytes(db, whole.hash, want, 'after the other concatenation was purged');
      // Reopen, and rebuild the index from the blocks: the reference counts come out the same.
      await db.close();
      db = await OuroDB.open(dir, SMALL);
      await expectBytes(db, whole.hash, want, 'after a reopen');
      await db.rebuildIndex();
      await expectBytes(db, whole.hash, want, 'after rebuildIndex');
      expect((await db.check({ readData: true })).problems).toEqual([]);
      // Nothing names the chunks any more: gc reclaims them all.
      await db.purge('whole');
      await db.gc({ threshold: 1 });
      const s = await db.stats();
      expect(s.chunks).toBe(0);
      expect(s.uniqueBytes).toBe(0);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('keeps the parts whole when the concatenation is purged and collected', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const values = partValues();
      const parts: PutResult[] = [];
      for (const [i, v] of values.entries()) parts.push(await db.put(v, { key: `p${i}` }));
      await db.concat(parts.map((p) => p.hash), { key: 'whole' });
      await db.concat([parts[0]!.hash, parts[0]!.hash], { key: 'whole' });
      await db.flush();
      expect((await db.purge('whole')).versions).toBe(2);
      await db.gc({ threshold: 1 });
      for (const [i, p] of parts.entries()) await expectBytes(db, p.hash, values[i]!, `part ${i}`);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('fails with NotFoundError, writing nothing, when a part was purged before', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    try {
      const a = await db.put(pseudoRandom('purged', 30_000), { key: 'a' });
      const b = await db.put(pseudoRandom('kept', 30_000), { key: 'b' });
      await db.purge('a');
      const objects = (await db.stats()).objects;
      await expect(db.concat([b.hash, a.hash], { key: 'c' })).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      expect(await db.head('c')).toBe(null);
      expect((await db.stats()).objects).toBe(objects);
    } finally {
      await db.close();
    }
  });

  it('exports and imports with its hash kept', async () => {
    const db = await OuroDB.open(tempDir(), SMALL);
    const values = partValues();
    const parts: PutResult[] = [];
    for (const v of values) parts.push(await db.put(v));
    const whole = await db.concat(parts.map((p) => p.hash), { key: 'whole' });
    const archive = path.join(tempDir(), 'a.ouro');
    await exportArchive(db, fs.createWriteStream(archive), { key: KEY });
    await db.close();
    const through = new PassThrough();
    fs.createReadStream(archive).pipe(through);
    const { db: restored, remapped } = await importArchiveNew(tempDir(), through, { key: KEY });
    try {
      expect(remapped).toBe(false);
      await expectBytes(restored, whole.hash, Buffer.concat(values), 'imported concatenation');
      expect(await restored.head('whole')).toBe(whole.hash);
    } finally {
      await restored.close();
    }
  });
});
