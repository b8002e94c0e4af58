/**
 * A keyless node's shelf (carrier/shelf.ts, DirShelf): what it lists, and the pages of
 * block-list, which ask for the blocks after the last id of the page before; and what it keeps.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { blockIndexOf, readBlockIndex } from '../blockstore/store.js';
import { DirShelf } from '../carrier/shelf.js';
import { OuroDB } from '../lib/index.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { tempDir } from './helpers.js';

async function collect(it: AsyncIterable<{ id: string; size: number }>): Promise<Array<{ id: string; size: number }>> {
  const out: Array<{ id: string; size: number }> = [];
  for await (const b of it) out.push(b);
  return out;
}

describe('DirShelf.list', () => {
  it('lists held blocks in id order with their sizes, skips released ones, and pages from any id', async () => {
    const dir = tempDir();
    const shelf = new DirShelf(dir);
    const ids = Array.from({ length: 40 }, () => crypto.randomBytes(32).toString('hex')).sort();
    ids.forEach((id, i) => {
      fs.mkdirSync(path.dirname(shelf.path(id)), { recursive: true });
      fs.writeFileSync(shelf.path(id), Buffer.alloc(100 + i));
    });
    const released = ids[7]!;
    await shelf.release(released);
    const held = ids.filter((id) => id !== released);
    expect(await collect(shelf.list())).toEqual(held.map((id) => ({ id, size: 100 + ids.indexOf(id) })));
    for (const after of [ids[0]!, ids[6]!, released, ids[20]!, ids[39]!, '00', 'ff', `${ids[12]!.slice(0, 2)}`]) {
      expect((await collect(shelf.list(after))).map((b) => b.id)).toEqual(held.filter((id) => id > after));
    }
    // Pages of 7 from the last id of each page cover every block once.
    const paged: string[] = [];
    for (let after = ''; ; ) {
      const page: string[] = [];
      for await (const b of shelf.list(after)) {
        if (page.length === 7) break;
        page.push(b.id);
      }
      paged.push(...page);
      if (page.length < 7) break;
      after = page[page.length - 1]!;
    }
    expect(paged).toEqual(held);
  });
});

describe('DirShelf.keep', () => {
  /** Two sealed blocks of a database: their files' bytes. */
  async function twoBlocks(): Promise<Buffer[]> {
    const db = await OuroDB.open(path.join(tempDir(), 'db'), { key: crypto.randomBytes(32) });
    try {
      for (let i = 0; i < 2; i++) {
        await db.put(crypto.randomBytes(1024));
        await db.flush();
      }
      const out: Buffer[] = [];
      for await (const b of db.blocks()) out.push(fs.readFileSync(db.blockPath(b.id)));
      return out;
    } finally {
      await db.close();
    }
  }
  const idOf = async (bytes: Buffer) => (await blockIndexOf(bytes, 'mem')).id.toString('hex');

  it('reads the index from the bytes it is handed (no read back), the same index as from the file', async () => {
    const [a, b] = await twoBlocks();
    const shelf = new DirShelf(tempDir());
    const staging = await shelf.staging(await idOf(a!));
    fs.writeFileSync(staging, a!);
    expect(await blockIndexOf(a!, staging)).toEqual(await readBlockIndex(nodeVfs, staging));
    // Handed the bytes of another block, the check goes by them: refused, though the file is good.
    await expect(shelf.keep(staging, await idOf(a!), undefined, b!)).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
    expect(fs.existsSync(staging)).toBe(false);
    const again = await shelf.staging(await idOf(a!));
    fs.writeFileSync(again, a!);
    expect(await shelf.keep(again, await idOf(a!), undefined, a!)).toBe(true);
    expect(fs.readFileSync(shelf.path(await idOf(a!)))).toEqual(a!);
  });

  it('makes a block directory removed from outside again (directories are made once per process)', async () => {
    const [a] = await twoBlocks();
    const id = await idOf(a!);
    const shelf = new DirShelf(tempDir());
    const first = await shelf.staging(id);
    fs.writeFileSync(first, a!);
    expect(await shelf.keep(first, id, undefined, a!)).toBe(true);
    fs.rmSync(path.join(shelf.root, 'blocks'), { recursive: true });
    const second = await shelf.staging(id);
    fs.writeFileSync(second, a!);
    expect(await shelf.keep(second, id, undefined, a!)).toBe(true);
    expect(fs.readFileSync(shelf.path(id))).toEqual(a!);
  });

  it('is prepared with its 256 fan-out directories, so that keeping a block makes none (and one removed is made again)', async () => {
    const [a, b] = await twoBlocks();
    const ida = await idOf(a!);
    const idb = await idOf(b!);
    const mkdir = vi.spyOn(fs.promises, 'mkdir');
    try {
      // Unprepared, as before: the first block kept in a fan-out directory makes it.
      const plain = new DirShelf(tempDir());
      const s0 = await plain.staging(ida);
      fs.writeFileSync(s0, a!);
      mkdir.mockClear();
      expect(await plain.keep(s0, ida, undefined, a!)).toBe(true);
      expect(mkdir.mock.calls.map((c) => String(c[0]))).toContain(path.dirname(plain.path(ida)));

      const shelf = new DirShelf(tempDir());
      await shelf.prepare();
      const made = fs.readdirSync(path.join(shelf.root, 'blocks')).sort();
      expect(made).toEqual(Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0')));
      expect(fs.existsSync(path.join(shelf.root, 'incoming'))).toBe(true);
      mkdir.mockClear();
      const s1 = await shelf.staging(ida);
      fs.writeFileSync(s1, a!);
      expect(await shelf.keep(s1, ida, undefined, a!)).toBe(true);
      expect(mkdir).not.toHaveBeenCalled();
      // A fan-out directory removed from outside after that: the rename fails, and it is made again.
      fs.rmSync(path.dirname(shelf.path(idb)), { recursive: true, force: true });
      const s2 = await shelf.staging(idb);
      fs.writeFileSync(s2, b!);
      expect(await shelf.keep(s2, idb, undefined, b!)).toBe(true);
      expect(fs.readFileSync(shelf.path(idb))).toEqual(b!);
      // Prepared again with every directory there (a restart: a path this process has not made,
      // through a symlink to the same node directory): each is asked for, none is made.
      const link = `${tempDir()}-link`;
      fs.symlinkSync(path.dirname(shelf.root), link);
      mkdir.mockClear();
      await new DirShelf(link).prepare();
      expect(await Promise.all(mkdir.mock.results.map((r) => r.value))).toEqual(Array.from({ length: 256 }, () => undefined));
    } finally {
      mkdir.mockRestore();
    }
  });
});

