/**
 * db.adoptBlock: a keyed member indexing blocks another member of the same database sealed
 * (issue 7, "reads anywhere"). Two databases share one descriptor, as cluster members do.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OuroDB, Tombstone } from '../lib/index.js';
import { setFailpoint } from '../lib/failpoints.js';
import { pseudoRandom, tempDir } from './helpers.js';

const KEY = Buffer.alloc(32, 7);
const SMALL = { key: KEY, blockSize: 64 * 1024, chunkSizes: { min: 4096, avg: 8192, max: 16384 } };

/** Two databases with one descriptor: `b` is an empty member of `a`'s database. */
async function pair(): Promise<{ a: OuroDB; b: OuroDB; bDir: string }> {
  const aDir = tempDir();
  const bDir = tempDir();
  const a = await OuroDB.open(aDir, SMALL);
  fs.copyFileSync(path.join(aDir, 'OURODB.json'), path.join(bDir, 'OURODB.json'));
  const b = await OuroDB.open(bDir, SMALL);
  return { a, b, bDir };
}

/** Copies each of `db`'s sealed blocks (optionally in another order) into `to` through adoptBlock; `logical` sums what each adoption said it added to logicalBytes. */
async function ship(from: OuroDB, to: OuroDB, order: (ids: string[]) => string[] = (x) => x, logical = { bytes: 0 }): Promise<number> {
  const ids: string[] = [];
  for await (const b of from.blocks()) if (!b.adopted) ids.push(b.id);
  let adopted = 0;
  for (const id of order(ids)) {
    const staging = path.join(to.dir, `incoming-${id}`);
    fs.copyFileSync(from.blockPath(id), staging);
    const r = await to.adoptBlock(staging);
    logical.bytes += r.logicalBytes;
    if (r.adopted) adopted++;
  }
  return adopted;
}

describe('adoptBlock', () => {
  it('indexes another member\'s blocks: values, keys, history, children, stats', async () => {
    const { a, b } = await pair();
    const big = pseudoRandom('big', 300_000);
    const root = await a.put('root', { key: 'docs/root' });
    const v1 = await a.put(big, { key: 'docs/big', parent: root.hash, meta: { m: '1' } });
    const v2 = await a.put('second version', { key: 'docs/big' });
    await a.flush();
    const logical = { bytes: 0 };
    expect(await ship(a, b, undefined, logical)).toBeGreaterThan(1);
    expect(Buffer.from(await b.get(v1.hash)).equals(big)).toBe(true);
    expect(Buffer.from(await b.getByKey('docs/big')).toString()).toBe('second version');
    const history = [];
    for await (const v of b.history('docs/big')) history.push(v.hash);
    expect(history).toEqual([v2.hash, v1.hash]);
    expect(await b.children(root.hash)).toEqual([v1.hash]);
    expect((await b.stat(v1.hash)).meta).toEqual({ m: '1' });
    const [sa, sb] = [await a.stats(), await b.stats()];
    expect(sb.objects).toBe(sa.objects);
    expect(sb.chunks).toBe(sa.chunks);
    expect(sb.logicalBytes).toBe(sa.logicalBytes);
    // Each adoption tells what it added to logicalBytes (the node's status page draws it apart from ingest).
    expect(logical.bytes).toBe(sb.logicalBytes);
    // Adopting again changes nothing.
    const again = { bytes: 0 };
    expect(await ship(a, b, undefined, again)).toBe(0);
    expect(again.bytes).toBe(0);
    expect((await b.stats()).objects).toBe(sa.objects);
    expect((await b.check({ readData: true })).ok).toBe(true);
    await a.close();
    await b.close();
  });

  it('gives two heads when two members wrote one key concurrently, in any adoption order', async () => {
    for (const order of [(x: string[]) => x, (x: string[]) => [...x].reverse()]) {
      const { a, b } = await pair();
      const base = await a.put('base', { key: 'k' });
      await a.flush();
      await ship(a, b);
      const onA = await a.put('written on a', { key: 'k' });
      const onB = await b.put('written on b', { key: 'k' });
      // A longer line on a: two more versions, so order of arrival matters for numbering.
      const onA2 = await a.put('a again', { key: 'k' });
      await a.flush();
      await b.flush();
      await ship(a, b, order);
      await ship(b, a, order);
      for (const db of [a, b]) {
        expect((await db.heads('k')).sort()).toEqual([onA2.hash, onB.hash].sort());
        const hist = [];
        for await (const v of db.history('k')) hist.push([v.hash, v.version]);
        expect(new Map(hist as Array<[string, number]>)).toEqual(new Map([[base.hash, 1], [onA.hash, 2], [onB.hash, 2], [onA2.hash, 3]]));
      }
      // A put naming both heads merges them, on either member.
      const merged = await b.put('merged', { key: 'k', ifHead: [onA2.hash, onB.hash] });
      expect(await b.heads('k')).toEqual([merged.hash]);
      await a.close();
      await b.close();
    }
  });

  it('refuses a block of another database and a tampered block, and keeps nothing of them', async () => {
    const { a, b } = await pair();
    const other = await OuroDB.open(tempDir(), SMALL);
    await other.put('elsewhere', { key: 'x' });
    await other.flush();
    const [first] = await Array.fromAsync(other.blocks());
    const staging = path.join(b.dir, 'foreign');
    fs.copyFileSync(other.blockPath(first!.id), staging);
    await expect(b.adoptBlock(staging)).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });

    await a.put(pseudoRandom('t', 50_000), { key: 'y' });
    await a.flush();
    const [mine] = await Array.fromAsync(a.blocks());
    const bad = path.join(b.dir, 'tampered');
    const bytes = fs.readFileSync(a.blockPath(mine!.id));
    bytes[200] = bytes[200]! ^ 1;
    fs.writeFileSync(bad, bytes);
    await expect(b.adoptBlock(bad)).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
    expect((await b.stats()).blocks).toBe(0);
    expect(await Array.fromAsync(b.blocks())).toEqual([]);
    await Promise.all([a.close(), b.close(), other.close()]);
  });

  it('finishes an adoption a crash cut short after the move, on the next open', async () => {
    const { a, b, bDir } = await pair();
    const v = await a.put(pseudoRandom('crash', 100_000), { key: 'c' });
    await a.flush();
    const local = await b.put('local data', { key: 'local' });
    setFailpoint('adopt.after-rename', () => {
      throw new Error('injected crash');
    });
    try {
      await expect(ship(a, b)).rejects.toThrow('injected crash');
    } finally {
      setFailpoint('adopt.after-rename', undefined);
    }
    await b.close();
    const again = await OuroDB.open(bDir, SMALL);
    // The block moved into place before the crash is registered by the open; the rest follow.
    expect((await Array.fromAsync(again.blocks())).filter((x) => x.adopted)).toHaveLength(1);
    expect(await ship(a, again)).toBe((await Array.fromAsync(a.blocks())).length - 1);
    expect(Buffer.from(await again.getByKey('c')).equals(pseudoRandom('crash', 100_000))).toBe(true);
    expect(await again.head('c')).toBe(v.hash);
    expect(Buffer.from(await again.get(local.hash)).toString()).toBe('local data');
    expect((await again.check({ readData: true })).ok).toBe(true);
    // A rebuild from the blocks alone gives the same answers (adopted seqs may collide).
    await again.rebuildIndex();
    expect(await again.head('c')).toBe(v.hash);
    expect(Buffer.from(await again.getByKey('local')).toString()).toBe('local data');
    expect((await again.check({ readData: true })).ok).toBe(true);
    await Promise.all([a.close(), again.close()]);
  });

  it('an adoption a crash cut short, whose versions live in blocks this member dropped, finishes once the cluster serves it (chaos run, seed d756413b)', async () => {
    const { a, b, bDir } = await pair();
    const first = await a.put('version 1', { key: 'k' });
    await a.flush();
    await ship(a, b);
    // b keeps the block registered but not its file (a surplus copy it dropped: reads fetch it).
    const [dropped] = (await Array.fromAsync(b.blocks())).filter((x) => x.adopted).map((x) => x.id);
    fs.rmSync(b.blockPath(dropped!));
    const second = await a.put('version 2', { key: 'k' });
    await a.flush();
    const next = (await Array.fromAsync(a.blocks())).map((x) => x.id).find((id) => id !== dropped)!;
    const staging = path.join(b.dir, 'incoming-next');
    fs.copyFileSync(a.blockPath(next), staging);
    setFailpoint('adopt.after-rename', () => {
      throw new Error('injected crash');
    });
    try {
      await expect(b.adoptBlock(staging)).rejects.toThrow('injected crash');
    } finally {
      setFailpoint('adopt.after-rename', undefined);
    }
    await b.close();
    // The open cannot merge k's versions (version 1's record is in the dropped block) and no
    // cluster serves the database yet: it opens anyway, the block waits unregistered.
    const again = await OuroDB.open(bDir, SMALL);
    expect(again.block(next)).toBeUndefined();
    const fetched: string[] = [];
    again.setReplicaSource({
      settled: async () => {},
      fetchBlock: async (id, dest) => {
        fetched.push(id);
        fs.copyFileSync(a.blockPath(id), dest);
      },
    });
    for (let i = 0; i < 100 && !again.block(next); i++) await new Promise((r) => setTimeout(r, 20));
    expect(again.block(next)?.adopted).toBe(true);
    expect(fetched).toEqual([dropped]);
    expect(await again.head('k')).toBe(second.hash);
    const history = [];
    for await (const v of again.history('k')) history.push(v.hash);
    expect(history).toEqual([second.hash, first.hash]);
    await Promise.all([a.close(), again.close()]);
  });

  it('reads a value whose fetched block was removed again before the read (a surplus drop between the two): fetched once more', async () => {
    const { a, b } = await pair();
    const value = pseudoRandom('fetched twice', 30_000);
    const { hash } = await a.put(value);
    await a.flush();
    await ship(a, b);
    const [id] = (await Array.fromAsync(b.blocks())).filter((x) => x.adopted).map((x) => x.id);
    fs.rmSync(b.blockPath(id!));
    // The first fetch lands, and the copy is gone again before the reader opens it, as when a
    // cluster member's repair pass drops a copy it is not placed on right after a read fetched it.
    const fetched: string[] = [];
    b.setReplicaSource({
      settled: async () => {},
      fetchBlock: async (blockId, dest) => {
        fetched.push(blockId);
        fs.copyFileSync(a.blockPath(blockId), dest);
        if (fetched.length === 1) fs.rmSync(dest);
      },
    });
    expect(Buffer.from(await b.get(hash)).equals(value)).toBe(true);
    expect(fetched).toEqual([id, id]);
    await Promise.all([a.close(), b.close()]);
  });

  it('releaseBlock: what the writer compacted elsewhere is re-pointed, what only this member names is copied; a crash at each step loses nothing', async () => {
    for (const point of [undefined, 'release.after-repoint', 'release.after-copy']) {
      const { a, b, bDir } = await pair();
      // The writer runs in a cluster (gc then tombstones what it retires); nothing is fetched here.
      a.setReplicaSource({ settled: async () => {}, fetchBlock: async () => Promise.reject(new Error('no fetch in this test')) });
      const keep = await a.put(pseudoRandom('keep', 60_000), { key: 'keep' });
      const gone = await a.put(pseudoRandom('gone', 60_000), { key: 'gone' });
      await a.flush();
      await ship(a, b);
      await a.purge('gone');
      expect((await a.gc({ threshold: 1 })).blocksRemoved).toBeGreaterThan(0);
      const retired = (await Array.fromAsync(a.tombstones([Tombstone.Retired]))).map((t) => t.id);
      expect(retired.length).toBeGreaterThan(0);
      await a.flush();
      await ship(a, b); // the blocks gc moved the live entries into

      let db = b;
      if (point) {
        setFailpoint(point, () => {
          throw new Error('injected crash');
        });
        try {
          await expect(db.releaseBlock(retired[0]!)).rejects.toThrow('injected crash');
        } finally {
          setFailpoint(point, undefined);
        }
        await db.close();
        db = await OuroDB.open(bDir, SMALL);
        expect(Buffer.from(await db.getByKey('keep')).equals(pseudoRandom('keep', 60_000))).toBe(true);
      }
      const totals = { repointed: 0, copied: 0 };
      for (const id of retired) {
        const r = await db.releaseBlock(id);
        expect(r.released).toBe(true);
        totals.repointed += r.repointed;
        totals.copied += r.copied;
        expect(db.block(id)).toBeUndefined();
        expect(db.tombstone(id)).toBe(Tombstone.Released);
      }
      // keep's entries were moved by the writer's gc: re-pointed here (after a crash between the
      // steps some may have been copied instead). gone was purged on the writer only: this member
      // still names it, so it was copied into its own block.
      if (!point) expect(totals.repointed).toBeGreaterThan(0);
      expect(totals.copied).toBeGreaterThan(0);
      const check = async (x: OuroDB, purgeApplied = false) => {
        expect(Buffer.from(await x.getByKey('keep')).equals(pseudoRandom('keep', 60_000))).toBe(true);
        if (!purgeApplied) expect(Buffer.from(await x.get(gone.hash)).equals(pseudoRandom('gone', 60_000))).toBe(true);
        expect(await x.head('keep')).toBe(keep.hash);
        expect((await x.check({ readData: true })).ok).toBe(true);
      };
      await check(db);
      // The released files stay for the cluster's final deletion; reopening or rebuilding does not adopt them again.
      for (const id of retired) expect(fs.existsSync(db.blockPath(id))).toBe(true);
      await db.close();
      db = await OuroDB.open(bDir, SMALL);
      for (const id of retired) expect(db.block(id)).toBeUndefined();
      await check(db);
      // A rebuild reads the writer's purge marker from the adopted blocks and forgets gone (adoption
      // does not apply purges yet: docs/node.md); keep stays, and the released blocks stay out.
      await db.rebuildIndex();
      for (const id of retired) expect(db.block(id)).toBeUndefined();
      await check(db, true);
      await expect(db.get(gone.hash)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      await Promise.all([a.close(), db.close()]);
    }
  });

  it('reads a concatenation (db.concat) whose chunks live in older blocks, adopted in any order, and after its parts are purged there', async () => {
    for (const order of [(x: string[]) => x, (x: string[]) => [...x].reverse()]) {
      const { a, b } = await pair();
      const values = [pseudoRandom('c0', 150_000), pseudoRandom('c1', 120_000), pseudoRandom('c2', 900)];
      const parts = [];
      for (const [i, v] of values.entries()) parts.push(await a.put(v, { key: `part/${i}` }));
      await a.flush();
      const oldBlocks = (await Array.fromAsync(a.blocks())).map((x) => x.id);
      const whole = await a.concat([parts[0]!.hash, parts[2]!.hash, parts[1]!.hash, parts[0]!.hash], { key: 'whole', meta: { etag: '"x-4"' } });
      await a.flush();
      const newBlocks = (await Array.fromAsync(a.blocks())).map((x) => x.id).filter((id) => !oldBlocks.includes(id));
      // The premise: the concatenation's record is in a block of its own, its chunks in the older ones.
      expect(newBlocks.length).toBeGreaterThan(0);
      expect(oldBlocks.length).toBeGreaterThan(2);
      await ship(a, b, order);
      const want = Buffer.concat([values[0]!, values[2]!, values[1]!, values[0]!]);
      expect(Buffer.from(await b.getByKey('whole')).equals(want)).toBe(true);
      expect(Buffer.from(await b.get(whole.hash, { start: 149_000, end: 152_000 })).equals(want.subarray(149_000, 152_000))).toBe(true);
      expect((await b.stat(whole.hash)).meta).toEqual({ etag: '"x-4"' });
      expect((await b.check({ readData: true })).problems).toEqual([]);
      // The parts purged on b: the concatenation still reads there (b never compacts adopted blocks,
      // so this is its reference counts at work).
      for (let i = 0; i < values.length; i++) await b.purge(`part/${i}`);
      expect(Buffer.from(await b.get(whole.hash)).equals(want)).toBe(true);
      expect((await b.check({ readData: true })).problems).toEqual([]);
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('seals an idle open block after maxUnsealedMs and reports the sealed blocks', async () => {
    const db = await OuroDB.open(tempDir(), { ...SMALL, maxUnsealedMs: 100 });
    const sealed: string[] = [];
    db.onSealed((b) => sealed.push(b.id));
    await db.put('tiny');
    expect((await db.stats()).blocks).toBe(0);
    for (let i = 0; i < 100 && sealed.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(sealed).toHaveLength(1);
    expect((await Array.fromAsync(db.blocks())).map((b) => b.id)).toEqual(sealed);
    await expect(db.flush({ replicas: 2 })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    await db.close();
  });
});
