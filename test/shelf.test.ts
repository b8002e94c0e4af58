/**
 * A keyless node's shelf (carrier/shelf.ts, DirShelf): what it lists, and the pages of
 * block-list, which ask for the blocks after the last id of the page before.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DirShelf } from '../carrier/shelf.js';
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
