/**
 * Exhaustive crash tests on the crashable file system (lib/vfs/crash.ts): for each operation
 * sequence, crash after the k-th file operation for k = 0, 1, 2, ... until the sequence runs to
 * the end without a crash. Each crash keeps what was fsynced, plus a random, torn share of what
 * was not. Then reopen and check the promise:
 *  - every acknowledged write reads back byte-identical (by hash, and by key);
 *  - nothing unacknowledged is half-visible: every object the database lists reads back whole
 *    and is one of the values the sequence tried to write;
 *  - check({ readData: true }) finds no problem;
 *  - the database takes new writes, and they survive a clean reopen.
 * LevelDB is real (on disk) throughout; the simulated crash releases it as a dead process would.
 *
 * OURO_CRASH_STRIDE=n tests every n-th k only; OURO_CRASH_SEEDS=n runs each k with n seeds
 * (different torn-write choices). The defaults (1 and 1) test every k once.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { OuroDB, exportArchive, importArchive } from '../lib/index.js';
import type { OpenOptions } from '../lib/index.js';
import { CrashableFs } from '../lib/vfs/index.js';
import { pseudoRandom, tempDir } from './helpers.js';

const STRIDE = Number(process.env['OURO_CRASH_STRIDE'] ?? 1);
const SEEDS = Number(process.env['OURO_CRASH_SEEDS'] ?? 1);
const KEY = Buffer.alloc(32, 7);
const OPTIONS: OpenOptions = { key: KEY, blockSize: 8192, chunkSizes: { min: 4096, avg: 8192, max: 16384 } };

class Crashed extends Error {}

/** What a sequence did: acknowledged writes, and every value it tried to write. */
class Log {
  readonly acked = new Map<string, Buffer>();
  readonly tried = new Set<string>();
  /** Per key: the value acknowledged last (null: deleted or purged) and one in flight, if any. */
  readonly keys = new Map<string, { acked: Buffer | null; inflight?: Buffer | null }>();
  fs: CrashableFs;

  constructor(crashFs: CrashableFs) {
    this.fs = crashFs;
  }

  /** Waits for `p` unless the file system crashes first (then throws Crashed). */
  async race<T>(p: Promise<T>): Promise<T> {
    p.catch(() => {});
    const crashed = this.fs.crashed.then(() => {
      throw new Crashed();
    });
    crashed.catch(() => {});
    try {
      return await Promise.race([p, crashed]);
    } catch (err) {
      // An operation the crash cut short may fail before the crash signal is seen.
      if (this.fs.isCrashed) throw new Crashed();
      throw err;
    }
  }

  async put(db: OuroDB, value: Buffer, key?: string): Promise<string> {
    this.tried.add(sha(value));
    if (key !== undefined) this.#key(key).inflight = value;
    const { hash } = await this.race(db.put(value, key === undefined ? {} : { key }));
    this.acked.set(hash, value);
    if (key !== undefined) {
      this.keys.set(key, { acked: value });
      this.#versions(key).push(hash);
    }
    return hash;
  }

  /** db.concat of `parts` (acknowledged values, with their bytes), filed under `key`. */
  async concat(db: OuroDB, parts: Array<{ hash: string; value: Buffer }>, key: string): Promise<string> {
    const value = Buffer.concat(parts.map((p) => p.value));
    this.tried.add(sha(value));
    this.#key(key).inflight = value;
    const { hash } = await this.race(db.concat(parts.map((p) => p.hash), { key }));
    this.acked.set(hash, value);
    this.keys.set(key, { acked: value });
    this.#versions(key).push(hash);
    return hash;
  }

  async delete(db: OuroDB, key: string): Promise<void> {
    this.#key(key).inflight = null;
    await this.race(db.delete(key));
    this.keys.set(key, { acked: null });
  }

  async purge(db: OuroDB, key: string): Promise<void> {
    this.#key(key).inflight = null;
    // A purged key's versions are forgotten (from the moment the purge may have landed): their
    // hashes are no longer data the database must return.
    for (const hash of this.#versions(key).splice(0)) this.acked.delete(hash);
    await this.race(db.purge(key));
    this.keys.set(key, { acked: null });
  }

  readonly #byKey = new Map<string, string[]>();

  #versions(key: string): string[] {
    let v = this.#byKey.get(key);
    if (!v) this.#byKey.set(key, (v = []));
    return v;
  }

  #key(key: string): { acked: Buffer | null; inflight?: Buffer | null } {
    let k = this.keys.get(key);
    if (!k) this.keys.set(key, (k = { acked: null }));
    return k;
  }
}

function sha(bytes: Uint8Array): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

async function readAll(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

async function getByKey(db: OuroDB, key: string): Promise<Buffer | null> {
  try {
    return Buffer.from(await db.getByKey(key));
  } catch (err) {
    if ((err as { code?: string }).code === 'OURO_NOT_FOUND') return null;
    throw err;
  }
}

/**
 * Opens after a simulated crash. The crashed handle releases LevelDB's lock asynchronously (as
 * the OS releases a dead process's locks), so a LOCKED answer is retried for a moment.
 */
async function openAfterCrash(dir: string, crashFs: CrashableFs): Promise<OuroDB> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await OuroDB.open(dir, { ...OPTIONS, fs: crashFs });
    } catch (err) {
      if ((err as { code?: string }).code !== 'OURO_LOCKED' || attempt >= 200) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Checks the promise on the disk a crash left (see the top of this file). */
async function verify(dir: string, crashFs: CrashableFs, log: Log, seq: Sequence, label: string): Promise<void> {
  const purgedHashes = seq.purged ?? new Set<string>();
  const db = await openAfterCrash(dir, crashFs);
  try {
    await seq.after?.(db, log);
    for (const [hash, value] of log.acked) {
      if (purgedHashes.has(hash)) continue;
      expect(Buffer.from(await db.get(hash)).equals(value), `${label}: acknowledged ${hash} reads back`).toBe(true);
    }
    for (const [key, state] of log.keys) {
      const got = await getByKey(db, key);
      const ok = [state.acked, ...(state.inflight === undefined ? [] : [state.inflight])].some((v) => (v === null ? got === null : got !== null && got.equals(v)));
      expect(ok, `${label}: key ${key} holds its acknowledged (or in-flight) value`).toBe(true);
    }
    for await (const o of db.objects()) {
      if (o.type !== 'value') continue;
      expect(log.tried.has(sha(await readAll(o.data()))), `${label}: object ${o.hash} is whole and was written`).toBe(true);
    }
    expect((await db.check({ readData: true })).problems, label).toEqual([]);
    const probe = pseudoRandom(`after ${label}`, 6000);
    const { hash } = await db.put(probe, { key: 'after-crash' });
    await db.flush();
    await db.close();
    const again = await OuroDB.open(dir, { ...OPTIONS, fs: crashFs });
    try {
      expect(Buffer.from(await again.get(hash)).equals(probe), `${label}: a write after recovery survives a reopen`).toBe(true);
    } finally {
      await again.close();
    }
  } finally {
    await db.close();
  }
}

interface Sequence {
  /** Work done before crashes are armed (not counted in k). */
  setup?: (db: OuroDB, log: Log, dir: string) => Promise<CrashableFs | void>;
  /** The operations crashed at every step. */
  run: (db: OuroDB, log: Log, dir: string) => Promise<void>;
  /** Hashes the sequence's setup purged (acknowledged, then forgotten on purpose). */
  purged?: Set<string>;
  /** More to do and check after recovery, before the common checks (e.g. resume an import). */
  after?: (db: OuroDB, log: Log) => Promise<void>;
}

/**
 * Runs `seq` with a crash after k = 0, 1, 2, ... file operations (every STRIDE-th k), each with
 * SEEDS seeds, verifying after each crash, until a run completes. Returns how many crash points
 * it tested and the operation count of a whole run.
 */
async function crashAtEveryStep(name: string, seq: Sequence): Promise<{ crashes: number; ops: number }> {
  let crashes = 0;
  for (let k = 0; ; k += STRIDE) {
    let completed = false;
    let total = 0;
    for (let s = 0; s < SEEDS; s++) {
      const dir = tempDir('ourodb-crashfs-');
      let crashFs = new CrashableFs({ seed: k * 7919 + s + 1 });
      const log = new Log(crashFs);
      const label = `${name} k=${k} seed=${crashFs.seed}`;
      let db: OuroDB | undefined;
      try {
        db = await OuroDB.open(dir, { ...OPTIONS, fs: crashFs });
        const swapped = await seq.setup?.(db, log, dir);
        if (swapped) log.fs = crashFs = swapped;
        crashFs.crashAfter = crashFs.ops + k;
        const base = crashFs.ops;
        await seq.run(db, log, dir);
        total = crashFs.ops - base;
        await log.race(db.close());
        completed = true;
        break;
      } catch (err) {
        if (!(err instanceof Crashed)) throw new Error(`${label}: ${String(err)}`, { cause: err });
      }
      crashes++;
      await verify(dir, crashFs.afterCrash(), log, seq, label);
    }
    if (completed) {
      console.log(`crash-fs ${name}: recovered from ${crashes} crash points; a whole run makes ${total} file operations`);
      return { crashes, ops: total };
    }
  }
}

/** Sizes from inline (under 4 KiB) to several chunks, so records, chunks and seals all occur. */
function valueOf(i: number): Buffer {
  const sizes = [100, 3000, 5000, 12000, 700, 20000];
  return pseudoRandom(`value ${i}`, sizes[i % sizes.length]!);
}

describe('crash after every file operation (crashable FS)', () => {
  it('puts, concurrent puts and a flush', async () => {
    const r = await crashAtEveryStep('puts', {
      run: async (db, log) => {
        for (let i = 0; i < 4; i++) await log.put(db, valueOf(i));
        await Promise.all([4, 5, 6].map((i) => log.put(db, valueOf(i))));
        await log.put(db, valueOf(1)); // a duplicate: dedup against a committed value
        await log.race(db.flush());
        await log.put(db, valueOf(7));
      },
    });
    expect(r.crashes).toBeGreaterThan(20);
  }, 120_000);

  it('key updates, delete and purge', async () => {
    const r = await crashAtEveryStep('keys', {
      run: async (db, log) => {
        await log.put(db, valueOf(10), 'a');
        await log.put(db, valueOf(11), 'b');
        await log.put(db, valueOf(12), 'a');
        await log.delete(db, 'b');
        await log.put(db, valueOf(13), 'c');
        await log.purge(db, 'a');
        await log.put(db, valueOf(14), 'b');
      },
    });
    expect(r.crashes).toBeGreaterThan(15);
  }, 120_000);

  it('gc compacting blocks', async () => {
    const purged = new Set<string>();
    const r = await crashAtEveryStep('gc', {
      purged,
      setup: async (db, log) => {
        for (let i = 0; i < 6; i++) {
          const hash = await log.put(db, valueOf(20 + i), `k${i}`);
          if (i % 2 === 0) purged.add(hash);
        }
        await db.flush();
        for (let i = 0; i < 6; i += 2) await log.purge(db, `k${i}`);
      },
      run: async (db, log) => {
        const report = await log.race(db.gc({ threshold: 1 }));
        expect(report.blocksRemoved).toBeGreaterThan(0);
      },
    });
    expect(r.crashes).toBeGreaterThan(5);
  }, 120_000);

  it('concat of stored parts, the parts purged, gc', async () => {
    const parts: Array<{ hash: string; value: Buffer }> = [];
    const r = await crashAtEveryStep('concat', {
      setup: async (db, log) => {
        parts.length = 0;
        // Chunked parts (5000, 12000 and 20000 bytes) and an inline one (700), as an upload's last part.
        for (const [i, n] of [44, 45, 47, 46].entries()) parts.push({ hash: await log.put(db, valueOf(n), `p${i}`), value: valueOf(n) });
        await db.flush();
      },
      run: async (db, log) => {
        await log.concat(db, parts, 'whole');
        await log.concat(db, [parts[2]!, parts[0]!, parts[2]!], 'whole');
        await log.purge(db, 'p0');
        await log.purge(db, 'p2');
        await log.race(db.flush());
        const report = await log.race(db.gc({ threshold: 1 }));
        expect(report.blocksRemoved).toBeGreaterThan(0);
      },
    });
    expect(r.crashes).toBeGreaterThan(10);
  }, 120_000);

  it('opening with a lost index: sealing the open blocks and rebuilding', async () => {
    // Setup writes, then crashes with blocks still open and deletes the index: the crashes hit
    // the open that cuts the open blocks back to whole entries, seals them and rebuilds the index.
    const r = await crashAtEveryStep('rebuild', {
      setup: async (db, log, dir) => {
        for (let i = 0; i < 5; i++) await log.put(db, valueOf(30 + i), `r${i}`);
        const image = log.fs.afterCrashImage();
        // Opening a throwaway copy waits until the crashed handle has let go of the index.
        await (await openAfterCrash(dir, new CrashableFs({ image }))).close();
        fs.rmSync(path.join(dir, 'index'), { recursive: true });
        return new CrashableFs({ seed: log.fs.seed + 2, image });
      },
      run: async (_db, log, dir) => {
        const db = await log.race(OuroDB.open(dir, { ...OPTIONS, fs: log.fs }));
        await log.race(db.close());
      },
    });
    expect(r.crashes).toBeGreaterThan(3);
  }, 120_000);

  it('import of an archive, resumed after the crash', async () => {
    const source = tempDir();
    const archive = path.join(tempDir(), 'a.ouro');
    const values = new Map<string, Buffer>();
    const src = await OuroDB.open(source, OPTIONS);
    for (let i = 0; i < 6; i++) {
      values.set(`i${i}`, valueOf(40 + i));
      await src.put(valueOf(40 + i), { key: `i${i}` });
    }
    await src.put(valueOf(50), { key: 'i0' });
    values.set('i0', valueOf(50));
    const out = fs.createWriteStream(archive);
    await exportArchive(src, out, { key: KEY });
    await new Promise((r) => out.end(r));
    await src.close();

    const r = await crashAtEveryStep('import', {
      // An import the crash interrupted is resumed by running it again; then every key holds
      // the source's value and history (no version twice).
      after: async (db) => {
        await importArchive(db, fs.createReadStream(archive), { key: KEY });
        for (const [key, value] of values) expect(Buffer.from(await db.getByKey(key)).equals(value)).toBe(true);
        expect((await Array.fromAsync(db.history('i0'))).length).toBe(2);
      },
      run: async (db, log) => {
        for (const v of values.values()) log.tried.add(sha(v));
        log.tried.add(sha(valueOf(40)));
        const input = new PassThrough();
        fs.createReadStream(archive).pipe(input);
        await log.race(importArchive(db, input, { key: KEY }));
      },
    });
    expect(r.crashes).toBeGreaterThan(5);
  }, 120_000);
});
