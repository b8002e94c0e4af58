/**
 * Read-your-writes under durability 'relaxed' (lib/landed.ts): a relaxed put or delete resolves
 * once its bytes are handed to the OS, before its group commit lands in the index. Every read
 * made after it resolved must see it all the same: get, stream, has, stat, parent, getByKey,
 * head, heads, matchHint, history, list, children, objects and stats. A commit that fails after
 * the write resolved (a failed fsync) leaves the reads working, on the state without that write.
 *
 * Each check below runs right after the write it depends on resolved, with nothing else awaited
 * in between, so the commit is still under way (on main before this change every one of them
 * failed: OURO_NOT_FOUND, or the state before the write).
 */
import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { NodeVfs, OuroDB } from '../lib/index.js';
import type { OpenOptions, VfsFile } from '../lib/index.js';
import { FAST_KDF, pseudoRandom, tempDir } from './helpers.js';

const OPTIONS: OpenOptions = { key: Buffer.alloc(32, 7), kdf: FAST_KDF, durability: 'relaxed', blockSize: 64 * 1024, chunkSizes: { min: 1024, avg: 2048, max: 4096 } };
/** Values inline (small), chunked (large) and in between. */
const valueOf = (i: number) => pseudoRandom(`relaxed ${i}`, [10, 3000, 20_000][i % 3]!);
const hintOf = (i: number) => Buffer.from(`hint ${i}`);

async function bytesOf(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

async function listed(db: OuroDB, prefix: string, includeDeleted = false) {
  return Array.fromAsync(db.list({ prefix, includeDeleted }));
}

async function withDb(fn: (db: OuroDB) => Promise<void>, options: OpenOptions = OPTIONS): Promise<void> {
  const db = await OuroDB.open(tempDir(), options);
  try {
    await fn(db);
  } finally {
    await db.close();
  }
}

/** One read API, called right after a relaxed put of `value` under `key` (hash `hash`) resolved. */
type Check = (db: OuroDB, w: { key: string; hash: string; value: Buffer; hint: Buffer; parent: string }) => Promise<void>;

const afterPut: Record<string, Check> = {
  get: async (db, w) => expect(Buffer.from(await db.get(w.hash)).equals(w.value)).toBe(true),
  stream: async (db, w) => expect((await bytesOf(db.stream(w.hash))).equals(w.value)).toBe(true),
  has: async (db, w) => expect(await db.has(w.hash)).toBe(true),
  stat: async (db, w) => expect(await db.stat(w.hash)).toMatchObject({ hash: w.hash, size: w.value.length, key: w.key }),
  parent: async (db, w) => expect(await db.parent(w.hash)).toBe(w.parent),
  getByKey: async (db, w) => expect(Buffer.from(await db.getByKey(w.key)).equals(w.value)).toBe(true),
  head: async (db, w) => expect(await db.head(w.key)).toBe(w.hash),
  heads: async (db, w) => expect(await db.heads(w.key)).toEqual([w.hash]),
  matchHint: async (db, w) => expect(await db.matchHint(w.key, w.hint)).toBe(w.hash),
  history: async (db, w) => expect((await Array.fromAsync(db.history(w.key)))[0]?.hash).toBe(w.hash),
  list: async (db, w) => expect((await listed(db, w.key)).map((e) => e.hash)).toEqual([w.hash]),
  children: async (db, w) => expect(await db.children(w.parent)).toContain(w.hash),
  objects: async (db, w) => {
    const hashes: string[] = [];
    for await (const o of db.objects()) hashes.push(o.hash);
    expect(hashes).toContain(w.hash);
  },
};

describe('a relaxed write is visible to every read once it resolved', () => {
  for (const [name, check] of Object.entries(afterPut)) {
    it(`${name} right after a relaxed put, and after a relaxed overwrite`, async () => {
      await withDb(async (db) => {
        const parent = (await db.put('parent', { durability: 'durable' })).hash;
        for (let i = 0; i < 6; i++) {
          // A new key, then the same key overwritten: each read comes right after its write resolved.
          for (const key of [`new ${i}`, 'same']) {
            const value = valueOf(i);
            const hint = hintOf(i);
            const r = await db.put(value, { key, hint, parent });
            await check(db, { key, hash: r.hash, value, hint, parent });
          }
        }
      });
    });
  }

  it('stats count a relaxed put once it resolved', async () => {
    await withDb(async (db) => {
      for (let i = 0; i < 6; i++) {
        const before = (await db.stats()).objects;
        await db.put(valueOf(i), { key: `k${i}` });
        expect((await db.stats()).objects).toBe(before + 1);
      }
    });
  });

  it('a relaxed delete: getByKey, head, heads, history and list see the tombstone at once', async () => {
    await withDb(async (db) => {
      for (let i = 0; i < 6; i++) {
        const key = `doc ${i}`;
        // The put is relaxed too: both its commit and the delete's may still be under way.
        await db.put(valueOf(i), { key, hint: hintOf(i) });
        const d = await db.delete(key);
        await expect(db.getByKey(key)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
        expect(await db.head(key)).toBe(d.hash);
        expect(await db.heads(key)).toEqual([d.hash]);
        expect(await db.matchHint(key, hintOf(i))).toBeNull();
        expect((await Array.fromAsync(db.history(key)))[0]).toMatchObject({ hash: d.hash, type: 'tombstone' });
        expect(await listed(db, key)).toEqual([]);
        expect(await listed(db, key, true)).toMatchObject([{ key, hash: d.hash, deleted: true }]);
      }
    });
  });

  it('many writers, each with concurrent readers: every reader sees its writer’s last resolved write', async () => {
    await withDb(async (db) => {
      const writers = 8;
      const rounds = 25;
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          const key = `writer ${w}`;
          for (let i = 0; i < rounds; i++) {
            const value = valueOf(w * rounds + i);
            if (i % 5 === 4) {
              const d = await db.delete(key);
              const seen = await Promise.all([db.getByKey(key).then(() => 'found', (e: { code?: string }) => e.code), db.head(key), listed(db, key)]);
              expect(seen).toEqual(['OURO_NOT_FOUND', d.hash, []]);
              continue;
            }
            const r = await db.put(value, { key });
            const seen = await Promise.all([db.getByKey(key), db.get(r.hash), db.head(key), listed(db, key), db.has(r.hash)]);
            expect(Buffer.from(seen[0]).equals(value), `${key} round ${i}`).toBe(true);
            expect(Buffer.from(seen[1]).equals(value)).toBe(true);
            expect(seen.slice(2)).toEqual([r.hash, [expect.objectContaining({ key, hash: r.hash })], true]);
          }
        }),
      );
    });
  });
});

/**
 * fdatasync taking a few milliseconds, as a disk's does (an injected fault from lib/vfs/faulty.ts
 * fails at once, before a read made right after the write could start), and failing with
 * `failWith` once that is set.
 */
class FailingSyncVfs extends NodeVfs {
  failWith: string | undefined;
  failed = 0;
  /** Writes fail at once with this code while it is set (a full disk). */
  failWrites: string | undefined;

  override async open(path: string, flags: 'r' | 'r+'): Promise<VfsFile> {
    return this.#slow(await super.open(path, flags));
  }

  override async create(path: string, options: { exclusive: boolean }): Promise<VfsFile> {
    return this.#slow(await super.create(path, options));
  }

  #slow(file: VfsFile): VfsFile {
    return {
      read: (buf, offset, length, position) => file.read(buf, offset, length, position),
      readSync: (buf, offset, length, position) => file.readSync(buf, offset, length, position),
      writev: (bufs, position) => {
        const code = this.failWrites;
        if (code === undefined) return file.writev(bufs, position);
        return Promise.reject(Object.assign(new Error(`${code}: injected failure of write`), { code, syscall: 'write' }));
      },
      datasync: async () => {
        await sleep(10);
        const code = this.failWith;
        if (code === undefined) return file.datasync();
        this.failed++;
        throw Object.assign(new Error(`${code}: injected failure of datasync`), { code, syscall: 'datasync' });
      },
      sync: () => file.sync(),
      truncate: (length) => file.truncate(length),
      size: () => file.size(),
      close: () => file.close(),
    };
  }
}

describe('a relaxed write whose commit fails', () => {
  for (const code of ['EIO', 'ENOSPC']) {
    it(`(fdatasync fails with ${code}) leaves reads working, on the state without it`, async () => {
      const vfs = new FailingSyncVfs();
      await withDb(
        async (db) => {
          const v1 = await db.put(valueOf(1), { key: 'k', durability: 'durable' });
          vfs.failWith = code;
          // Resolves once written; the fdatasync of its commit then fails, which is fatal to the
          // handle (OURO_FAILED for writes), not to reads.
          const v2 = await db.put(valueOf(2), { key: 'k', hint: hintOf(2) });
          // Every read starts now, while the commit is under way, and waits for it.
          const settle = <T>(p: Promise<T>) => p.then((v) => v, (e: { code?: string }) => e.code);
          const reads = await Promise.all([
            settle(db.getByKey('k').then((v) => Buffer.from(v).equals(valueOf(1)))),
            settle(db.head('k')),
            settle(db.heads('k')),
            settle(db.matchHint('k', hintOf(2))),
            settle(Array.fromAsync(db.history('k')).then((vs) => vs.map((v) => v.hash))),
            settle(listed(db, 'k').then((es) => es.map((e) => e.hash))),
            settle(db.get(v2.hash)),
            settle(db.has(v2.hash)),
            settle(db.stats().then((st) => st.objects)),
          ]);
          expect(vfs.failed).toBeGreaterThan(0);
          expect(reads).toEqual([true, v1.hash, [v1.hash], null, [v1.hash], [v1.hash], 'OURO_NOT_FOUND', false, 1]);
          await expect(db.put('more')).rejects.toMatchObject({ code: 'OURO_FAILED' });
        },
        { ...OPTIONS, fs: vfs },
      );
    });
  }

  it('a version the disk refuses does not hide the older one still committing', async () => {
    const vfs = new FailingSyncVfs();
    await withDb(
      async (db) => {
        for (let i = 0; i < 4; i++) {
          await db.put(valueOf(3 * i), { key: 'k', durability: 'durable' });
          // v2 is written; its commit (a 10 ms fdatasync) is under way when v3, queued after it,
          // fails for lack of space: v3's commit is rejected, v2's still lands.
          const v2 = await db.put(valueOf(3 * i + 1), { key: 'k' });
          vfs.failWrites = 'ENOSPC';
          const v3 = db.put(valueOf(3 * i + 2), { key: 'k' });
          await expect(v3).rejects.toMatchObject({ code: 'OURO_DISK_FULL' });
          vfs.failWrites = undefined;
          // Waits for v3's commit, then, as that failed, for v2's.
          expect(await db.head('k')).toBe(v2.hash);
          expect(Buffer.from(await db.getByKey('k')).equals(valueOf(3 * i + 1))).toBe(true);
        }
      },
      { ...OPTIONS, fs: vfs },
    );
  });
});
