/**
 * Injected I/O faults (lib/vfs/faulty.ts over the real file system) and a real full disk (a
 * size-limited tmpfs). The promise under test:
 *  - a full disk (ENOSPC, EDQUOT) fails the write with OURO_DISK_FULL, loses nothing that was
 *    acknowledged, leaves the database readable, and writes succeed again once space is freed,
 *    on the same handle;
 *  - any other write error, and any failed fsync (ENOSPC included), is fatal to the handle
 *    (OURO_FAILED) but not to the data: reads go on, and reopening recovers;
 *  - short writes are written out whole.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FaultyFs, NodeVfs, OuroDB, OuroError } from '../lib/index.js';
import type { Fault, OpenOptions } from '../lib/index.js';
import { pseudoRandom, tempDir } from './helpers.js';

const KEY = Buffer.alloc(32, 9);
const OPTIONS: OpenOptions = { key: KEY, blockSize: 16 * 1024, chunkSizes: { min: 4096, avg: 8192, max: 16384 } };
const sizes = [200, 5000, 9000, 30000, 1500];
const valueOf = (i: number) => pseudoRandom(`fault value ${i}`, sizes[i % sizes.length]!);

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code;
}

/** Puts values i..i+n concurrently; returns the acknowledged ones (hash -> value) and the errors. */
async function putMany(db: OuroDB, from: number, n: number, key?: (i: number) => string): Promise<{ acked: Map<string, Buffer>; errors: unknown[] }> {
  const acked = new Map<string, Buffer>();
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: n }, async (_, j) => {
      const v = valueOf(from + j);
      try {
        const r = await db.put(v, key ? { key: key(from + j) } : {});
        acked.set(r.hash, v);
      } catch (err) {
        errors.push(err);
      }
    }),
  );
  return { acked, errors };
}

/**
 * What an injected errno may legitimately surface as from gc() or close() (lib/errors.ts):
 * ioError() makes ENOSPC and EDQUOT OURO_DISK_FULL and any other errno OURO_IO_ERROR (a failed
 * rename or remove), and a failed fsync, or a write error other than a full disk, fails the
 * handle: OURO_FAILED then, and for every write after it. Anything else (an untyped error, the
 * raw errno error, another code) fails the test.
 */
function expectFaultError(err: unknown, errno: string, what: string): void {
  expect(err, `${what}: ${String(err)}`).toBeInstanceOf(OuroError);
  const fromErrno = errno === 'ENOSPC' || errno === 'EDQUOT' ? 'OURO_DISK_FULL' : 'OURO_IO_ERROR';
  expect([fromErrno, 'OURO_FAILED'], `${what}: ${String(err)}`).toContain(codeOf(err));
}

async function expectAll(db: OuroDB, acked: Map<string, Buffer>): Promise<void> {
  for (const [hash, value] of acked) expect(Buffer.from(await db.get(hash)).equals(value), hash).toBe(true);
}

async function reopenAndVerify(dir: string, acked: Map<string, Buffer>): Promise<void> {
  const db = await OuroDB.open(dir, OPTIONS);
  try {
    await expectAll(db, acked);
    expect((await db.check({ readData: true })).problems).toEqual([]);
  } finally {
    await db.close();
  }
}

describe('a full disk (injected ENOSPC / EDQUOT)', () => {
  const cases: Array<{ name: string; fault: Fault }> = [
    { name: 'appending to the open block', fault: { op: 'write', path: '/open/', nth: 3, code: 'ENOSPC' } },
    { name: 'creating a new open block', fault: { op: ['create', 'write'], path: '/open/', nth: 2, code: 'EDQUOT' } },
    { name: 'writing a block footer', fault: { op: ['write', 'truncate'], path: '/open/', nth: 6, code: 'ENOSPC' } },
    { name: 'making a block shard directory', fault: { op: 'mkdir', path: '/blocks/', code: 'ENOSPC' } },
    { name: 'renaming a sealed block', fault: { op: 'rename', code: 'ENOSPC' } },
  ];
  for (const { name, fault } of cases) {
    it(`while ${name}: puts fail with OURO_DISK_FULL, nothing acknowledged is lost, and the same handle writes again once space is freed`, async () => {
      const dir = tempDir();
      const faulty = new FaultyFs(new NodeVfs());
      const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
      const acked = new Map<string, Buffer>();
      try {
        const before = await putMany(db, 0, 6);
        expect(before.errors).toEqual([]);
        for (const [h, v] of before.acked) acked.set(h, v);

        faulty.inject(fault);
        const during = await putMany(db, 100, 24);
        const flushed = await db.flush().then(() => undefined, (err: unknown) => err);
        for (const [h, v] of during.acked) acked.set(h, v);
        expect(faulty.injected).toBeGreaterThan(0);
        // Every failure is typed: the disk is full (never a generic I/O error or a dead handle).
        expect(during.errors.map(codeOf).filter((c) => c !== 'OURO_DISK_FULL')).toEqual([]);
        if (flushed !== undefined) expect(codeOf(flushed)).toBe('OURO_DISK_FULL');
        expect(during.errors.length + (flushed === undefined ? 0 : 1)).toBeGreaterThan(0);
        await expectAll(db, acked); // readable while the disk is full

        faulty.clear(); // space freed
        const after = await putMany(db, 200, 12);
        expect(after.errors).toEqual([]);
        for (const [h, v] of after.acked) acked.set(h, v);
        await db.flush();
        expect((await db.stats()).walRecords).toBe(0);
        await expectAll(db, acked);
        expect((await db.check({ readData: true })).problems).toEqual([]);
      } finally {
        await db.close();
      }
      await reopenAndVerify(dir, acked);
    });
  }

  it('a block write refused at any point of concurrent puts fails the records waiting in a pack too: none names a chunk the disk refused', async () => {
    // Records of puts that meet at a group commit wait in a pack for the next group; a put's
    // record joins it after its chunks are queued. A refused chunk write fails the entries queued
    // after it: the records in the pack must fail too, or a put is acknowledged whose chunk was cut.
    for (let nth = 1; nth <= 16; nth++) {
      const dir = tempDir();
      const faulty = new FaultyFs(new NodeVfs());
      const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
      const acked = new Map<string, Buffer>();
      try {
        faulty.inject({ op: 'write', path: '/open/', nth, times: 1, code: 'ENOSPC' });
        const during = await putMany(db, 3000 + nth * 40, 32);
        for (const [h, v] of during.acked) acked.set(h, v);
        expect(during.errors.map(codeOf).filter((c) => c !== 'OURO_DISK_FULL')).toEqual([]);
        await expectAll(db, acked);
        // The one refused write may be the footer's, at this flush: a second one seals.
        const flushed = await db.flush().then(() => undefined, (err: unknown) => err);
        if (flushed !== undefined) {
          expect(codeOf(flushed)).toBe('OURO_DISK_FULL');
          await db.flush();
        }
        expect((await db.check({ readData: true })).problems).toEqual([]);
      } finally {
        await db.close();
      }
      await reopenAndVerify(dir, acked);
    }
  });

  it('keyed writes: a version the disk refused leaves the key at its last acknowledged version, and compare-and-set works on', async () => {
    const dir = tempDir();
    const faulty = new FaultyFs(new NodeVfs());
    const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
    try {
      const v1 = await db.put(valueOf(1), { key: 'doc' });
      faulty.inject({ op: 'write', path: '/open/', code: 'ENOSPC' });
      await expect(db.put(valueOf(2), { key: 'doc', ifHead: v1.hash })).rejects.toMatchObject({ code: 'OURO_DISK_FULL' });
      await expect(db.put(valueOf(3), { key: 'doc' })).rejects.toMatchObject({ code: 'OURO_DISK_FULL' });
      expect(await db.head('doc')).toBe(v1.hash);
      faulty.clear();
      const v4 = await db.put(valueOf(4), { key: 'doc', ifHead: v1.hash });
      expect(await db.head('doc')).toBe(v4.hash);
      expect((await Array.fromAsync(db.history('doc'))).map((v) => v.hash)).toEqual([v4.hash, v1.hash]);
      expect(Buffer.from(await db.getByKey('doc')).equals(valueOf(4))).toBe(true);
    } finally {
      await db.close();
    }
  });

  it('a disk with less free space than reserveBytes refuses new blocks with OURO_DISK_FULL, and takes them again once space is freed', async () => {
    const dir = tempDir();
    const faulty = new FaultyFs(new NodeVfs());
    const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty, reserveBytes: 1024 * 1024 });
    try {
      const { acked } = await putMany(db, 600, 4);
      await db.flush();
      faulty.free = 1024 * 1024; // below the reserve plus a block
      await expect(db.put(valueOf(700))).rejects.toMatchObject({ code: 'OURO_DISK_FULL' });
      await expectAll(db, acked);
      faulty.free = undefined;
      const r = await db.put(valueOf(700));
      expect(Buffer.from(await db.get(r.hash)).equals(valueOf(700))).toBe(true);
    } finally {
      await db.close();
    }
  });

  it('close() on a full disk leaves an unsealed block to the next open, which seals it', async () => {
    const dir = tempDir();
    const faulty = new FaultyFs(new NodeVfs());
    const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
    const { acked } = await putMany(db, 300, 3);
    faulty.inject({ op: ['write', 'truncate', 'mkdir', 'rename'], code: 'ENOSPC' });
    await db.close();
    expect(fs.readdirSync(path.join(dir, 'open')).length).toBeGreaterThan(0);
    await reopenAndVerify(dir, acked);
    expect(fs.readdirSync(path.join(dir, 'open'))).toEqual([]);
  });
});

describe('other I/O faults are fatal to the handle, not to the data', () => {
  const fatal: Array<{ name: string; fault: Fault }> = [
    { name: 'EIO on an append', fault: { op: 'write', path: '/open/', nth: 2, code: 'EIO' } },
    { name: 'a failed fdatasync', fault: { op: 'datasync', nth: 2, code: 'EIO' } },
    { name: 'ENOSPC from fdatasync', fault: { op: 'datasync', nth: 2, code: 'ENOSPC' } },
    { name: 'a failed fsync while sealing', fault: { op: 'sync', code: 'EIO' } },
    { name: 'a failed directory fsync', fault: { op: 'syncDir', path: '/blocks/', code: 'EIO' } },
    { name: 'EIO renaming a sealed block', fault: { op: 'rename', code: 'EIO' } },
  ];
  for (const { name, fault } of fatal) {
    it(`${name}: writes stop with OURO_FAILED, reads go on, reopening recovers`, async () => {
      const dir = tempDir();
      const faulty = new FaultyFs(new NodeVfs());
      const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
      const acked = new Map<string, Buffer>();
      try {
        for (const [h, v] of (await putMany(db, 0, 4)).acked) acked.set(h, v);
        faulty.inject(fault);
        const during = await putMany(db, 400, 16);
        await db.flush().catch(() => {});
        for (const [h, v] of during.acked) acked.set(h, v);
        expect(faulty.injected).toBeGreaterThan(0);
        await expect(db.put(valueOf(999))).rejects.toMatchObject({ code: 'OURO_FAILED' });
        expect(during.errors.map(codeOf).filter((c) => c !== 'OURO_FAILED')).toEqual([]);
        await expectAll(db, acked);
      } finally {
        await db.close();
      }
      await reopenAndVerify(dir, acked);
    });
  }

  it('short writes everywhere are written out whole', async () => {
    const dir = tempDir();
    const faulty = new FaultyFs(new NodeVfs()).inject({ op: 'write', short: true });
    const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
    let acked: Map<string, Buffer>;
    try {
      ({ acked } = await putMany(db, 500, 20));
      expect(acked.size).toBe(20);
      await db.flush();
      expect(faulty.injected).toBeGreaterThan(20);
      expect((await db.check({ readData: true })).problems).toEqual([]);
    } finally {
      await db.close();
    }
    await reopenAndVerify(dir, acked);
  });

  it('random faults at random points, round after round: acknowledged data always survives', async () => {
    const dir = tempDir();
    const acked = new Map<string, Buffer>();
    let rng = 12345;
    const random = (n: number) => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return rng % n;
    };
    const ops: Fault['op'][] = ['write', 'datasync', 'sync', 'truncate', 'rename', 'mkdir', 'syncDir', 'create', 'remove'];
    const codes = ['ENOSPC', 'EIO', 'EDQUOT'];
    let fired = 0;
    const putCodes = new Set<string | undefined>();
    // Rounds go on until 8 have had their fault fire (at most 30): whether a round reaches the
    // nth operation of its kind depends on timing (a rename or remove fault needs a seal to come
    // that far), and a clean-clone CI run had 7 of a fixed 12 fire.
    for (let round = 0; fired < 8 && round < 30; round++) {
      const faulty = new FaultyFs(new NodeVfs());
      const db = await OuroDB.open(dir, { ...OPTIONS, fs: faulty });
      let code = '';
      let closed: unknown;
      try {
        await expectAll(db, acked);
        const fault: Fault = { op: ops[random(ops.length)]!, nth: 1 + random(6), times: 1 + random(3), code: codes[random(codes.length)]! };
        code = fault.code!;
        faulty.inject(fault);
        const r = await putMany(db, 1000 + round * 20, 20, round % 2 ? (i) => `k${i % 7}` : undefined);
        for (const [h, v] of r.acked) acked.set(h, v);
        expect(r.errors.map(codeOf).filter((c) => c !== 'OURO_DISK_FULL' && c !== 'OURO_FAILED')).toEqual([]);
        for (const err of r.errors) putCodes.add(codeOf(err));
        if (round % 3 === 0) await db.gc({ threshold: 1 }).catch((err: unknown) => expectFaultError(err, code, `gc in round ${round}`));
      } finally {
        closed = await db.close().then(() => undefined, (err: unknown) => err ?? new Error('close rejected with nothing'));
      }
      if (closed !== undefined) expectFaultError(closed, code, `close in round ${round}`);
      if (faulty.injected > 0) fired++;
    }
    // The faults really reached the database: 8 rounds had theirs fire (9 or 10 of the first 12
    // with this seed, usually), and puts met both outcomes.
    expect(fired).toBeGreaterThanOrEqual(8);
    expect([...putCodes].sort()).toEqual(['OURO_DISK_FULL', 'OURO_FAILED']);
    await reopenAndVerify(dir, acked);
  });
});

/**
 * Mounts a tmpfs of `bytes` at a new directory, or says why it cannot (not root, no mount
 * permission in this container): the test is then skipped with that reason.
 */
function mountTmpfs(bytes: number): { dir: string; unmount: () => void } | { reason: string } {
  if (process.platform !== 'linux') return { reason: 'tmpfs mounts need Linux' };
  if (process.getuid?.() !== 0) return { reason: 'mounting a size-limited tmpfs needs root' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ourodb-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    fs.rmdirSync(dir);
    return { reason: `mount -t tmpfs failed here (${String((err as { stderr?: Buffer }).stderr ?? err).trim()})` };
  }
  return {
    dir,
    unmount: () => {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      fs.rmdirSync(dir);
    },
  };
}

const mounted = mountTmpfs(48 * 1024 * 1024);
afterAll(() => {
  if (!('reason' in mounted)) mounted.unmount();
});

/**
 * Fills the tmpfs (a ballast file takes part of it), checks what the failure was, frees the
 * ballast and writes again (after a reopen in the one case where the handle stops: LevelDB
 * itself hit the full disk).
 */
async function fillFreeAndWriteAgain(root: string, reserveBytes: number | undefined): Promise<{ full: unknown; acked: number }> {
  const dir = path.join(root, `db-${reserveBytes ?? 'default'}`);
  const ballast = path.join(root, 'ballast');
  fs.writeFileSync(ballast, Buffer.alloc(12 * 1024 * 1024, 1));
  const options: OpenOptions = { ...OPTIONS, blockSize: 256 * 1024, compression: false, ...(reserveBytes === undefined ? {} : { reserveBytes }) };
  const acked = new Map<string, Buffer>();
  let db = await OuroDB.open(dir, options);
  let full: unknown;
  try {
    for (let i = 0; !full && i < 40_000; i += 8) {
      const r = await putMany(db, 5000 + i, 8);
      for (const [h, v] of r.acked) acked.set(h, v);
      full = r.errors[0];
      if (!full) full = await db.flush().then(() => undefined, (err: unknown) => err);
    }
    expect(full).toBeDefined();
    await expectAll(db, acked);

    fs.rmSync(ballast); // free space
    // With no reserve, LevelDB's log may have hit the full disk too, even after a block file did
    // first (a put and a seal race for the last bytes): that stops the handle (docs/errors.md,
    // OURO_FAILED), and the test reopens, as an application would. One probe put tells.
    const probe = await putMany(db, 80_000, 1);
    for (const [h, v] of probe.acked) acked.set(h, v);
    if (codeOf(full) === 'OURO_FAILED' || probe.errors.some((e) => codeOf(e) === 'OURO_FAILED')) {
      expect(reserveBytes).toBe(0); // with the reserve, LevelDB always has room
      await db.close();
      db = await OuroDB.open(dir, options);
    } else {
      expect(probe.errors).toEqual([]);
    }
    const after = await putMany(db, 90_000, 8);
    expect(after.errors).toEqual([]);
    for (const [h, v] of after.acked) acked.set(h, v);
    await db.flush();
    await expectAll(db, acked);
    expect((await db.check({ readData: true })).problems).toEqual([]);
  } finally {
    await db.close().catch(() => {});
  }
  await reopenAndVerify(dir, acked);
  fs.rmSync(dir, { recursive: true });
  return { full, acked: acked.size };
}

describe('a real full disk (a 48 MiB tmpfs)', () => {
  const skip = 'reason' in mounted ? ` (skipped: ${mounted.reason})` : '';
  it.skipIf('reason' in mounted)(`the free-space reserve stops puts with OURO_DISK_FULL before the disk is full; the same handle writes again after space is freed${skip}`, async () => {
    if ('reason' in mounted) return;
    const { full } = await fillFreeAndWriteAgain(mounted.dir, undefined);
    expect(full).toMatchObject({ code: 'OURO_DISK_FULL' });
    expect(String((full as Error).message)).toMatch(/reserveBytes/);
  }, 120_000);

  it.skipIf('reason' in mounted)(`with no reserve the disk really fills (ENOSPC); every acknowledged write survives and writes succeed after space is freed${skip}`, async () => {
    if ('reason' in mounted) return;
    const { full } = await fillFreeAndWriteAgain(mounted.dir, 0);
    // The disk filled in a block file (OURO_DISK_FULL: the handle goes on) or in LevelDB's own
    // log (OURO_FAILED: LevelDB stops all writes after a failed one, so the test reopens).
    expect(['OURO_DISK_FULL', 'OURO_FAILED']).toContain(codeOf(full));
    expect(String(full) + String((full as Error).cause)).toMatch(/ENOSPC|no space/i);
  }, 120_000);
});
