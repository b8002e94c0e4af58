/**
 * The LevelDB under the index and WAL verifies the checksum of every block it reads. classic-level
 * ships LevelDB with that off, and then a flipped bit in a table can read back as a missing key or
 * a different value, silently. native/classic-level+3.0.0.patch turns it on,
 * scripts/leveldb-native.mjs builds the patched source, and index/leveldb.ts loads that build;
 * this fails when classic-level's own prebuilt binary is the one in use (as when that build failed).
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel, NATIVE_PATCH_REVISION, levelBinding, nativeTarget } from '../index/leveldb.js';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';
import { fixture, repoRoot } from './paths.js';

const valueOf = (i: number) => crypto.createHash('sha512').update(`v${i}`).digest();

interface NativeScript {
  PATCH_REVISION: number;
  nativeTarget(): string;
  applyPatch(dir: string, patchText: string): number;
}
const native = async () => (await import(pathToFileURL(path.join(repoRoot, 'scripts', 'leveldb-native.mjs')).href)) as NativeScript;
const patchText = () => fs.readFileSync(path.join(repoRoot, 'native', 'classic-level+3.0.0.patch'), 'utf8');

describe('the verified LevelDB binding', () => {
  it('is the one in use, built from this revision of the patch', async () => {
    expect(levelBinding.verified, levelBinding.reason).toBe(true);
    expect(levelBinding.path).toBe(path.join(repoRoot, 'prebuilds', nativeTarget(), 'classic_level.node'));
    const script = await native();
    expect(script.PATCH_REVISION).toBe(NATIVE_PATCH_REVISION);
    expect(script.nativeTarget()).toBe(nativeTarget());
    expect(patchText()).toContain(`uint32_t ourodb_patch = ${NATIVE_PATCH_REVISION};`);
  });

  it.each(['before', 'after'])('leaves an application its own classic-level, loaded %s OuroDB', (order) => {
    const r = spawnSync(process.execPath, [fixture('binding-isolation.js'), order], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ oursVerified: true, appBindingPatch: null, appBindingLoaded: true, sameClass: false, read: ['app', 'ours'] });
  });

  it('applies its patch only to the exact source it was written for', async () => {
    const { applyPatch } = await native();
    const classic = path.dirname(createRequire(import.meta.url).resolve('classic-level/package.json'));
    const dir = tempDir();
    for (const f of ['binding.cc', 'deps/leveldb/leveldb-1.20/include/leveldb/options.h', 'deps/leveldb/leveldb-1.20/util/env_posix.cc']) {
      fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      fs.copyFileSync(path.join(classic, f), path.join(dir, f));
    }
    const options = path.join(dir, 'deps/leveldb/leveldb-1.20/include/leveldb/options.h');
    const pristine = fs.readFileSync(options, 'utf8');
    expect(applyPatch(dir, patchText())).toBeGreaterThanOrEqual(3);
    expect(fs.readFileSync(options, 'utf8')).toBe(pristine.replace('verify_checksums(false)', 'verify_checksums(true)'));
    expect(fs.readFileSync(path.join(dir, 'binding.cc'), 'utf8')).toContain('NAPI_EXPORT_UINT32(ourodb_patch)');
    // A second time, the context no longer matches: refused, not applied twice.
    expect(() => applyPatch(dir, patchText())).toThrow(/the patch expects/);
  });
});

describe('packed batches (ourodbPacked)', () => {
  /** The entries of a packed batch: | key length (u32 LE) | value length (u32 LE) | key | value |, one after another. */
  const unpack = (b: Buffer): [string, string][] => {
    const out: [string, string][] = [];
    for (let at = 0; at < b.length;) {
      const k = b.readUInt32LE(at);
      const v = b.readUInt32LE(at + 4);
      out.push([b.toString('utf8', at + 8, at + 8 + k), b.toString('hex', at + 8 + k, at + 8 + k + v)]);
      at += 8 + k + v;
    }
    expect(out.length).toBeGreaterThan(0);
    return out;
  };

  it('nextv hands a batch back as one Buffer of lengths, keys and values, within its size and byte bounds', async () => {
    const db = new ClassicLevel<string, Buffer>(tempDir(), { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    try {
      const entries: [string, string][] = Array.from({ length: 2500 }, (_, i) => [`k/${i.toString().padStart(4, '0')}${i % 5 === 0 ? '\u{10FFFF}é' : ''}`, valueOf(i).subarray(0, i % 70).toString('hex')]);
      await db.batch(entries.map(([key, v]) => ({ type: 'put' as const, key, value: Buffer.from(v, 'hex') })));
      await db.compactRange('a', 'z'); // into tables; then 1,500 of them again into the memtable, merged over their table copies
      await db.batch(entries.slice(1000).map(([key, v]) => ({ type: 'put' as const, key, value: Buffer.from(v, 'hex') })));
      entries.sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
      const it = db.iterator({ gte: 'k/0100', ourodbPacked: true, highWaterMarkBytes: 1 << 20 } as never);
      const read: [string, string][] = [];
      const first = (await it.nextv(3)) as unknown as [Buffer, undefined][];
      expect(first).toHaveLength(1);
      expect(Buffer.isBuffer(first[0]![0])).toBe(true);
      expect(first[0]![1]).toBeUndefined();
      expect(unpack(first[0]![0])).toHaveLength(3);
      read.push(...unpack(first[0]![0]));
      for (let b = await it.nextv(1000); b.length > 0; b = await it.nextv(1000)) {
        expect(b).toHaveLength(1);
        const got = unpack((b[0] as unknown as [Buffer])[0]);
        expect(got.length).toBeLessThanOrEqual(1000);
        read.push(...got);
      }
      await it.close();
      expect(read).toEqual(entries.filter(([k]) => k >= 'k/0100'));
      // The byte bound (highWaterMarkBytes) ends a batch after the entry that passes it.
      const small = db.iterator({ ourodbPacked: true, highWaterMarkBytes: 1 } as never);
      const one = (await small.nextv(1000)) as unknown as [Buffer][];
      expect(unpack(one[0]![0])).toEqual([entries[0]]);
      await small.close();
    } finally {
      await db.close();
    }
  });

  it.each(['packed', 'fallback'])('list gives the same entries through %s batches', (mode) => {
    // lib/query.ts asks for packed batches; classic-level's own binding (the fallback where
    // OuroDB's does not load) ignores the option and returns entries: both must list the same.
    const r = spawnSync(process.execPath, [fixture('list-binding.js'), mode], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const { verified, batches, listings } = JSON.parse(r.stdout) as { verified: boolean; batches: { packed: number; entries: number }; listings: Record<string, string[]> };
    expect(verified).toBe(mode === 'packed');
    if (mode === 'packed') expect(batches.packed).toBeGreaterThan(15);
    else expect(batches).toMatchObject({ packed: 0, entries: expect.any(Number) as number });
    // What the fixture wrote: these keys in this order, every 7th deleted, k/00001 with two heads.
    const names = Array.from({ length: 2600 }, (_, i) => `k/${i.toString().padStart(5, '0')}`).concat(['p', 'p\uFFFD', 'p\uFFFF', 'p\u{10FFFF}', 'p\u{10FFFF}\u{10FFFF}', 'é', '\u{10FFFF}']);
    const deleted = new Set(names.filter((_, i) => i % 7 === 0));
    const lineOf = (n: string) => `${n} ${n === 'k/00001' ? 2 : 1}${deleted.has(n) ? ' deleted' : ''}`;
    names.sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    const all = names.map(lineOf);
    const live = all.filter((l) => !l.endsWith(' deleted'));
    expect(listings.withDeleted).toEqual(all);
    expect(listings.all).toEqual(live);
    expect(listings.limited).toEqual(live.slice(0, 1500));
    expect(listings.range).toEqual(live.filter((l) => l.startsWith('k/01') && l.split(' ')[0]! > 'k/01234').slice(0, 900));
    expect(listings.prefixP).toEqual(live.filter((l) => l.startsWith('p')));
    expect(listings.prefixP).toHaveLength(4);
    expect(listings.prefixTop).toEqual(['p\u{10FFFF} 1']);
    expect(listings.paged).toEqual(live);
  });
});

describe('LevelDB block checksums', () => {
  it('a flipped bit in a table reads as LEVEL_CORRUPTION, never as a missing key or another value', async () => {
    let corrupt = 0;
    for (let round = 0; round < 8; round++) {
      const dir = tempDir();
      let db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      for (let i = 0; i < 2000; i += 100) await db.batch(Array.from({ length: 100 }, (_, j) => ({ type: 'put' as const, key: `k${i + j}`, value: valueOf(i + j) })));
      await db.compactRange('a', 'z'); // into .ldb tables
      await db.close();
      const tables = fs.readdirSync(dir).filter((f) => f.endsWith('.ldb'));
      expect(tables.length).toBeGreaterThan(0);
      for (const f of tables) {
        // One bit in the first half of the file: the data blocks (the index and footer are at the end).
        const b = fs.readFileSync(path.join(dir, f));
        b[Math.floor(((round + 1) / 18) * b.length)]! ^= 1 << round;
        fs.writeFileSync(path.join(dir, f), b);
      }
      db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      await db.open();
      try {
        for (let i = 0; i < 2000; i++) {
          try {
            const v = await db.get(`k${i}`);
            expect(v?.equals(valueOf(i)), `k${i} read back missing or different`).toBe(true);
          } catch (err) {
            expect((err as { code?: string }).code, String(err)).toBe('LEVEL_CORRUPTION');
            corrupt++;
          }
        }
      } finally {
        await db.close();
      }
    }
    expect(corrupt).toBeGreaterThan(0);
  });
});

/**
 * The same patch writes zeros 1 MiB ahead of the end of each LevelDB write-ahead log, so that a
 * synced write overwrites bytes already on disk instead of growing the file (patches/README.md).
 * LevelDB's log reader must take the zeros for padding: after a close, and after a kill -9 that
 * leaves them behind a torn tail.
 */
describe('LevelDB write-ahead logs written ahead with zeros', () => {
  const logsOf = (dir: string) => fs.readdirSync(dir).filter((f) => /^\d+\.log$/.test(f)).map((f) => path.join(dir, f));

  it('a log holds zeros past its records after synced writes, and reopens with every key', async () => {
    const dir = tempDir();
    let db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    for (let i = 0; i < 300; i++) await db.put(`k${i}`, valueOf(i), { sync: true });
    // 300 records of ~90 bytes: under 32 KiB of log, so everything from 512 KiB on is the zeros.
    const [log] = logsOf(dir);
    const bytes = fs.readFileSync(log!);
    expect(bytes.length).toBeGreaterThanOrEqual(1 << 20);
    expect(bytes.subarray(0, 32 << 10).some((b) => b !== 0)).toBe(true);
    expect(bytes.subarray(512 << 10).every((b) => b === 0)).toBe(true);
    await db.close();
    db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await db.open();
    try {
      for (let i = 0; i < 300; i++) expect((await db.get(`k${i}`))?.equals(valueOf(i)), `k${i}`).toBe(true);
    } finally {
      await db.close();
    }
  });

  it('writes without sync write no zeros ahead', async () => {
    const dir = tempDir();
    const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await db.open();
    try {
      for (let i = 0; i < 300; i++) await db.put(`k${i}`, valueOf(i));
      const sizes = logsOf(dir).map((f) => fs.statSync(f).size);
      expect(sizes.length).toBe(1);
      expect(sizes[0]).toBeGreaterThan(0);
      expect(sizes[0]).toBeLessThan(64 << 10);
    } finally {
      await db.close();
    }
  });

  it('a writer killed with SIGKILL leaves a database that opens with every acknowledged put', async () => {
    for (let round = 0; round < 4; round++) {
      const dir = tempDir();
      const child = spawn(process.execPath, [fixture('ldb-writer.js'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      // Killed at a different point each round, once it has acknowledged some puts.
      const after = 200 + round * 700;
      await new Promise<void>((resolve) => {
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.split('\n').length > after && !child.killed) child.kill('SIGKILL');
        });
        child.on('exit', () => resolve());
      });
      const acknowledged = out.split('\n').filter((l) => /^\d+$/.test(l)).length;
      expect(acknowledged).toBeGreaterThanOrEqual(after);
      expect(logsOf(dir).some((f) => fs.statSync(f).size >= 1 << 20)).toBe(true);
      const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      await db.open();
      try {
        for (let i = 0; i < acknowledged; i++) expect((await db.get(`k${i}`))?.equals(valueOf(i)), `k${i} of ${acknowledged}`).toBe(true);
      } finally {
        await db.close();
      }
    }
  });
});
