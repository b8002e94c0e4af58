/**
 * OuroBlockstore (lib/ipfs-blockstore.ts, `ourodb/blockstore`): the ecosystem's conformance suite
 * (interface-blockstore-tests) over a real database, a UnixFS round trip of a real tree through
 * Helia's importer and exporter across a reopen (same root CID as blockstore-fs), and the edges
 * the suite does not cover (versions, purge and gc, tombstones, prefixes, aborts mid-stream).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBlockstore } from 'blockstore-fs';
import { interfaceBlockstoreTests } from 'interface-blockstore-tests';
import { NotFoundError } from 'interface-store';
import { exporter, recursive } from 'ipfs-unixfs-exporter';
import { importer } from 'ipfs-unixfs-importer';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { sha256 } from 'multiformats/hashes/sha2';
import { OuroDB } from '../lib/index.js';
import { OuroBlockstore } from '../lib/ipfs-blockstore.js';
import { expect as chaiExpect } from './aegir-chai.js';
import { pseudoRandom, tempDir } from './helpers.js';

// The suite calls mocha's globals; vitest's are imports. These four are all it uses.
Object.assign(globalThis, { describe, it, beforeEach, afterEach });

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

async function openStore(dir = tempDir(), key: Uint8Array = crypto.randomBytes(32), prefix?: string): Promise<OuroBlockstore> {
  const db = await OuroDB.open(dir, { key });
  return new OuroBlockstore(db, prefix === undefined ? {} : { prefix });
}

async function block(bytes: Uint8Array): Promise<{ cid: CID; bytes: Uint8Array }> {
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes };
}

async function collect(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of source) parts.push(p);
  return Buffer.concat(parts);
}

async function count<T>(source: AsyncIterable<T>): Promise<number> {
  let n = 0;
  for await (const _ of source) n++;
  return n;
}

/** The error a promise rejects with (fails if it fulfils). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('aegir/chai shim (test/aegir-chai.ts)', () => {
  // The suite's verdicts are only as good as these: a failing assertion must fail.
  it('eventually.be.rejected passes on a rejection and fails on a fulfilment', async () => {
    await chaiExpect(Promise.reject(new Error('was aborted'))).to.eventually.be.rejected.with.property('message').that.include('abort');
    await chaiExpect(Promise.reject(Object.assign(new Error('x'), { name: 'NotFoundError' }))).to.eventually.be.rejected.with.property('name', 'NotFoundError');
    await expect(chaiExpect(Promise.resolve(1)).to.eventually.be.rejected).rejects.toThrow(/to be rejected/);
    await expect(chaiExpect(Promise.reject(new Error('other'))).to.eventually.be.rejected.with.property('message').that.include('abort')).rejects.toThrow(/abort/);
    await expect(chaiExpect(Promise.reject(new Error('x'))).to.eventually.be.rejected.with.property('name', 'NotFoundError')).rejects.toThrow(/NotFoundError/);
  });

  it('eventually.deep.equal compares the fulfilled value', async () => {
    await chaiExpect(Promise.resolve([new Uint8Array([1, 2])])).to.eventually.deep.equal([new Uint8Array([1, 2])]);
    await expect(chaiExpect(Promise.resolve([new Uint8Array([1, 2])])).to.eventually.deep.equal([new Uint8Array([1, 3])])).rejects.toThrow();
    await expect(chaiExpect(Promise.reject(new Error('boom'))).to.eventually.deep.equal([])).rejects.toThrow('boom');
  });

  it('ok(), true() and false() assert', () => {
    chaiExpect(1).to.be.ok();
    chaiExpect(true).to.be.true();
    chaiExpect(false).to.be.false();
    expect(() => chaiExpect(undefined).to.be.ok()).toThrow();
    expect(() => chaiExpect(false).to.be.true()).toThrow();
    expect(() => chaiExpect(true).to.be.false()).toThrow();
  });
});

describe('interface-blockstore-tests over OuroBlockstore', () => {
  interfaceBlockstoreTests({
    setup: () => openStore(),
    teardown: async (store) => {
      await store.db.close();
    },
  });
});

describe('interface-blockstore-tests with a prefix, beside other keys and another store', () => {
  interfaceBlockstoreTests({
    setup: async () => {
      const store = await openStore(undefined, undefined, 'shared/blocks/');
      // Keys that are not this store's: getAll must yield none of them.
      await store.db.put('application value', { key: 'app/readme' });
      await store.db.put('not a block', { key: 'shared/blocks/not-a-multihash' });
      const other = new OuroBlockstore(store.db);
      const b = await block(crypto.randomBytes(100));
      await other.put(b.cid, b.bytes);
      return store;
    },
    teardown: async (store) => {
      await store.db.close();
    },
  });
});

describe('UnixFS through OuroBlockstore', () => {
  it('imports lib/ and docs/ plus a 5 MiB file, and exports every file byte for byte after a reopen; blockstore-fs gives the same root', async () => {
    // Read once: other work may change these files while the test runs.
    const files = new Map<string, Uint8Array>();
    for (const top of ['lib', 'docs']) {
      for (const e of fs.readdirSync(path.join(repo, top), { recursive: true, withFileTypes: true })) {
        if (!e.isFile()) continue;
        const abs = path.join(e.parentPath, e.name);
        files.set(path.relative(repo, abs).split(path.sep).join('/'), fs.readFileSync(abs));
      }
    }
    files.set('random/five-mib.bin', pseudoRandom('ipfs-blockstore five MiB', 5 << 20));
    expect(files.size).toBeGreaterThan(20);
    const candidates = () => [...files].map(([p, content]) => ({ path: p, content }));
    const importAll = async (bs: Parameters<typeof importer>[1]): Promise<CID> => {
      let root: CID | undefined;
      for await (const entry of importer(candidates(), bs, { wrapWithDirectory: true })) root = entry.cid;
      return root!;
    };

    const dir = tempDir();
    const key = crypto.randomBytes(32);
    let store = await openStore(dir, key);
    const root = await importAll(store);
    const stats = await store.db.stats();
    await store.db.close();

    const fsStore = new FsBlockstore(tempDir());
    await fsStore.open();
    expect((await importAll(fsStore)).toString()).toBe(root.toString());
    await fsStore.close();

    store = await openStore(dir, key);
    try {
      // Every block of the tree is there after the reopen, and the tree holds exactly these files.
      let blocks = 0;
      for await (const pair of store.getAll()) {
        blocks++;
        expect((await collect(pair.bytes)).length).toBeGreaterThan(0);
      }
      expect(blocks).toBe(stats.objects);
      const exported: string[] = [];
      for await (const entry of recursive(root, store)) {
        const node = await exporter(entry.cid, store);
        // A file of one leaf is that raw leaf itself (rawLeaves, reduceSingleLeafToSelf).
        if (node.type === 'file' || node.type === 'raw') exported.push(entry.path.slice(root.toString().length + 1));
      }
      expect(exported.sort()).toEqual([...files.keys()].sort());
      for (const [p, original] of files) {
        const node = await exporter(`${root.toString()}/${p}`, store);
        if (node.type !== 'file' && node.type !== 'raw') throw new Error(`${p} exported as a ${node.type}`);
        const bytes = await collect(node.content());
        expect(bytes.length, p).toBe(original.length);
        expect(bytes.equals(original), p).toBe(true);
      }
      // The 5 MiB file spans several UnixFS chunks (256 KiB leaves).
      const big = await exporter(`${root.toString()}/random/five-mib.bin`, store);
      expect(big.type === 'file' && big.node.Links.length).toBeGreaterThanOrEqual(20);
    } finally {
      await store.db.close();
    }
  });
});

describe('OuroBlockstore edges', () => {
  it('a missing block is NotFoundError from interface-store, for get, getMany and after a delete', async () => {
    const store = await openStore();
    try {
      const b = await block(crypto.randomBytes(64));
      const err = await rejection(collect(store.get(b.cid)));
      expect(err.name).toBe('NotFoundError');
      expect(err).toBeInstanceOf(NotFoundError);
      expect(await store.has(b.cid)).toBe(false);
      await store.put(b.cid, b.bytes);
      await store.delete(b.cid);
      expect((await rejection(collect(store.get(b.cid)))).name).toBe('NotFoundError');
      await store.delete(b.cid); // deleting a missing block is a no-op
      for await (const pair of store.getMany([b.cid])) expect((await rejection(collect(pair.bytes))).name).toBe('NotFoundError');
    } finally {
      await store.db.close();
    }
  });

  it('an aborted signal rejects every operation with the abort reason, and stops a get mid-stream', async () => {
    const store = await openStore();
    try {
      const b = await block(pseudoRandom('abort mid-stream', 3 << 20)); // several OuroDB chunks
      await store.put(b.cid, b.bytes);
      const aborted = AbortSignal.abort();
      const signal = { signal: aborted };
      for (const op of [
        () => store.put(b.cid, b.bytes, signal),
        () => collect(store.get(b.cid, signal)),
        () => store.has(b.cid, signal),
        () => store.delete(b.cid, signal),
        () => count(store.putMany([b], signal)),
        () => count(store.deleteMany([b.cid], signal)),
        () => count(store.getAll(signal)),
      ]) {
        expect((await rejection(op())).name).toBe('AbortError');
      }
      const reason = new Error('stop here');
      expect(await rejection(store.put((await block(new Uint8Array([1]))).cid, new Uint8Array([1]), { signal: AbortSignal.abort(reason) }))).toBe(reason);
      // Mid-stream: the first piece arrives, then the abort ends the read.
      const controller = new AbortController();
      const pieces = store.get(b.cid, { signal: controller.signal });
      const first = await pieces.next();
      expect(first.done).toBe(false);
      controller.abort();
      expect((await rejection(pieces.next())).name).toBe('AbortError');
      // Nothing was deleted or written by the aborted calls.
      expect((await collect(store.get(b.cid))).equals(b.bytes)).toBe(true);
      expect(await count(store.db.history(store.keyOf(b.cid)))).toBe(1);
    } finally {
      await store.db.close();
    }
  });

  it('putting a block again, at once or later, as CIDv0 or CIDv1, leaves one version', async () => {
    const store = await openStore();
    try {
      for (const size of [100, 300 * 1024]) {
        const b = await block(crypto.randomBytes(size));
        await Promise.all([store.put(b.cid, b.bytes), store.put(b.cid, b.bytes), store.put(b.cid, (async function* () { yield b.bytes; })())]);
        await store.put(b.cid, b.bytes);
        const v0 = CID.createV0(b.cid.multihash as Parameters<typeof CID.createV0>[0]);
        await store.put(v0, [b.bytes]);
        expect(await count(store.putMany([b, b, { cid: v0, bytes: b.bytes }]))).toBe(3);
        expect(store.keyOf(v0)).toBe(store.keyOf(b.cid));
        expect(await count(store.db.history(store.keyOf(b.cid)))).toBe(1);
        expect((await collect(store.get(v0))).equals(b.bytes)).toBe(true);
      }
      expect((await store.db.stats()).objects).toBe(2);
    } finally {
      await store.db.close();
    }
  });

  it('delete purges every version, and gc then reclaims the space', async () => {
    const store = await openStore();
    try {
      const blocks = await Promise.all(Array.from({ length: 24 }, (_, i) => block(pseudoRandom(`gc block ${i}`, 1 << 20))));
      await count(store.putMany(blocks));
      const keep = await block(crypto.randomBytes(1000));
      await store.put(keep.cid, keep.bytes);
      await store.db.flush(); // seal what was written into blocks gc can compact
      const before = await store.db.stats();
      expect(await count(store.deleteMany(blocks.map((b) => b.cid)))).toBe(blocks.length);
      for (const b of blocks) {
        expect(await store.has(b.cid)).toBe(false);
        expect(await count(store.db.history(store.keyOf(b.cid)))).toBe(0); // purged, not tombstoned
      }
      const report = await store.db.gc();
      const after = await store.db.stats();
      expect(report.bytesFreed).toBeGreaterThan(20 << 20);
      expect(after.storedBytes).toBeLessThan(before.storedBytes - (20 << 20));
      expect((await collect(store.get(keep.cid))).equals(keep.bytes)).toBe(true);
    } finally {
      await store.db.close();
    }
  });

  it('blocks survive close and reopen, and getAll gives them back as CIDv1 raw of their multihash', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    let store = await openStore(dir, key);
    const blocks = await Promise.all([10, 5000, 200 * 1024].map((n) => block(crypto.randomBytes(n))));
    await count(store.putMany(blocks));
    await store.db.close();
    store = await openStore(dir, key);
    try {
      for (const b of blocks) expect((await collect(store.get(b.cid))).equals(b.bytes)).toBe(true);
      const all = new Map<string, Buffer>();
      for await (const pair of store.getAll()) {
        expect(pair.cid.version).toBe(1);
        expect(pair.cid.code).toBe(raw.code);
        all.set(pair.cid.toString(), await collect(pair.bytes));
      }
      expect(all.size).toBe(blocks.length);
      for (const b of blocks) expect(all.get(b.cid.toString())?.equals(b.bytes)).toBe(true);
    } finally {
      await store.db.close();
    }
  });

  it('a tombstone written by OuroDB delete reads as missing, and a put brings the block back', async () => {
    const store = await openStore();
    try {
      const b = await block(crypto.randomBytes(500));
      await store.put(b.cid, b.bytes);
      await store.db.delete(store.keyOf(b.cid));
      expect(await store.has(b.cid)).toBe(false);
      expect((await rejection(collect(store.get(b.cid)))).name).toBe('NotFoundError');
      expect(await count(store.getAll())).toBe(0);
      await store.put(b.cid, b.bytes);
      expect((await collect(store.get(b.cid))).equals(b.bytes)).toBe(true);
    } finally {
      await store.db.close();
    }
  });

  it('stores with different prefixes in one database are separate', async () => {
    const store = await openStore();
    try {
      const other = new OuroBlockstore(store.db, { prefix: 'other/' });
      const b = await block(crypto.randomBytes(50));
      await store.put(b.cid, b.bytes);
      expect(store.keyOf(b.cid)).toMatch(/^ipfs\/blocks\/b[a-z2-7]+$/);
      expect(await other.has(b.cid)).toBe(false);
      expect(await count(other.getAll())).toBe(0);
      expect(await count(store.getAll())).toBe(1);
    } finally {
      await store.db.close();
    }
  });
});
