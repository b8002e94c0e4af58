/**
 * Benchmarks of the key model (issue 3), each beside its peer from the same run:
 *   keyed    1 KiB puts under keys, 64 concurrent writers, durable; then getByKey random reads.
 *            peer: raw classic-level put({ sync: true }) / get of the same keys and values
 *   list     listing every key of a database with `count` keys
 *            peer: a raw classic-level iterator over the same keys
 *   gc       reclaiming purged data while a writer keeps writing: MiB/s of block files freed,
 *            and the writer's puts/s during gc against its rate just before
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { ClassicLevel } from '../index/leveldb.js';
import { OuroDB } from '../lib/index.js';

const MiB = 1 << 20;

/** Runs `count` operations from `width` concurrent loops; returns operations per second. */
export async function concurrent(count: number, width: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < count) await op(next++);
  }));
  return count / (Number(process.hrtime.bigint() - started) / 1e9);
}

const keyName = (i: number) => `user/${i.toString().padStart(9, '0')}`;

export async function keyedPutsAndReads(work: string, puts: number, reads: number): Promise<{ put: number; levelPut: number; get: number; levelGet: number }> {
  const pool = Array.from({ length: 1024 }, () => crypto.randomBytes(1024));
  const value = (i: number) => {
    const v = Buffer.from(pool[i % 1024]!);
    v.writeUInt32LE(i, 0);
    return v;
  };
  const picks = Array.from({ length: reads }, () => crypto.randomInt(puts));
  const db = await OuroDB.open(path.join(work, 'keyed'), { key: crypto.randomBytes(32) });
  const put = await concurrent(puts, 64, (i) => db.put(value(i), { key: keyName(i) }));
  const get = await concurrent(reads, 16, (i) => db.getByKey(keyName(picks[i]!)));
  await db.close();
  const ldb = new ClassicLevel<string, Buffer>(path.join(work, 'keyed-level'), { valueEncoding: 'buffer' });
  await ldb.open();
  const levelPut = await concurrent(puts, 64, (i) => ldb.put(keyName(i), value(i), { sync: true }));
  const levelGet = await concurrent(reads, 16, (i) => ldb.get(keyName(picks[i]!)));
  await ldb.close();
  return { put, levelPut, get, levelGet };
}

export async function listing(work: string, count: number): Promise<{ keysPerSec: number; levelKeysPerSec: number; fillSecs: number }> {
  const db = await OuroDB.open(path.join(work, 'list'), { key: crypto.randomBytes(32), durability: 'relaxed' });
  const fillStart = process.hrtime.bigint();
  await concurrent(count, 256, (i) => db.put(`v${i}`, { key: keyName(i) }));
  await db.flush();
  const fillSecs = Number(process.hrtime.bigint() - fillStart) / 1e9;
  let n = 0;
  const t = process.hrtime.bigint();
  for await (const _ of db.list()) n++;
  const keysPerSec = n / (Number(process.hrtime.bigint() - t) / 1e9);
  await db.close();
  if (n !== count) throw new Error(`listed ${n} keys of ${count}`);
  const ldb = new ClassicLevel<string, string>(path.join(work, 'list-level'));
  await ldb.open();
  for (let i = 0; i < count; i += 10_000) await ldb.batch(Array.from({ length: Math.min(10_000, count - i) }, (_, j) => ({ type: 'put' as const, key: keyName(i + j), value: `v${i + j}` })));
  let m = 0;
  const t2 = process.hrtime.bigint();
  for await (const _ of ldb.iterator()) m++;
  const levelKeysPerSec = m / (Number(process.hrtime.bigint() - t2) / 1e9);
  await ldb.close();
  return { keysPerSec, levelKeysPerSec, fillSecs };
}

export async function gcReclaim(work: string, mib: number): Promise<{ freedMiB: number; copiedMiB: number; reclaimMiBs: number; writerBefore: number; writerDuring: number; storedBefore: number; storedAfter: number }> {
  const db = await OuroDB.open(path.join(work, 'gc'), { key: crypto.randomBytes(32) });
  const values = mib * 4; // 256 KiB each
  await concurrent(values, 8, (i) => db.put(crypto.randomBytes(256 * 1024), { key: `big/${i}` }));
  await db.flush();
  const storedBefore = (await db.stats()).storedBytes;
  for (let i = 0; i < values; i++) if (i % 4 !== 0) await db.purge(`big/${i}`);
  // A writer of 1 KiB keyed puts runs throughout; its rate is sampled before and during gc.
  let written = 0;
  let stop = false;
  const writer = Promise.all(Array.from({ length: 16 }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      await db.put(crypto.randomBytes(1024), { key: `small/${w}/${i}` });
      written++;
    }
  }));
  // One second of warm-up first: the writers' first puts (key locks, caches, LevelDB's memtable
  // filling) run slower, and a reference rate that counted them would flatter the rate during gc.
  await new Promise((r) => setTimeout(r, 1000));
  const warm = written;
  await new Promise((r) => setTimeout(r, 2000));
  const writerBefore = (written - warm) / 2;
  const before = written;
  const t = process.hrtime.bigint();
  const report = await db.gc();
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  const writerDuring = (written - before) / secs;
  stop = true;
  await writer;
  const storedAfter = (await db.stats()).storedBytes;
  await db.close();
  return { freedMiB: report.bytesFreed / MiB, copiedMiB: report.bytesCopied / MiB, reclaimMiBs: (report.bytesFreed - report.bytesCopied) / MiB / secs, writerBefore, writerDuring, storedBefore, storedAfter };
}
