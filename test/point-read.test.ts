/**
 * Point reads (getByKey, get of a small value) and the record cache as a put feeds it: a value
 * just put is read back without touching its block file, never before its commit, never after a
 * purge forgot it, and what a read returns is the caller's own.
 */
import crypto from 'node:crypto';
import nodeFs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { NodeVfs, type VfsFile } from '../lib/vfs/index.js';
import { CountingVfs, tempDir } from './helpers.js';

describe('point reads', () => {
  /** Puts 40 keyed values (concurrently: through packs and the seal pool too), seals them, reads each back by key and by hash; the block-file bytes those reads read. */
  async function bytesReadBack(recordCacheBytes: number | undefined): Promise<number> {
    const fs = new CountingVfs();
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32), fs, ...(recordCacheBytes === undefined ? {} : { recordCacheBytes }) });
    try {
      const values = Array.from({ length: 40 }, (_, i) => crypto.randomBytes(100 + i * 50));
      const hashes = await Promise.all(values.map((v, i) => db.put(v, { key: `k${i}` }).then((r) => r.hash)));
      await db.flush();
      const before = fs.readBytes;
      for (let i = 0; i < values.length; i++) {
        expect(Buffer.from(await db.getByKey(`k${i}`)).equals(values[i]!)).toBe(true);
        expect(Buffer.from(await db.get(hashes[i]!)).equals(values[i]!)).toBe(true);
      }
      return fs.readBytes - before;
    } finally {
      await db.close();
    }
  }

  it('a value just put is read back from the record cache: no block-file read', async () => {
    expect(await bytesReadBack(undefined)).toBe(0);
    // Without the cache the same reads do read the blocks (the premise of the check above).
    expect(await bytesReadBack(0)).toBeGreaterThan(0);
  });

  it('a record cached by its put reads back exactly as one read from its block does', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(dir, { key });
    const hashes: string[] = [];
    try {
      hashes.push((await db.put('one', { key: 'a', meta: { z: '1', a: '2' } })).hash);
      hashes.push((await db.put('two', { key: 'a' })).hash);
      hashes.push((await db.put(crypto.randomBytes(300_000), { key: 'big', parent: hashes[0] })).hash);
      hashes.push((await db.delete('a')).hash);
      const cached = await Promise.all(hashes.map((h) => db.stat(h)));
      await db.close();
      const again = await OuroDB.open(dir, { key, recordCacheBytes: 0 });
      try {
        expect(await Promise.all(hashes.map((h) => again.stat(h)))).toEqual(cached);
      } finally {
        await again.close();
      }
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
  });

  it('what getByKey returns is a copy: changing it changes no later read', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    try {
      await db.put('small value', { key: 'k' });
      const first = await db.getByKey('k');
      first.fill(0x21);
      expect(Buffer.from(await db.getByKey('k')).toString()).toBe('small value');
    } finally {
      await db.close();
    }
  });

  it('a record cached by its put is not served after a purge forgot it', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    try {
      const { hash } = await db.put('kept a while', { key: 'p' });
      expect(Buffer.from(await db.get(hash)).toString()).toBe('kept a while');
      await db.purge('p');
      await expect(db.get(hash)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      await expect(db.getByKey('p')).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      // A put racing a purge of the same key: whichever order they take, what is read agrees
      // with the index (a put queued before the purge is forgot; one after it is the head).
      for (let i = 0; i < 20; i++) {
        const put = db.put(`v${i}`, { key: 'race' });
        const purge = db.purge('race');
        const [{ hash: h }] = await Promise.all([put, purge]);
        const head = await db.head('race');
        if (head === h) expect(Buffer.from(await db.getByKey('race')).toString()).toBe(`v${i}`);
        else await expect(db.get(h)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
      }
    } finally {
      await db.close();
    }
  });

  it('a cold read of a record in a pack read before is one pread of its own bytes', async () => {
    /** Counts the preads of block files (synchronous ones: every read of a small record). */
    class PreadCounting extends NodeVfs {
      preads = 0;
      override async open(p: string, flags: 'r' | 'r+'): Promise<VfsFile> {
        const file = await super.open(p, flags);
        return { ...file, readSync: (buf, offset, length, position) => (this.preads++, file.readSync(buf, offset, length, position)), read: file.read.bind(file), writev: file.writev.bind(file), datasync: file.datasync.bind(file), sync: file.sync.bind(file), truncate: file.truncate.bind(file), size: file.size.bind(file), close: file.close.bind(file) };
      }
    }
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const first = await OuroDB.open(dir, { key });
    // Random 1 KiB values put together: their records share uncompressed packs.
    const values = Array.from({ length: 48 }, () => crypto.randomBytes(1024));
    const hashes = await Promise.all(values.map((v) => first.put(v).then((r) => r.hash)));
    await first.close();
    const fs = new PreadCounting();
    const db = await OuroDB.open(dir, { key, fs, recordCacheBytes: 0 });
    try {
      expect(Buffer.from(await db.get(hashes[0]!)).equals(values[0]!)).toBe(true);
      // Records past the first 4 KiB of their pack read their header apart, the first time.
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < values.length; i++) {
          const before = fs.preads;
          expect(Buffer.from(await db.get(hashes[i]!)).equals(values[i]!)).toBe(true);
          if (round === 1) expect(fs.preads - before).toBe(1);
        }
      }
    } finally {
      await db.close();
    }
  });

  it('a cold read of a small record is done at once, into one buffer reused from read to read', async () => {
    // Reader.recordNow: the ciphertext of a record read cold from an open block file goes into
    // the reader's scratch buffer and is decrypted before anything else runs, instead of into a
    // fresh buffer per pread behind a chain of promises.
    class BufferNoting extends NodeVfs {
      readonly buffers = new Set<ArrayBufferLike>();
      preads = 0;
      override async open(p: string, flags: 'r' | 'r+'): Promise<VfsFile> {
        const file = await super.open(p, flags);
        return { ...file, readSync: (buf, offset, length, position) => (this.preads++, this.buffers.add(buf.buffer), file.readSync(buf, offset, length, position)), read: file.read.bind(file), writev: file.writev.bind(file), datasync: file.datasync.bind(file), sync: file.sync.bind(file), truncate: file.truncate.bind(file), size: file.size.bind(file), close: file.close.bind(file) };
      }
    }
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const first = await OuroDB.open(dir, { key });
    // Random values put together share uncompressed packs; the lone last one is an entry of its own.
    const values = Array.from({ length: 48 }, (_, i) => crypto.randomBytes(200 + i * 40));
    await Promise.all(values.map((v, i) => first.put(v, { key: `k${i}` })));
    const lone = crypto.randomBytes(3000);
    await first.put(lone, { key: 'lone' });
    await first.close();
    const fs = new BufferNoting();
    const db = await OuroDB.open(dir, { key, fs, recordCacheBytes: 0 });
    try {
      expect(Buffer.from(await db.getByKey('k0')).equals(values[0]!)).toBe(true); // opens the block file
      fs.buffers.clear();
      fs.preads = 0;
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < values.length; i++) expect(Buffer.from(await db.getByKey(`k${i}`)).equals(values[i]!)).toBe(true);
        expect(Buffer.from(await db.getByKey('lone')).equals(lone)).toBe(true);
      }
      expect(fs.preads).toBeGreaterThanOrEqual(2 * (values.length + 1));
      expect(fs.buffers.size).toBe(1);
    } finally {
      await db.close();
    }
  });

  it('a record damaged on disk after its pack header was kept is still a corruption error', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const first = await OuroDB.open(dir, { key });
    const values = Array.from({ length: 48 }, () => crypto.randomBytes(1024));
    const hashes = await Promise.all(values.map((v) => first.put(v).then((r) => r.hash)));
    await first.close();
    const db = await OuroDB.open(dir, { key, recordCacheBytes: 0 });
    try {
      for (const h of hashes) await db.get(h); // every pack's header is now kept
      // Damage 64 bytes in the middle of every block file: some record's ciphertext.
      const blocks = path.join(dir, 'blocks');
      const files = nodeFs.readdirSync(blocks, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
      expect(files.length).toBeGreaterThan(0);
      for (const f of files) {
        const p = path.join(f.parentPath, f.name);
        const fd = nodeFs.openSync(p, 'r+');
        nodeFs.writeSync(fd, Buffer.alloc(64, 0x5a), 0, 64, Math.floor(nodeFs.fstatSync(fd).size / 2));
        nodeFs.closeSync(fd);
      }
      let damaged = 0;
      for (let i = 0; i < hashes.length; i++) {
        try {
          expect(Buffer.from(await db.get(hashes[i]!)).equals(values[i]!)).toBe(true);
        } catch (err) {
          expect((err as { code?: string }).code).toBe('OURO_CORRUPTION');
          damaged++;
        }
      }
      expect(damaged).toBeGreaterThan(0);
    } finally {
      await db.close();
    }
  });
});
