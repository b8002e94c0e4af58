// Cost per byte (issue 34): what ingest allocates per chunk and gives back at once.
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RESTORE_MALLOC, boundsEarly, isTreeRestore, mallocRestart } from '../bin/cli/memory.js';
import { READ_AHEAD_BYTES, putPaths, readReusing, writeValue } from '../bin/cli/put.js';
import { AeadKey, FREE_NOW_MIN_BYTES, freeNow, nextNonce, xchachaOpen, xchachaSealInto } from '../lib/crypto.js';
import { maybeCompress } from '../lib/entry.js';
import { OuroDB } from '../lib/index.js';
import { decodeRecord, encodeRecord } from '../lib/record.js';
import { ChunkList } from '../lib/chunk-list.js';
import { CountingVfs, blockFiles, pseudoRandom, pseudoRandomStream, tempDir } from './helpers.js';
import { type VfsFile, nodeVfs } from '../lib/vfs/index.js';
import { EntryKind, readEntryHeader } from '../blockstore/format.js';
import { readBlockIndex } from '../blockstore/store.js';

const MiB = 1 << 20;

afterEach(() => vi.restoreAllMocks());

describe('sealing hands the cipher output back at once', () => {
  it('sealing 32 chunks of 1 MiB leaves no ciphertext buffers behind for the collector', () => {
    const key = new AeadKey(crypto.randomBytes(32));
    const plain = crypto.randomBytes(MiB);
    const out = Buffer.allocUnsafeSlow(MiB + 16);
    const aad = Buffer.alloc(8);
    const before = process.memoryUsage().arrayBuffers;
    let sealed = 0;
    for (let i = 0; i < 32; i++) {
      const nonce = nextNonce();
      sealed += xchachaSealInto(key, nonce, plain, aad, out, 0);
      if (i === 31) expect(xchachaOpen(key, nonce, out, aad).equals(plain)).toBe(true);
    }
    expect(sealed).toBe(32 * (MiB + 16));
    // Left to the collector, 32 MiB of ciphertext would still be counted here (a full collection
    // starts only after ~64 MiB of external memory).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * MiB);
  });

  it('freeNow detaches only a buffer that owns its whole ArrayBuffer', () => {
    const own = Buffer.allocUnsafeSlow(64 * 1024);
    freeNow(own);
    expect(own.buffer.byteLength).toBe(0);
    const big = Buffer.allocUnsafeSlow(128 * 1024);
    const slice = big.subarray(1024, 64 * 1024 + 1024);
    freeNow(slice);
    expect(big.buffer.byteLength).toBe(128 * 1024);
    const small = Buffer.allocUnsafeSlow(100);
    freeNow(small);
    expect(small.byteLength).toBe(100);
  });
});

describe('compression probe', () => {
  it('a large random chunk is not handed to zstd at all, a large text one still is', () => {
    const spy = vi.spyOn(zlib, 'zstdCompressSync');
    expect(maybeCompress(crypto.randomBytes(MiB))).toBeUndefined();
    expect(spy).not.toHaveBeenCalled();
    const text = Buffer.from('the quick brown fox jumps over the lazy dog, again and again; '.repeat(20_000).slice(0, MiB));
    const packed = maybeCompress(text);
    expect(spy).toHaveBeenCalled();
    expect(packed!.length).toBeLessThan(text.length / 4);
    expect(zlib.zstdDecompressSync(packed!).equals(text)).toBe(true);
  });
});

describe('`ouro put` reads a large file into one reused buffer', () => {
  it('yields the file in order from a single ArrayBuffer and closes the descriptor', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-cost-'));
    try {
      const file = path.join(dir, 'f');
      const data = crypto.randomBytes(3 * MiB + 12345);
      fs.writeFileSync(file, data);
      const fd = fs.openSync(file, 'r');
      const memories = new Set<ArrayBufferLike>();
      const copies: Buffer[] = [];
      for await (const piece of readReusing(fd)) {
        memories.add(piece.buffer);
        copies.push(Buffer.from(piece));
      }
      expect(copies.length).toBeGreaterThan(3); // the premise: several reads
      expect(memories.size).toBe(1);
      expect(Buffer.concat(copies).equals(data)).toBe(true);
      expect(() => fs.fstatSync(fd)).toThrow(); // closed
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('restore hands each chunk back once it is written', () => {
  it('streaming 32 MiB to a file leaves neither sealed nor plain chunk buffers for the collector', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    try {
      const { hash } = await db.put(pseudoRandomStream('restore', 32 * MiB));
      const want = crypto.createHash('sha256');
      for await (const piece of db.stream(hash)) want.update(piece);
      const file = path.join(tempDir(), 'out');
      const pieces: Uint8Array[] = [];
      const seen = async function* () {
        for await (const piece of db.stream(hash)) {
          pieces.push(piece);
          yield piece;
        }
      };
      const before = process.memoryUsage().arrayBuffers;
      await writeValue(seen(), file);
      const grown = process.memoryUsage().arrayBuffers - before;
      expect(pieces.length).toBeGreaterThan(32); // the premise: many chunks (256 KiB on average)
      expect(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')).toBe(want.digest('hex'));
      // Every piece written was freed, and so were the sealed bytes each was opened from: left to
      // the collector, 64 MiB of the two would still be counted here.
      // Buffers under FREE_NOW_MIN_BYTES are left to the collector (freeNow): the value's last
      // chunk, cut wherever the bytes ended, is that small in ~5% of runs (the cuts depend on the
      // random key). Every other piece is freed.
      const kept = pieces.map((p, i) => [p, i] as const).filter(([p]) => p.byteLength > 0);
      expect(kept.every(([p, i]) => i === pieces.length - 1 && p.byteLength < FREE_NOW_MIN_BYTES), `${kept.length} pieces not freed`).toBe(true);
      expect(grown).toBeLessThan(8 * MiB);
    } finally {
      await db.close();
    }
  });

  it('the sealed bytes of each chunk read are freed once opened', async () => {
    // The file system seam sees the buffer each chunk's sealed bytes are read into.
    const reads: Buffer[] = [];
    class Recording extends CountingVfs {
      override async open(p: string, flags: 'r' | 'r+'): Promise<VfsFile> {
        const f = await super.open(p, flags);
        return { ...f, read: (buf, offset, length, position) => (length >= 64 * 1024 && reads.push(buf), f.read(buf, offset, length, position)) };
      }
    }
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const first = await OuroDB.open(dir, { key });
    const { hash } = await first.put(pseudoRandomStream('sealed', 8 * MiB));
    await first.close();
    const db = await OuroDB.open(dir, { key, fs: new Recording() });
    try {
      let bytes = 0;
      for await (const piece of db.stream(hash)) bytes += piece.byteLength;
      expect(bytes).toBe(8 * MiB);
      expect(reads.length).toBeGreaterThan(8); // the premise: the chunks were read through the seam
      expect(reads.filter((b) => b.byteLength !== 0)).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('a piece of an inline value is a copy: changing it changes no later read', async () => {
    const db = await OuroDB.open(tempDir(), { key: crypto.randomBytes(32) });
    try {
      const { hash } = await db.put('small value');
      const first = await db.get(hash);
      first.fill(0x21);
      expect(Buffer.from(await db.get(hash)).toString()).toBe('small value');
    } finally {
      await db.close();
    }
  });
});

describe('`ouro put` of many files bounds the bytes read ahead', () => {
  it('files of 1-4 MiB read and not yet stored stay within READ_AHEAD_BYTES, not 64 files', async () => {
    const dir = tempDir();
    const sizes = Array.from({ length: 40 }, (_, i) => MiB + ((i * 997_331) % (3 * MiB)));
    sizes.forEach((n, i) => fs.writeFileSync(path.join(dir, `f${String(i).padStart(2, '0')}`), crypto.randomBytes(n)));
    // A database that holds each value a while before its put returns, as a busy one does.
    let held = 0;
    let most = 0;
    let atOnce = 0;
    let mostAtOnce = 0;
    const put = async (value: unknown) => {
      const n = (value as Buffer).length ?? 0;
      held += n;
      atOnce++;
      most = Math.max(most, held);
      mostAtOnce = Math.max(mostAtOnce, atOnce);
      await new Promise((r) => setTimeout(r, 5));
      held -= n;
      atOnce--;
      return { hash: crypto.randomBytes(32).toString('hex'), size: n };
    };
    const db = {
      put,
      putHinted: async (read: () => Promise<unknown>) => ({ ...(await put(await read())), read: true }),
      flush: async () => {},
    };
    const report = await putPaths(db as unknown as OuroDB, [dir], {});
    expect(report.files).toBe(40);
    expect(report.failed).toEqual([]);
    expect(mostAtOnce).toBeGreaterThan(2); // the premise: puts still overlap
    expect(sizes.reduce((a, b) => a + b, 0)).toBeGreaterThan(4 * READ_AHEAD_BYTES); // would all fit in 64 puts
    expect(most).toBeLessThanOrEqual(READ_AHEAD_BYTES);
  });
});

describe('a handle that seals little never starts a seal worker (sealInlineBytes)', () => {
  // Every entry's nonce begins with the prefix of the thread that sealed it (lib/crypto.ts): the
  // main thread's, or a worker's of its own. So the block files tell where each entry was sealed.
  const sealPrefixes = async (dir: string): Promise<Set<string>> => {
    const prefixes = new Set<string>();
    for (const file of blockFiles(dir)) {
      const bytes = fs.readFileSync(file);
      for (const row of (await readBlockIndex(nodeVfs, file)).rows) {
        if (row.kind === EntryKind.Chunk) prefixes.add(readEntryHeader(bytes, row.offset, file, row.offset).nonce.subarray(0, 16).toString('hex'));
      }
    }
    return prefixes;
  };
  // A source tree's shape: 96 files of 6-20 KiB put 96 at once (their chunks are the pool's,
  // batched, while puts are in flight), and one 3 MiB file streamed (chunks of up to 1 MiB in
  // the pool's own buffers).
  const files = Array.from({ length: 96 }, (_, i) => pseudoRandom(`file${i}`, 6000 + 150 * i));
  const large = pseudoRandom('large', 3 * MiB);
  const putAll = async (db: OuroDB) => {
    const small = await Promise.all(files.map((v) => db.put(v)));
    const big = await db.put((async function* () {
      for (let at = 0; at < large.length; at += 100_000) yield large.subarray(at, at + 100_000);
    })());
    for (let i = 0; i < files.length; i++) expect(Buffer.from(await db.get(small[i]!.hash)).equals(files[i]!)).toBe(true);
    expect(Buffer.from(await db.get(big.hash)).equals(large)).toBe(true);
  };

  it('seals everything on the main thread below the default 64 MiB', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { key: crypto.randomBytes(32) });
    await putAll(db);
    await db.close();
    // One prefix, this thread's: no worker sealed anything (before sealInlineBytes, the batches
    // of small chunks and the large chunks all went to one).
    expect([...(await sealPrefixes(dir))]).toEqual([nextNonce().subarray(0, 16).toString('hex')]);
  });

  it('moves sealing to a worker once the handle has sealed sealInlineBytes itself', async () => {
    const dir = tempDir();
    const db = await OuroDB.open(dir, { key: crypto.randomBytes(32), sealInlineBytes: 256 * 1024 });
    await putAll(db);
    await db.close();
    const prefixes = await sealPrefixes(dir);
    expect(prefixes.has(nextNonce().subarray(0, 16).toString('hex'))).toBe(true); // the first 256 KiB
    expect(prefixes.size).toBeGreaterThan(1); // and a worker's after them
  });
});

describe('a cached object record holds its own bytes only', () => {
  it('decodes a record read as a slice of a larger buffer into memory of its own, parent and prev as views of it', () => {
    const id = (n: number) => Buffer.alloc(32, n);
    const encoded = encodeRecord({ type: 'value', size: 3, chunks: new ChunkList(), key: 'tree/a.js', parent: id(1), prev: [id(2), id(3)], created: Date.now(), meta: { type: 'file' }, inline: Buffer.from('abc') });
    // As lib/read.ts gets a record out of an opened pack: a slice of a larger buffer.
    const pack = Buffer.alloc(64 * 1024);
    encoded.copy(pack, 1000);
    const r = decodeRecord(pack.subarray(1000, 1000 + encoded.length), 'test');
    expect(r.parent!.equals(id(1))).toBe(true);
    expect(r.prev.map((p) => p[0])).toEqual([2, 3]);
    expect(Buffer.from(r.inline!).toString()).toBe('abc');
    // Every part the record keeps is a view of one buffer exactly the record's size: neither the
    // pack nor a slab of Node's buffer pool (where a copy under 4 KiB lands) is kept alive by it.
    for (const part of [r.parent!, ...r.prev, r.inline!]) {
      expect(part.buffer).not.toBe(pack.buffer);
      expect(part.buffer.byteLength).toBe(encoded.length);
    }
  });
});

describe('one-shot commands keep V8 young generation small', () => {
  // In a child process (the setting is process-wide): objects that survive scavenges, as the
  // objects of 64 files in flight do, make V8 grow its young generation; boundYoungGeneration
  // (called by withDb) keeps it near the size it starts with. Needs the build (dist/), as the seal
  // worker does.
  const support = new URL('../dist/bin/cli/support.js', import.meta.url).pathname;
  const script = `
    import v8 from 'node:v8';
    const { boundYoungGeneration } = await import(${JSON.stringify(support)});
    if (process.argv[1] === 'bound') boundYoungGeneration();
    const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
    let max = 0;
    const live = new Array(100000);
    for (let i = 0; i < 2000000; i++) {
      live[i % live.length] = { i, s: 'x' + i };
      if (i % 10000 === 0) max = Math.max(max, newSpace());
    }
    console.log(max);`;
  const peakNewSpace = (mode: string, env: NodeJS.ProcessEnv = {}) => Number(execFileSync(process.execPath, ['--input-type=module', '-e', script, mode], { env: { ...process.env, ...env } }).toString().trim());

  it('bounds the young generation unless OURO_YOUNG_GENERATION=grow', () => {
    // The bounded size is the median of three children: in one clean-clone CI run (2026-12-08,
    // two test files at once on two cores) a single bounded child reached 36 MiB of new space,
    // where eleven runs here, three of them beside three busy loops, gave 8.4-10.2 MiB. What V8
    // did then is not known; a median still fails if the bound is not what usually happens.
    const runs = [peakNewSpace('bound'), peakNewSpace('bound'), peakNewSpace('bound')].sort((x, y) => x - y);
    const bound = runs[1]!;
    const grown = peakNewSpace('none');
    expect(bound).toBeLessThan(16 * MiB);
    expect(bound * 2).toBeLessThan(grown);
    expect(peakNewSpace('bound', { OURO_YOUNG_GENERATION: 'grow' }) * 2).toBeGreaterThan(grown);
  });

  // For commands that only read, the launcher bounds it before it loads the CLI and the library:
  // set only once the database was open (withDb), loading ~1 MB of JavaScript had already grown
  // it to 4 MiB semi-spaces (8 MiB of new space, where it stayed). A preloaded probe records the new space's largest
  // size through a whole `ouro stats` (2 MiB with the bound set first, 8 MiB without).
  it('is bounded from the launcher on for commands that only read, before the CLI loads', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-young-'));
    try {
      const ouro = new URL('../dist/bin/ouro.js', import.meta.url).pathname;
      const key = path.join(dir, 'key');
      fs.writeFileSync(key, crypto.randomBytes(32));
      execFileSync(process.execPath, [ouro, '--key-file', key, 'init', path.join(dir, 'db')]);
      const probe = path.join(dir, 'probe.mjs');
      fs.writeFileSync(probe, `import v8 from 'node:v8';
        let max = 0;
        const sample = () => { max = Math.max(max, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size); };
        setInterval(sample, 1).unref();
        process.on('exit', () => { sample(); process.stderr.write('NEW_SPACE ' + max + '\\n'); });`);
      const peak = (env: NodeJS.ProcessEnv = {}) => {
        const out = spawnSync(process.execPath, ['--import', probe, ouro, '--key-file', key, 'stats', path.join(dir, 'db')], { env: { ...process.env, ...env } });
        expect(out.status).toBe(0);
        return Number(/NEW_SPACE (\d+)/.exec(out.stderr.toString())![1]);
      };
      const bound = peak();
      const grown = peak({ OURO_YOUNG_GENERATION: 'grow' });
      expect(bound).toBeLessThanOrEqual(4 * MiB);
      expect(bound * 2).toBeLessThan(grown);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(boundsEarly(['--json', 'get', 'db', 'tree/', '-o', 'out'])).toBe(true);
    expect(boundsEarly(['--key-file', 'put', 'stats', 'db'])).toBe(true);
    expect(boundsEarly(['--key-file', 'k', 'put', 'db', 'x'])).toBe(false);
    expect(boundsEarly(['node', 'start'])).toBe(false);
    expect(boundsEarly(['--version'])).toBe(false);
  });
});

describe('a tree restore restarts itself with malloc settings (bin/cli/memory.ts, mallocRestart)', () => {
  it('only `get PREFIX/`, on Linux, and never over the operator\'s own malloc settings', () => {
    expect(isTreeRestore(['--key-file', 'k', 'get', 'db', 'tree/', '-o', 'out'])).toBe(true);
    expect(isTreeRestore(['--key-file', 'get', 'get', 'db', 'tree/'])).toBe(true);
    expect(isTreeRestore(['get', '-o', 'out/', 'db', 'tree/'])).toBe(true);
    expect(isTreeRestore(['get', 'db', 'file.txt', '-o', 'out/'])).toBe(false); // one file, whatever its name
    expect(isTreeRestore(['get', 'db/', 'file.txt'])).toBe(false);
    expect(isTreeRestore(['--key-file', 'get', 'cat', 'db', 'tree/'])).toBe(false);
    expect(isTreeRestore(['get', 'db', 'file.txt'])).toBe(false);
    expect(isTreeRestore(['put', 'db', 'tree/'])).toBe(false);
    const args = ['get', 'db', 'tree/', '-o', 'out'];
    if (process.platform === 'linux') expect(mallocRestart(args, { PATH: '/bin' })).toEqual({ PATH: '/bin', ...RESTORE_MALLOC });
    expect(mallocRestart(args, { OURO_MALLOC: 'default' })).toBeUndefined();
    expect(mallocRestart(args, { MALLOC_MMAP_THRESHOLD_: '65536' })).toBeUndefined();
    expect(mallocRestart(args, { MALLOC_TRIM_THRESHOLD_: '0' })).toBeUndefined();
    expect(mallocRestart(args, { GLIBC_TUNABLES: 'glibc.malloc.arena_max=1' })).toBeUndefined();
    expect(mallocRestart(['get', 'db', 'file.txt'], {})).toBeUndefined();
  });

  // A probe preloaded with --import reports the process id and the setting each time Node starts
  // the launcher: twice in one process (execve keeps the pid) when it restarted, once otherwise.
  it.runIf(process.platform === 'linux')('restarts in the same process with the settings, and restores the same bytes', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-malloc-'));
    try {
      const ouro = new URL('../dist/bin/ouro.js', import.meta.url).pathname;
      const key = path.join(dir, 'key');
      fs.writeFileSync(key, crypto.randomBytes(32));
      const db = path.join(dir, 'db');
      fs.mkdirSync(path.join(dir, 'tree'));
      const value = pseudoRandom('malloc-restart', 3 * MiB);
      fs.writeFileSync(path.join(dir, 'tree', 'value.bin'), value);
      execFileSync(process.execPath, [ouro, '--key-file', key, 'init', db]);
      execFileSync(process.execPath, [ouro, '--key-file', key, 'put', db, 'tree'], { cwd: dir });
      const probe = path.join(dir, 'probe.mjs');
      fs.writeFileSync(probe, `process.stderr.write('START ' + process.pid + ' ' + process.env.MALLOC_MMAP_THRESHOLD_ + '\\n');`);
      const restore = (out: string, env: NodeJS.ProcessEnv = {}) => {
        const env0 = { ...process.env, ...env };
        for (const k of ['MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES', 'OURO_MALLOC']) if (!(k in env)) delete env0[k];
        const r = spawnSync(process.execPath, ['--import', probe, ouro, '--key-file', key, 'get', db, 'tree/', '-o', path.join(dir, out)], { env: env0 });
        expect(r.status).toBe(0);
        expect(fs.readFileSync(path.join(dir, out, 'value.bin')).equals(value)).toBe(true);
        return [...r.stderr.toString().matchAll(/START (\d+) (\S+)/g)].map((m) => ({ pid: m[1], mmap: m[2] }));
      };
      const restarted = restore('out1');
      expect(restarted).toHaveLength(2);
      expect(restarted[1]!.pid).toBe(restarted[0]!.pid);
      expect(restarted[0]!.mmap).toBe('undefined');
      expect(restarted[1]!.mmap).toBe(RESTORE_MALLOC.MALLOC_MMAP_THRESHOLD_);
      expect(restore('out2', { OURO_MALLOC: 'default' })).toEqual([{ pid: expect.any(String), mmap: 'undefined' }]);
      expect(restore('out3', { MALLOC_MMAP_THRESHOLD_: '131072' })).toEqual([{ pid: expect.any(String), mmap: '131072' }]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
