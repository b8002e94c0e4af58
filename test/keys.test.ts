import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConflictError, OuroDB, inspectKeys } from '../lib/index.js';
import { FAST_KDF, pseudoRandom, tempDir } from './helpers.js';
import { dump } from './dump.js';

const key = Buffer.alloc(32, 7);
const open = (dir: string, blockSize = 64 * 1024) => OuroDB.open(dir, { key, blockSize, kdf: FAST_KDF, chunkSizes: { min: 4096, avg: 16384, max: 65536 } });
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

describe('keys', () => {
  it('refuses invalid keys with a typed error', async () => {
    const db = await open(tempDir());
    try {
      for (const bad of ['', 'a\0b', '\ud800', 'x'.repeat(1025), 'é'.repeat(513)]) {
        await expect(db.put('v', { key: bad })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      }
      await expect(db.getByKey('')).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.put('v', { key: 'é'.repeat(512) })).resolves.toBeTruthy();
      expect((await db.stats()).objects).toBe(1);
    } finally {
      await db.close();
    }
  });

  it('keeps a head and a history, newest first, with sizes, times and metadata', async () => {
    const db = await open(tempDir());
    try {
      const v1 = await db.put('first', { key: 'doc', meta: { author: 'ann' } });
      const v2 = await db.put(pseudoRandom('big', 200_000), { key: 'doc' });
      const v3 = await db.put('third', { key: 'doc', meta: { author: 'bob' } });
      expect(await db.head('doc')).toBe(v3.hash);
      expect(await db.heads('doc')).toEqual([v3.hash]);
      expect(text(await db.getByKey('doc'))).toBe('third');
      const h = await Array.fromAsync(db.history('doc'));
      expect(h.map((v) => [v.hash, v.version, v.size])).toEqual([
        [v3.hash, 3, 5],
        [v2.hash, 2, 200_000],
        [v1.hash, 1, 5],
      ]);
      expect(h[0]!.meta).toEqual({ author: 'bob' });
      expect(h[0]!.prev).toEqual([v2.hash]);
      expect(h[2]!.prev).toEqual([]);
      expect(h[0]!.created.getTime()).toBeGreaterThanOrEqual(h[2]!.created.getTime());
      expect(Buffer.from(await db.get(v2.hash)).equals(pseudoRandom('big', 200_000))).toBe(true);
      expect((await db.stat(v1.hash)).key).toBe('doc');
      expect(await db.head('nothing')).toBeNull();
      await expect(db.getByKey('nothing')).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
    } finally {
      await db.close();
    }
  });

  it('compare-and-set: ifHead must name the current heads, null means create-only', async () => {
    const db = await open(tempDir());
    try {
      const a = await db.put('a', { key: 'k', ifHead: null });
      await expect(db.put('b', { key: 'k', ifHead: null })).rejects.toBeInstanceOf(ConflictError);
      const b = await db.put('b', { key: 'k', ifHead: a.hash });
      const err = await db.put('c', { key: 'k', ifHead: a.hash }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConflictError);
      expect(err).toMatchObject({ code: 'OURO_CONFLICT', expected: [a.hash], actual: [b.hash] });
      expect(await db.head('k')).toBe(b.hash);
      // Of many concurrent writers naming the same head, exactly one wins.
      const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => db.put(`w${i}`, { key: 'k', ifHead: b.hash })));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(results.filter((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'OURO_CONFLICT')).toHaveLength(15);
      expect(await Array.fromAsync(db.history('k'))).toHaveLength(3);
    } finally {
      await db.close();
    }
  });

  it('two heads from a concurrent version, merged by a put naming both', async () => {
    const db = await open(tempDir());
    try {
      const v1 = await db.put('base', { key: 'k' });
      const v2 = await db.put('mine', { key: 'k' });
      const v2b = await db.put('theirs', { key: 'k', prev: [v1.hash] });
      const heads = await db.heads('k');
      expect([...heads].sort()).toEqual([v2.hash, v2b.hash].sort());
      await expect(db.put('x', { key: 'k', ifHead: v2.hash })).rejects.toMatchObject({ code: 'OURO_CONFLICT' });
      const merged = await db.put('merged', { key: 'k', ifHead: [v2.hash, v2b.hash] });
      expect(await db.heads('k')).toEqual([merged.hash]);
      const st = await db.stat(merged.hash);
      expect([...st.prev].sort()).toEqual([v2.hash, v2b.hash].sort());
      expect((await Array.fromAsync(db.history('k')))[0]).toMatchObject({ hash: merged.hash, version: 3 });
      await expect(db.put('x', { key: 'k', prev: ['0'.repeat(64)] })).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
    } finally {
      await db.close();
    }
  });

  it('ifChanged writes a version only when value, metadata or parent differ from the head', async () => {
    const db = await open(tempDir());
    try {
      const big = pseudoRandom('same', 100_000);
      const v1 = await db.put(big, { key: 'k', meta: { a: '1' }, ifChanged: true });
      expect((await db.put(Buffer.from(big), { key: 'k', meta: { a: '1' }, ifChanged: true })).hash).toBe(v1.hash);
      const v2 = await db.put(big, { key: 'k', meta: { a: '2' }, ifChanged: true });
      expect(v2.hash).not.toBe(v1.hash);
      const v3 = await db.put('small', { key: 'k', ifChanged: true });
      expect((await db.put('small', { key: 'k', ifChanged: true })).hash).toBe(v3.hash);
      expect((await db.put('small', { key: 'k', parent: v1.hash, ifChanged: true })).hash).not.toBe(v3.hash);
      expect(await Array.fromAsync(db.history('k'))).toHaveLength(4);
      await db.delete('k');
      expect((await db.put('small', { key: 'k', ifChanged: true })).hash).not.toBe(v3.hash);
    } finally {
      await db.close();
    }
  });

  it('matches a hint against the head it was given with, keeps only a tag of it, and forgets it with that head', async () => {
    const dir = tempDir();
    let db = await open(dir);
    const hint = (s: string) => Buffer.from(`stat-hint-marker ${s}`);
    try {
      expect(await db.matchHint('f', hint('a'))).toBeNull();
      const v1 = await db.put('bytes', { key: 'f', hint: hint('a'), ifChanged: true });
      expect(v1.unchanged).toBeUndefined();
      expect(await db.matchHint('f', hint('a'))).toBe(v1.hash);
      expect(await db.matchHint('f', hint('b'))).toBeNull();
      expect(await db.matchHint('g', hint('a'))).toBeNull();
      // Equal bytes under ifChanged: the head stays, and the new hint is now the one it matches
      // (after close, which writes hints still waiting for an index batch).
      const same = await db.put('bytes', { key: 'f', hint: hint('b'), ifChanged: true });
      expect(same).toMatchObject({ hash: v1.hash, unchanged: true });
      await db.close();
      db = await open(dir);
      expect(await db.matchHint('f', hint('b'))).toBe(v1.hash);
      expect(await db.matchHint('f', hint('a'))).toBeNull();
      // The index holds a tag, not the hint.
      const indexFiles = fs.readdirSync(path.join(dir, 'index')).map((n) => fs.readFileSync(path.join(dir, 'index', n)));
      expect(indexFiles.some((b) => b.includes('stat-hint-marker'))).toBe(false);
      // A new head without a hint retires it, a new one with a hint replaces it, a delete drops it.
      const v2 = await db.put('other bytes', { key: 'f' });
      expect(await db.matchHint('f', hint('b'))).toBeNull();
      const v3 = await db.put('third', { key: 'f', hint: hint('c') });
      expect(v3.hash).not.toBe(v2.hash);
      expect(await db.matchHint('f', hint('c'))).toBe(v3.hash);
      await db.delete('f');
      expect(await db.matchHint('f', hint('c'))).toBeNull();
      // A purge forgets the row with the key.
      await db.put('purged', { key: 'p', hint: hint('p') });
      await db.put('kept', { key: 'q', hint: hint('q') });
      await db.purge('p');
      await db.close();
      expect((await inspectKeys(dir, 'hint')).map((e) => e['key'])).toEqual(['q']);
      db = await open(dir);
      // A rebuilt index has no hints: the caller does the work the hint would have spared.
      await db.put('kept', { key: 'h', hint: hint('d') });
      await db.rebuildIndex();
      expect(await db.matchHint('h', hint('d'))).toBeNull();
      // The row's content tag stands for the head's fields compared under the set it was put
      // with: a put comparing under another set is not taken for unchanged by it.
      const i1 = await db.put('same', { key: 'i', meta: { ctime: '1', ino: '1' }, hint: hint('f'), ifChanged: { ignoreMeta: ['ctime'] } });
      expect(await db.put('same', { key: 'i', meta: { ctime: '2', ino: '1' }, hint: hint('g'), ifChanged: { ignoreMeta: ['ctime'] } })).toMatchObject({ hash: i1.hash, unchanged: true });
      const i2 = await db.put('same', { key: 'i', meta: { ctime: '3', ino: '1' }, hint: hint('h'), ifChanged: { ignoreMeta: ['ino'] } });
      expect(i2.hash).not.toBe(i1.hash);
      expect(i2.unchanged).toBeUndefined();
      expect(await db.put('changed', { key: 'i', meta: { ctime: '3', ino: '1' }, hint: hint('h'), ifChanged: { ignoreMeta: ['ino'] } })).not.toMatchObject({ unchanged: true });
      // Fields that coincide only because each side leaves out a different entry: the head has
      // b, the new value has not; compared under no set they differ.
      const j1 = await db.put('same', { key: 'j', meta: { a: '1', b: '9' }, hint: hint('i'), ifChanged: { ignoreMeta: ['b'] } });
      const j2 = await db.put('same', { key: 'j', meta: { a: '1' }, hint: hint('j'), ifChanged: true });
      expect(j2.unchanged).toBeUndefined();
      expect(j2.hash).not.toBe(j1.hash);
      await expect(db.put('x', { hint: hint('e') })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.put('x', { key: 'h', hint: Buffer.alloc(1025) })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.put('x', { key: 'h', hint: 'text' as never })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await db.close();
    }
  });

  it('putHinted: no read when the hint matches; one put, kept or new, when not; no other write of the key in between', async () => {
    const dir = tempDir();
    let db = await open(dir);
    const hint = (s: string) => Buffer.from(`hint ${s}`);
    let reads = 0;
    const reader = (v: string | Uint8Array) => () => {
      reads++;
      return v;
    };
    try {
      const v1 = await db.putHinted(reader('one'), { key: 'f', hint: hint('a'), ifChanged: true, meta: { m: '1' } });
      expect(v1).toMatchObject({ read: true, size: 3 });
      expect(reads).toBe(1);
      // The same hint: the head, nothing read.
      expect(await db.putHinted(reader('never read'), { key: 'f', hint: hint('a'), ifChanged: true })).toEqual({ hash: v1.hash, read: false });
      expect(reads).toBe(1);
      // Another hint, equal bytes and metadata: read, the head kept, and the new hint is the head's now.
      const kept = await db.putHinted(reader('one'), { key: 'f', hint: hint('b'), ifChanged: true, meta: { m: '1' } });
      expect(kept).toMatchObject({ hash: v1.hash, unchanged: true, read: true });
      expect(reads).toBe(2);
      await db.flush();
      expect(await db.matchHint('f', hint('b'))).toBe(v1.hash);
      expect(await db.matchHint('f', hint('a'))).toBeNull();
      // Another hint, other bytes: a new version after the head.
      const v2 = await db.putHinted(reader(pseudoRandom('two', 20_000)), { key: 'f', hint: hint('c'), ifChanged: true });
      expect(v2).toMatchObject({ read: true, size: 20_000 });
      expect(v2.hash).not.toBe(v1.hash);
      expect((await Array.fromAsync(db.history('f'))).map((h) => h.hash)).toEqual([v2.hash, v1.hash]);
      // A put of the same key started while putHinted reads waits for it: one line of versions.
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const slow = db.putHinted(async () => {
        await gate;
        return 'three';
      }, { key: 'f', hint: hint('d'), ifChanged: true });
      await new Promise((r) => setTimeout(r, 20));
      const other = db.put('four', { key: 'f' });
      await new Promise((r) => setTimeout(r, 20));
      release();
      const [v3, v4] = await Promise.all([slow, other]);
      expect(await db.heads('f')).toEqual([v4.hash]);
      expect((await Array.fromAsync(db.history('f'))).map((h) => h.hash)).toEqual([v4.hash, v3.hash, v2.hash, v1.hash]);
      // The head without that hint now: read again, written as a new version of 'three'.
      const v5 = await db.putHinted(reader('three'), { key: 'f', hint: hint('d'), ifChanged: true });
      expect(v5.read).toBe(true);
      expect((await db.heads('f'))[0]).toBe(v5.hash);
      await db.close();
      db = await open(dir);
      expect(await db.putHinted(reader('x'), { key: 'f', hint: hint('d'), ifChanged: true })).toEqual({ hash: v5.hash, read: false });
      // A failed read writes nothing and frees the key.
      await expect(db.putHinted(() => Promise.reject(new Error('unreadable')), { key: 'g', hint: hint('e') })).rejects.toThrow('unreadable');
      expect(await db.head('g')).toBeNull();
      expect((await db.put('g', { key: 'g' })).size).toBe(1);
      await expect(db.putHinted(reader('x'), { key: 'g' } as never)).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      await expect(db.putHinted('x' as never, { key: 'g', hint: hint('x') })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await db.close();
    }
  });

  it('after flush(), matchHint sees the hints of every head kept before it, in the same handle', async () => {
    // Kept heads' hints wait to ride in an index batch (1,024 at most, then a batch of their own):
    // flush() writes the rest and waits for those under way. Before it did, a second pass over
    // 3,000 keys in one process matched only the first 1,024.
    const db = await open(tempDir());
    const n = 3000;
    const hint = (i: number, pass: number) => Buffer.from(`hint ${i} ${pass}`);
    const matched = async (pass: number) => {
      let hits = 0;
      for (let i = 0; i < n; i++) if ((await db.matchHint(`k${i}`, hint(i, pass))) !== null) hits++;
      return hits;
    };
    try {
      for (let i = 0; i < n; i++) await db.put(`value ${i}`, { key: `k${i}`, hint: hint(i, 1), ifChanged: true, durability: 'relaxed' });
      await db.flush();
      expect(await matched(1)).toBe(n);
      let kept = 0;
      for (let i = 0; i < n; i++) if ((await db.put(`value ${i}`, { key: `k${i}`, hint: hint(i, 2), ifChanged: true, durability: 'relaxed' })).unchanged) kept++;
      expect(kept).toBe(n);
      await db.flush();
      expect(await matched(2)).toBe(n);
      expect(await matched(1)).toBe(0);
    } finally {
      await db.close();
    }
  });

  it('ifChanged with ignoreMeta leaves the named metadata entries out of the comparison', async () => {
    const db = await open(tempDir());
    try {
      const hints = { ifChanged: { ignoreMeta: ['ctime', 'ino'] } };
      const v1 = await db.put('same bytes', { key: 'f', meta: { mtime: '1', ctime: '10', ino: '5' }, ...hints });
      // Only the ignored entries differ, or one is missing: the head stays, with its own entries.
      expect((await db.put('same bytes', { key: 'f', meta: { mtime: '1', ctime: '11', ino: '6' }, ...hints })).hash).toBe(v1.hash);
      expect((await db.put('same bytes', { key: 'f', meta: { mtime: '1' }, ...hints })).hash).toBe(v1.hash);
      expect((await db.stat(v1.hash)).meta).toEqual({ mtime: '1', ctime: '10', ino: '5' });
      // Any other entry, or the bytes, still make a version; so does a plain ifChanged.
      const v2 = await db.put('same bytes', { key: 'f', meta: { mtime: '2', ctime: '10', ino: '5' }, ...hints });
      expect(v2.hash).not.toBe(v1.hash);
      const v3 = await db.put('new bytes!', { key: 'f', meta: { mtime: '2', ctime: '10', ino: '5' }, ...hints });
      expect(v3.hash).not.toBe(v2.hash);
      const v4 = await db.put('new bytes!', { key: 'f', meta: { mtime: '2', ctime: '12', ino: '5' }, ifChanged: true });
      expect(v4.hash).not.toBe(v3.hash);
      expect(await Array.fromAsync(db.history('f'))).toHaveLength(4);
      await expect(db.put('x', { key: 'f', ifChanged: { ignoreMeta: 'ctime' } as never })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await db.close();
    }
  });

  it('parents and children, paginated; a missing parent is refused', async () => {
    const db = await open(tempDir());
    try {
      const p = await db.put('parent');
      const kids: string[] = [];
      for (let i = 0; i < 25; i++) kids.push((await db.put(`child ${i}`, { parent: p.hash, key: i % 2 ? `c${i}` : undefined })).hash);
      kids.sort();
      const page1 = await db.children(p.hash, { limit: 10 });
      const page2 = await db.children(p.hash, { limit: 10, after: page1.at(-1) });
      const page3 = await db.children(p.hash, { limit: 10, after: page2.at(-1) });
      expect([...page1, ...page2, ...page3]).toEqual(kids);
      expect(page3).toHaveLength(5);
      expect(await db.parent(kids[0]!)).toBe(p.hash);
      expect(await db.parent(p.hash)).toBeNull();
      await expect(db.put('orphan', { parent: 'ab'.repeat(32) })).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      await expect(db.put('orphan', { key: 'orphan', parent: 'ab'.repeat(32), ifChanged: true })).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      expect(await db.head('orphan')).toBeNull();
    } finally {
      await db.close();
    }
  });

  it('lists keys in byte order by prefix, after and limit, from one consistent state', async () => {
    const db = await open(tempDir());
    try {
      const names = ['a', 'a/1', 'a/2', 'a/10', 'b', 'b/x', 'é', 'z'];
      for (const n of names) await db.put(n, { key: n });
      const all = (await Array.fromAsync(db.list())).map((e) => e.key);
      expect(all).toEqual([...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
      expect((await Array.fromAsync(db.list({ prefix: 'a/' }))).map((e) => e.key)).toEqual(['a/1', 'a/10', 'a/2']);
      expect((await Array.fromAsync(db.list({ prefix: 'a/', after: 'a/10' }))).map((e) => e.key)).toEqual(['a/2']);
      expect((await Array.fromAsync(db.list({ limit: 2, after: 'a/2' }))).map((e) => e.key)).toEqual(['b', 'b/x']);
      await db.delete('b');
      expect((await Array.fromAsync(db.list({ prefix: 'b' }))).map((e) => e.key)).toEqual(['b/x']);
      expect((await Array.fromAsync(db.list({ prefix: 'b', includeDeleted: true }))).map((e) => [e.key, e.deleted])).toEqual([
        ['b', true],
        ['b/x', false],
      ]);
      // A listing started before more writes does not see them.
      const it = db.list({ prefix: 'a' });
      const first = await it.next();
      for (let i = 0; i < 5; i++) await db.put('late', { key: `a/late${i}` });
      const rest = await Array.fromAsync({ [Symbol.asyncIterator]: () => it });
      expect([first.value!.key, ...rest.map((e) => e.key)]).toEqual(['a', 'a/1', 'a/10', 'a/2']);
    } finally {
      await db.close();
    }
  });

  it('lists across its read batches: every key once, in byte order, with limits, pages and early stops', async () => {
    // lib/query.ts reads a listing 1000 entries at a time and the next batch while the caller
    // takes one; 2600 keys span three batches, with every 7th deleted (hidden unless asked).
    const db = await OuroDB.open(tempDir(), { key, kdf: FAST_KDF, durability: 'relaxed' });
    try {
      const names = Array.from({ length: 2600 }, (_, i) => `k/${i.toString().padStart(5, '0')}`);
      for (let i = 0; i < names.length; i += 100) await Promise.all(names.slice(i, i + 100).map((n) => db.put(n, { key: n })));
      for (let i = 0; i < names.length; i += 7) await db.delete(names[i]!);
      await db.flush(); // relaxed writes reach the index by then
      const live = names.filter((_, i) => i % 7 !== 0);
      const keysOf = async (o: Parameters<typeof db.list>[0]) => (await Array.fromAsync(db.list(o))).map((e) => e.key);
      expect(await keysOf({})).toEqual(live);
      expect(await keysOf({ includeDeleted: true })).toEqual(names);
      expect(await keysOf({ limit: 1500 })).toEqual(live.slice(0, 1500));
      expect(await keysOf({ prefix: 'k/01', after: 'k/01234', limit: 900 })).toEqual(live.filter((n) => n.startsWith('k/01') && n > 'k/01234').slice(0, 900));
      const paged: string[] = [];
      for (let page = await keysOf({ limit: 700 }); page.length > 0; page = await keysOf({ limit: 700, after: paged.at(-1) })) paged.push(...page);
      expect(paged).toEqual(live);
      // Stopping in the second batch, with the third being read: the listing closes its iterator
      // and the next one (and close) go on as usual.
      let seen = 0;
      for await (const _ of db.list()) if (++seen === 1200) break;
      expect(seen).toBe(1200);
      const one = await db.put('one', { key: 'k/00000' });
      await db.flush();
      expect((await Array.fromAsync(db.list({ limit: 1 })))[0]).toEqual({ key: 'k/00000', hash: one.hash, heads: [one.hash], deleted: false });
    } finally {
      await db.close();
    }
  });

  it('lists a prefix up to its last key, whatever the bytes after it', async () => {
    // The upper bound of a prefix is 'k' + prefix + 0xff, not UTF-8: it must reach LevelDB as
    // bytes. Turned into a string it would end at U+FFFD (EF BF BD) and leave out these keys.
    const db = await open(tempDir());
    try {
      const names = ['o\u{10FFFF}x', 'p', 'p\uFFFD', 'p\uFFFF', 'p\u{10FFFF}', 'p\u{10FFFF}\u{10FFFF}', 'q', '\u{10FFFF}'];
      for (const n of names) await db.put(n, { key: n });
      const keysOf = async (o: Parameters<typeof db.list>[0]) => (await Array.fromAsync(db.list(o))).map((e) => e.key);
      expect(await keysOf({ prefix: 'p' })).toEqual(['p', 'p\uFFFD', 'p\uFFFF', 'p\u{10FFFF}', 'p\u{10FFFF}\u{10FFFF}']);
      expect(await keysOf({ prefix: 'p\u{10FFFF}' })).toEqual(['p\u{10FFFF}', 'p\u{10FFFF}\u{10FFFF}']);
      expect(await keysOf({ prefix: 'o' })).toEqual(['o\u{10FFFF}x']);
      expect(await keysOf({ after: 'q' })).toEqual(['\u{10FFFF}']);
      expect(await keysOf({})).toEqual([...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
    } finally {
      await db.close();
    }
  });

  it('delete writes a tombstone that history keeps; purge forgets every version', async () => {
    const db = await open(tempDir());
    try {
      const v1 = await db.put('one', { key: 'k' });
      const t = await db.delete('k');
      await expect(db.getByKey('k')).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      expect(await db.head('k')).toBe(t.hash);
      expect((await Array.fromAsync(db.history('k'))).map((v) => v.type)).toEqual(['tombstone', 'value']);
      expect(text(await db.get(v1.hash))).toBe('one');
      const v3 = await db.put('again', { key: 'k' });
      expect((await db.stat(v3.hash)).prev).toEqual([t.hash]);
      expect(await db.purge('k')).toEqual({ versions: 3 });
      await expect(db.get(v1.hash)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      expect(await db.head('k')).toBeNull();
      expect(await Array.fromAsync(db.history('k'))).toEqual([]);
      expect(await db.purge('k')).toEqual({ versions: 0 });
      const fresh = await db.put('new life', { key: 'k' });
      expect((await db.stat(fresh.hash)).prev).toEqual([]);
      expect((await db.stats()).objects).toBe(1);
    } finally {
      await db.close();
    }
  });
});

describe('gc', () => {
  it('small chunks put again among many puts in flight (looked up before sealing) are stored once and keep their values through gc', async () => {
    const dir = tempDir();
    const db = await open(dir, 1 << 20);
    const value = (i: number) => pseudoRandom(`small-${i}`, 6000 + ((i * 997) % 14_000));
    try {
      await Promise.all(Array.from({ length: 200 }, (_, i) => db.put(value(i), { key: `a/${i}` })));
      await db.flush();
      const before = await db.stats();
      // The same 200 values under other keys, with 50 new ones among them, 25 at a time (the
      // first waves teach the engine that most chunks are stored; later ones look them up first).
      const again = Array.from({ length: 250 }, (_, j) => (j % 5 === 4 ? 1000 + j : j - Math.floor(j / 5)));
      for (let w = 0; w < again.length; w += 25) await Promise.all(again.slice(w, w + 25).map((i) => db.put(value(i), { key: `b/${i}` })));
      await db.flush();
      const after = await db.stats();
      const fresh = again.filter((i) => i >= 1000);
      expect(after.uniqueBytes - before.uniqueBytes).toBe(fresh.reduce((n, i) => n + value(i).length, 0));
      for (let i = 0; i < 200; i++) await db.purge(`a/${i}`);
      await db.gc();
      for (const i of again) expect(Buffer.from(await db.getByKey(`b/${i}`)).equals(value(i))).toBe(true);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('gives the space of purged values back, on disk and in stats, and keeps the rest', async () => {
    const dir = tempDir();
    const db = await open(dir, 1 << 20);
    try {
      for (let i = 0; i < 24; i++) await db.put(pseudoRandom(`v${i}`, 300_000), { key: `k${i}` });
      await db.flush();
      const before = await db.stats();
      for (let i = 0; i < 20; i++) await db.purge(`k${i}`);
      const report = await db.gc();
      const after = await db.stats();
      expect(report.blocksRemoved).toBeGreaterThan(0);
      expect(after.storedBytes).toBeLessThan(before.storedBytes * 0.3);
      expect(after.uniqueBytes).toBe(4 * 300_000);
      expect(after.objects).toBe(4);
      expect(diskBytes(path.join(dir, 'blocks'))).toBeLessThan(before.storedBytes * 0.3);
      for (let i = 20; i < 24; i++) expect(Buffer.from(await db.getByKey(`k${i}`)).equals(pseudoRandom(`v${i}`, 300_000))).toBe(true);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
    const again = await open(dir);
    try {
      expect(Buffer.from(await again.getByKey('k23')).equals(pseudoRandom('v23', 300_000))).toBe(true);
      expect((await again.check({ readData: true })).ok).toBe(true);
    } finally {
      await again.close();
    }
  });

  it('runs while writers reuse the chunks it is collecting, and loses none of them', async () => {
    const dir = tempDir();
    const db = await open(dir, 256 * 1024);
    try {
      const value = (i: number) => pseudoRandom(`shared${i % 10}`, 50_000);
      for (let i = 0; i < 40; i++) await db.put(value(i), { key: `old${i}` });
      await db.flush();
      for (let i = 0; i < 40; i++) await db.purge(`old${i}`);
      const writes = (async () => {
        for (let i = 0; i < 40; i++) await db.put(value(i), { key: `new${i}` });
      })();
      const gcs = (async () => {
        for (let r = 0; r < 4; r++) await db.gc({ threshold: 1 });
      })();
      await Promise.all([writes, gcs]);
      await db.flush();
      await db.gc({ threshold: 1 });
      for (let i = 0; i < 40; i++) expect(Buffer.from(await db.getByKey(`new${i}`)).equals(value(i))).toBe(true);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('a history iteration keeps reading the versions it saw while gc moves them', async () => {
    const db = await open(tempDir(), 64 * 1024);
    try {
      for (let i = 0; i < 6; i++) await db.put(pseudoRandom(`h${i}`, 30_000), { key: 'h' });
      for (let i = 0; i < 6; i++) await db.put(pseudoRandom(`x${i}`, 30_000), { key: `x${i}` });
      await db.flush();
      const it = db.history('h');
      const first = await it.next();
      for (let i = 0; i < 6; i++) await db.purge(`x${i}`);
      await db.gc({ threshold: 1 });
      const rest = await Array.fromAsync({ [Symbol.asyncIterator]: () => it });
      expect([first.value!, ...rest].map((v) => v.version)).toEqual([6, 5, 4, 3, 2, 1]);
    } finally {
      await db.close();
    }
  });
});

describe('check and rebuildIndex', () => {
  async function populate(db: OuroDB): Promise<void> {
    const root = await db.put('root');
    for (let i = 0; i < 30; i++) {
      await db.put(pseudoRandom(`p${i}`, i % 3 === 0 ? 40_000 : 900), { key: `key/${i % 12}`, parent: i % 4 === 0 ? root.hash : undefined, meta: { i: String(i) } });
    }
    await db.put('fork', { key: 'key/1', prev: [(await Array.fromAsync(db.history('key/1'))).at(-1)!.hash] });
    await db.delete('key/2');
    await db.purge('key/3');
    await db.put('unkeyed');
  }

  it('rebuildIndex answers every query as the original index did', async () => {
    const dir = tempDir();
    const db = await open(dir);
    try {
      await populate(db);
      const before = await dump(db);
      const report = await db.rebuildIndex();
      expect(report.skipped).toEqual([]);
      expect(await dump(db)).toEqual(before);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('opening with a lost index directory rebuilds it, open blocks included', async () => {
    const dir = tempDir();
    const db = await open(dir, 1 << 20);
    await populate(db);
    await db.flush();
    await db.put('in an open block', { key: 'late' });
    const before = await dump(db);
    // Copy the directory while the handle is open: the image a kill -9 leaves (an open block, WAL).
    const crashed = tempDir();
    fs.cpSync(dir, crashed, { recursive: true });
    await db.close();
    fs.rmSync(path.join(crashed, 'index'), { recursive: true });
    const reopened = await open(crashed);
    try {
      expect(await dump(reopened)).toEqual(before);
      expect(text(await reopened.getByKey('late'))).toBe('in an open block');
    } finally {
      await reopened.close();
    }
  });

  it('opening with a corrupt index moves it aside and rebuilds', async () => {
    const dir = tempDir();
    const db = await open(dir);
    await populate(db);
    const before = await dump(db);
    await db.close();
    const index = path.join(dir, 'index');
    for (const f of fs.readdirSync(index).filter((f) => f.startsWith('MANIFEST-'))) fs.writeFileSync(path.join(index, f), Buffer.alloc(200, 0xaa));
    const reopened = await open(dir);
    try {
      expect(await dump(reopened)).toEqual(before);
      expect(fs.readdirSync(dir).some((f) => f.startsWith('index.corrupt-'))).toBe(true);
    } finally {
      await reopened.close();
    }
  });

  it('check reports damaged entries, missing blocks and wrong counts as data', async () => {
    const dir = tempDir();
    const db = await open(dir, 64 * 1024);
    await populate(db);
    await db.flush();
    expect(await db.check({ readData: true })).toMatchObject({ ok: true, problems: [] });
    await db.close();
    // Flip a byte inside a live object's entry (found through the index), delete another block.
    const objects = (await inspectKeys(dir, 'object')) as Array<{ hash: string; location: { seq: number; offset: number } }>;
    const seqs = new Map(((await inspectKeys(dir, 'sealed-seq')) as Array<{ seq: number; block: string }>).map((r) => [r.seq, r.block]));
    const target = objects[0]!;
    const blockFile = (id: string) => path.join(dir, 'blocks', id.slice(0, 2), `${id}.blk`);
    const victim = blockFile(seqs.get(target.location.seq)!);
    const bytes = fs.readFileSync(victim);
    bytes[target.location.offset + 72 + 3]! ^= 0xff;
    fs.writeFileSync(victim, bytes);
    fs.rmSync(blockFile([...seqs.values()].find((id) => blockFile(id) !== victim)!));
    const reopened = await open(dir);
    try {
      const structural = await reopened.check();
      expect(structural.ok).toBe(false);
      expect(structural.problems.map((p) => p.kind)).toContain('block-missing');
      const full = await reopened.check({ readData: true });
      const kinds = new Set(full.problems.map((p) => p.kind));
      expect(kinds.has('entry-corrupt')).toBe(true);
      expect(kinds.has('block-missing')).toBe(true);
      expect(full.problems.find((p) => p.kind === 'entry-corrupt')).toMatchObject({ id: target.hash, block: seqs.get(target.location.seq) });
    } finally {
      await reopened.close();
    }
  });
});

function diskBytes(dir: string): number {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .reduce((n, e) => n + fs.statSync(path.join(e.parentPath, e.name)).size, 0);
}

describe('argon2id', () => {
  // The key of every passphrase slot: node:crypto's argon2 (used when Node has it) must give
  // exactly what @noble/hashes gave when the slot was written, for any cost a descriptor holds.
  it("node:crypto's Argon2id gives @noble/hashes' key", async () => {
    const { argon2id, argon2idPortable } = await import('../lib/keyring.js');
    const crypto = await import('node:crypto');
    expect(typeof crypto.argon2).toBe('function'); // else argon2id() below is the portable one
    const salt = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
    for (const [passphrase, cost] of [['correct horse', { m: 64, t: 1, p: 1 }], ['pässwörd ✓', { m: 256, t: 3, p: 2 }], ['x', { m: 1024, t: 2, p: 4 }]] as const) {
      const native = await argon2id(passphrase, salt, cost);
      const portable = await argon2idPortable(Buffer.from(passphrase, 'utf8'), salt, cost);
      expect(Buffer.from(native).toString('hex')).toBe(Buffer.from(portable).toString('hex'));
      expect(native.byteLength).toBe(32);
    }
  });
});
