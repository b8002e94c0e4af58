/**
 * A keyless node's shelf (carrier/shelf.ts, DirShelf): what it lists, and the pages of
 * block-list, which ask for the blocks after the last id of the page before; and what it keeps.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
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
});
