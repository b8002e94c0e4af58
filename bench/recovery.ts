/**
 * Recovery time after a crash with a full WAL (issue 9). A child process writes durable 4 KiB
 * values until its open block (everything since the last seal, all of it in the WAL) nearly fills
 * a block, and is killed with SIGKILL; the time to open the database again (cutting the open
 * block back to what the WAL names, replaying the WAL) is measured. Peer: classic-level killed
 * the same way after the same number of synced puts of the same values, reopened (replaying its
 * own log).
 *
 * Run as a script (`node dist/bench/recovery.js <dir> ouro|level <values>`) it is the child.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from '../index/leveldb.js';
import { OuroDB } from '../lib/index.js';

const VALUE = 4096;
const KEY = Buffer.alloc(32, 7);
const value = (i: number) => {
  const v = crypto.createHash('sha256').update(String(i)).digest();
  return Buffer.concat(Array.from({ length: VALUE / 32 }, () => v));
};

/** The child: writes `count` values durably, prints "ready", then waits to be killed. */
async function child(dir: string, kind: string, count: number): Promise<void> {
  if (kind === 'ouro') {
    // One block of 16 MiB holds them all, and nothing seals on its own: the WAL holds every entry.
    const db = await OuroDB.open(dir, { key: KEY, maxUnsealedMs: 24 * 3600_000, compression: false });
    for (let i = 0; i < count; i += 64) await Promise.all(Array.from({ length: Math.min(64, count - i) }, (_, j) => db.put(value(i + j))));
  } else {
    const db = new ClassicLevel<string, Buffer>(dir, { valueEncoding: 'buffer' });
    await db.open();
    for (let i = 0; i < count; i += 64) await Promise.all(Array.from({ length: Math.min(64, count - i) }, (_, j) => db.put(`v${i + j}`, value(i + j), { sync: true })));
  }
  process.stdout.write('ready\n');
  setInterval(() => {}, 1 << 30);
}

async function crashAfterWriting(dir: string, kind: 'ouro' | 'level', count: number): Promise<void> {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), dir, kind, String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`recovery writer (${kind}) exited ${code} before it was ready`)));
  });
  proc.kill('SIGKILL');
  await new Promise((r) => proc.once('exit', r));
}

export async function recoveryBench(work: string, quick: boolean): Promise<{ values: number; walMiB: number; ouroSecs: number; levelSecs: number }> {
  // ~15 MiB of entries: close to a full 16 MiB block, the most a WAL holds before a seal.
  const count = quick ? 1800 : 3600;
  const ouroDir = path.join(work, 'recover-ouro');
  const levelDir = path.join(work, 'recover-level');
  await crashAfterWriting(ouroDir, 'ouro', count);
  await crashAfterWriting(levelDir, 'level', count);
  let t = performance.now();
  const db = await OuroDB.open(ouroDir, { key: KEY });
  const ouroSecs = (performance.now() - t) / 1000;
  const stats = await db.stats();
  if (stats.objects !== count) throw new Error(`recovered ${stats.objects} objects of ${count}`);
  await db.close();
  t = performance.now();
  const level = new ClassicLevel<string, Buffer>(levelDir, { valueEncoding: 'buffer' });
  await level.open();
  const levelSecs = (performance.now() - t) / 1000;
  if ((await level.get(`v${count - 1}`)) === undefined) throw new Error('classic-level lost a synced put');
  await level.close();
  fs.rmSync(ouroDir, { recursive: true, force: true });
  fs.rmSync(levelDir, { recursive: true, force: true });
  return { values: count, walMiB: (count * VALUE) / 2 ** 20, ouroSecs, levelSecs };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await child(process.argv[2]!, process.argv[3]!, Number(process.argv[4]));
