/**
 * The index's read-modify-write counters (index/counters.ts) and how IndexStore.write puts them
 * into its batch: once per key read, the final values only, after the batch's own ops, the stats
 * last. A large put's end changes one reference count per chunk this way.
 */
import crypto from 'node:crypto';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import type { OpSink } from '../index/batch.js';
import { Counters } from '../index/counters.js';
import { keys } from '../index/keys.js';
import { ClassicLevel } from '../index/leveldb.js';
import { ZERO_STATS, decodeStats } from '../index/stats.js';
import { IndexStore } from '../index/store.js';
import { decodeCount, encodeCount } from '../index/values.js';
import { tempDir } from './helpers.js';

const open: Array<ClassicLevel<Buffer, Buffer>> = [];
afterEach(async () => {
  for (const ldb of open.splice(0)) await ldb.close();
});

async function level(): Promise<ClassicLevel<Buffer, Buffer>> {
  const ldb = new ClassicLevel<Buffer, Buffer>(path.join(tempDir(), 'index'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await ldb.open();
  open.push(ldb);
  return ldb;
}

/** Records what emit writes, in order. */
function recorder(): OpSink & { ops: string[] } {
  const ops: string[] = [];
  return {
    ops,
    put: (key, value) => void ops.push(`put ${key.toString('hex')} ${decodeCount(value)}/${value.length}`),
    del: (key) => void ops.push(`del ${key.toString('hex')}`),
  };
}

describe('counters (index/counters.ts)', () => {
  it('reads a key once, sees its own changes, and emits only changed cells, each once, in the order first touched', async () => {
    const ldb = await level();
    const a = keys.refcount(crypto.randomBytes(32));
    const b = keys.refcount(crypto.randomBytes(32));
    const untouched = keys.refcount(crypto.randomBytes(32));
    const dead = keys.dead(7);
    await ldb.put(a, encodeCount(5, 4));
    await ldb.put(untouched, encodeCount(2, 4));
    const c = new Counters(ldb);
    const cellA = c.touch(a, 4);
    expect(cellA).toMatchObject({ value: 5, present: true, dirty: false });
    // A stored value changed under the batch is not read again: the cell is what the batch sees.
    await ldb.put(a, encodeCount(50, 4));
    Counters.assign(cellA, cellA.value + 1);
    expect(c.touch(a, 4).value).toBe(6);
    expect(c.get(untouched, 4)).toEqual({ value: 2, present: true });
    c.set(b, 4, 0, false); // absent and staying absent: a delete
    c.addDead(dead, 100);
    c.addDead(dead, -30);
    c.set(a, 4, 7);
    const sink = recorder();
    c.emit(sink);
    expect(sink.ops).toEqual([`put ${a.toString('hex')} 7/4`, `del ${b.toString('hex')}`, `put ${dead.toString('hex')} 70/8`]);
  });

  it('refuses a value below zero or past the safe integers, naming the key', async () => {
    const c = new Counters(await level());
    const key = keys.refcount(Buffer.alloc(32, 0xab));
    const cell = c.touch(key, 4);
    expect(() => Counters.assign(cell, -1)).toThrow(RangeError);
    expect(() => c.set(key, 4, 2 ** 53)).toThrow(/abab/);
    expect(cell.dirty).toBe(false); // a refused value changes nothing
  });

  it('IndexStore.write: the counters land after the batch\'s own ops on the same key, the stats last, in one batch', async () => {
    const ldb = await level();
    const store = new IndexStore(ldb, { ...ZERO_STATS });
    const ids = Array.from({ length: 5000 }, () => crypto.randomBytes(32));
    const shared = keys.refcount(ids[0]!);
    // An op of the batch sets the first id's count to 9; the prepare step, which reads the index
    // as it was (no count yet), then adds one reference to each id, the first one twice.
    const ops = [{ type: 'put' as const, key: shared, value: encodeCount(9, 4) }];
    await store.write(ops, { chunks: ids.length }, [
      () => {
        for (const id of ids) store.changeRef(id, +1);
        store.changeRef(ids[0]!, +1);
      },
    ]);
    expect(decodeCount(await ldb.get(shared))).toBe(2); // the counter's final value, not the op's 9
    for (const id of ids.slice(1)) expect(decodeCount(await ldb.get(keys.refcount(id)))).toBe(1);
    expect(decodeStats(await ldb.get(keys.meta('stats'))).chunks).toBe(ids.length);
    expect(store.stats.chunks).toBe(ids.length);
  });
});
