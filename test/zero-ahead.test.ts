/**
 * While entries commit in small groups, an open block file is kept zero-filled ahead of its
 * entries, so that each group's fdatasync overwrites bytes already on disk instead of growing the
 * file (blockstore/store.ts, ZERO_AHEAD_BYTES). The zeros must never be seen: not by reads, not in
 * a sealed block (seal cuts them off before its footer), not after a crash (recovery cuts an open
 * block back to its last acknowledged entry; test/crash.test.ts also kills writers at random).
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockStore, readBlockIndex } from '../blockstore/store.js';
import { EntryKind } from '../blockstore/format.js';
import { OuroDB } from '../lib/index.js';
import { nodeVfs } from '../lib/vfs/index.js';
import { tempDir } from './helpers.js';
import { fixture } from './paths.js';

const KEY = Buffer.alloc(32, 3);
const valueOf = (i: number) => crypto.createHash('sha512').update(`zero-ahead ${i}`).digest();
const filesIn = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => path.join(d.parentPath, d.name)) : []);

/** Appends `bytes` as one entry and syncs it, as a group commit of one entry does. */
async function appendAndSync(block: Awaited<ReturnType<BlockStore['createOpen']>>, bytes: Buffer): Promise<void> {
  const { written } = block.append(bytes, { id: crypto.createHash('sha256').update(bytes).digest(), kind: EntryKind.Chunk, flags: 0, length: bytes.length, plainLength: bytes.length, hash: crypto.createHash('sha256').update(bytes).digest() });
  await written;
  await block.sync();
}

describe('zeros written ahead of an open block', () => {
  it('small synced groups leave zeros ahead, large ones none, and seal cuts them off', async () => {
    const store = new BlockStore(nodeVfs, tempDir(), crypto.randomBytes(32));
    await store.init();
    // Large groups first: the file grows with its entries only.
    const large = await store.createOpen(1, 16 << 20);
    for (let i = 0; i < 3; i++) await appendAndSync(large, crypto.randomBytes(1 << 20));
    expect(fs.statSync(large.path).size).toBe(large.size);
    // A small group: the next write is followed by 1 MiB of zeros (written by the write loop
    // after that write resolved: drain() waits for it).
    await appendAndSync(large, crypto.randomBytes(1000));
    await appendAndSync(large, crypto.randomBytes(1000));
    await large.drain();
    const bytes = fs.readFileSync(large.path);
    expect(bytes.length).toBe(large.size + (1 << 20));
    expect(bytes.subarray(large.size).every((b) => b === 0)).toBe(true);
    const sealed = await large.seal(store);
    await large.handle.close();
    expect(fs.statSync(sealed.path).size).toBe(sealed.size);
    expect((await readBlockIndex(nodeVfs, sealed.path)).id.equals(sealed.id)).toBe(true);

    // The zeros stop at the block size given.
    const small = await store.createOpen(2, 64 << 10);
    for (let i = 0; i < 20; i++) await appendAndSync(small, crypto.randomBytes(2000));
    await small.drain();
    expect(fs.statSync(small.path).size).toBe(64 << 10);
    const sealedSmall = await small.seal(store);
    await small.handle.close();
    expect(fs.statSync(sealedSmall.path).size).toBe(sealedSmall.size);
    expect((await readBlockIndex(nodeVfs, sealedSmall.path)).rows.length).toBe(20);
  });

  it('small durable puts leave zeros past their entries; reads, a seal and a reopen never see them', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { key: KEY });
    const hashes: string[] = [];
    try {
      for (let i = 0; i < 40; i++) hashes.push((await db.put(valueOf(i))).hash);
      const [open] = filesIn(path.join(dir, 'open'));
      const bytes = fs.readFileSync(open!);
      // 40 entries of a 64-byte value take a few KiB; the file reaches 1 MiB past them, in zeros.
      expect(bytes.length).toBeGreaterThanOrEqual(1 << 20);
      expect(bytes.subarray(64 << 10).every((b) => b === 0)).toBe(true);
      for (let i = 0; i < 40; i++) expect(Buffer.from(await db.get(hashes[i]!)).equals(valueOf(i))).toBe(true);
      await db.flush();
      expect(filesIn(path.join(dir, 'open'))).toEqual([]);
      const sealed = filesIn(path.join(dir, 'blocks'));
      expect(sealed.length).toBe(1);
      expect(fs.statSync(sealed[0]!).size).toBeLessThan(64 << 10);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
    const again = await OuroDB.open(dir, { key: KEY });
    try {
      for (let i = 0; i < 40; i++) expect(Buffer.from(await again.get(hashes[i]!)).equals(valueOf(i))).toBe(true);
    } finally {
      await again.close();
    }
  });

  it('a writer killed with zeros ahead of its entries reopens with every acknowledged put', async () => {
    const dir = tempDir();
    const r = spawnSync(process.execPath, [fixture('zero-ahead-writer.js'), dir, KEY.toString('hex'), '25'], { encoding: 'utf8' });
    expect(r.signal).toBe('SIGKILL');
    const hashes = r.stdout.trim().split('\n');
    expect(hashes.length).toBe(25);
    const [open] = filesIn(path.join(dir, 'open'));
    expect(fs.statSync(open!).size).toBeGreaterThanOrEqual(1 << 20);
    const db = await OuroDB.open(dir, { key: KEY });
    try {
      for (let i = 0; i < 25; i++) expect(Buffer.from(await db.get(hashes[i]!)).toString()).toBe(`zero-ahead value ${i}`);
      expect((await db.check({ readData: true })).problems).toEqual([]);
      const { hash } = await db.put('after the crash');
      await db.flush();
      expect(Buffer.from(await db.get(hash)).toString()).toBe('after the crash');
    } finally {
      await db.close();
    }
  });
});
