/**
 * The read handles of a database (blockstore/files.ts, FileCache) once it is closed: a handle
 * that arrives after closeAll (an open block whose creation was under way when a failed database
 * was closed, a read's open in flight) is closed at once. Kept, nothing would ever close it, and
 * Node closes such a descriptor only when the garbage collector finds it ("Closing file
 * descriptor N on garbage collection", seen in CI runs of test/faults.test.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileCache } from '../blockstore/files.js';
import { ClosedError } from '../lib/errors.js';
import type { Vfs, VfsFile } from '../lib/vfs/vfs.js';
import { nodeVfs } from '../lib/vfs/index.js';
import { tempDir } from './helpers.js';

/** nodeVfs, counting the handles it opened that are still open; open() waits for `gate` when set. */
function countingVfs() {
  const open = new Set<VfsFile>();
  let gate: Promise<void> | undefined;
  const track = (h: VfsFile): VfsFile => {
    open.add(h);
    const close = h.close.bind(h);
    h.close = async () => {
      open.delete(h);
      await close();
    };
    return h;
  };
  const vfs = Object.create(nodeVfs) as Vfs;
  vfs.open = async (p, flags) => {
    const h = track(await nodeVfs.open(p, flags));
    await gate;
    return h;
  };
  return { vfs, open, track, hold: (g: Promise<void>) => (gate = g) };
}

describe('FileCache after closeAll', () => {
  it('closes a handle adopted after it, and one whose open was in flight, and refuses them with OURO_CLOSED', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'blk');
    fs.writeFileSync(file, Buffer.alloc(4096, 1));
    const { vfs, open, track, hold } = countingVfs();
    const cache = new FileCache(vfs);

    // A read whose open is still in flight when the cache closes.
    let release!: () => void;
    hold(new Promise<void>((r) => (release = r)));
    const reading = cache.read('blk', file, 0, 100);
    reading.catch(() => {});
    await new Promise((r) => setTimeout(r, 20));
    expect(open.size).toBe(1);
    await cache.closeAll();
    release();
    await expect(reading).rejects.toBeInstanceOf(ClosedError);
    expect(open.size).toBe(0);

    // An open block's handle adopted after the close.
    const late = track(await nodeVfs.open(file, 'r'));
    expect(() => cache.adopt('open-1', late)).toThrow(ClosedError);
    await new Promise((r) => setTimeout(r, 20));
    expect(open.size).toBe(0);
  });

  it('keeps and reads through handles adopted or opened before it', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'blk');
    fs.writeFileSync(file, Buffer.from('0123456789'));
    const { vfs, open, track } = countingVfs();
    const cache = new FileCache(vfs);
    cache.adopt('a', track(await nodeVfs.open(file, 'r')));
    expect((await cache.read('a', file, 2, 3)).toString()).toBe('234');
    expect((await cache.read('b', file, 5, 5)).toString()).toBe('56789');
    expect(open.size).toBe(2);
    await cache.closeAll();
    expect(open.size).toBe(0);
  });
});
