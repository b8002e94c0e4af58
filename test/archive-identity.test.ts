/**
 * Addresses that survive a restore: an archive of format version 2 carries its source's identity,
 * so importArchiveNew (and `ouro import` into a DIR without a database) makes a database in which
 * every hash the source gave names the same value, version, parent and metadata, opened by the
 * source's credentials. Wrong credentials create nothing; an interrupted import is completed by
 * running it again, with the same hashes; an import into another database remaps and says so, and
 * writes the old-to-new map; a version 1 archive (test/fixtures/archive-v1.ouro, frozen) still
 * imports, remapped.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { ARCHIVE_VERSION, OuroDB, exportArchive, importArchive, importArchiveNew } from '../lib/index.js';
import { AeadKey, deriveKey, xchachaOpen, xchachaSeal } from '../lib/crypto.js';
import { CrashableFs } from '../lib/vfs/index.js';
import { FAST_KDF, pseudoRandom, pseudoRandomStream, tempDir } from './helpers.js';
import { repoRoot } from './paths.js';

const keyA = Buffer.alloc(32, 0xa1);
const keyB = Buffer.alloc(32, 0xb2);
const SMALL_CHUNKS = { min: 4096, avg: 16384, max: 65536 };
const open = (dir: string, creds: { key: Buffer } | { passphrase: string }) => OuroDB.open(dir, { ...creds, kdf: FAST_KDF, blockSize: 1 << 20, chunkSizes: SMALL_CHUNKS });
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/** Keys with several versions, two heads, a tombstone, a purge, parents and children, metadata, an empty, small, multi-chunk and > 4 MiB values. */
async function populate(db: OuroDB): Promise<void> {
  const root = await db.put('', { key: 'tree/', meta: { type: 'directory' } });
  for (let i = 0; i < 16; i++) {
    await db.put(pseudoRandom(`v${i}`, [0, 12, 3000, 70_000][i % 4]!), { key: `k/${i % 5}`, meta: { i: String(i) }, ...(i % 3 === 0 ? { parent: root.hash } : {}) });
  }
  const first = (await Array.fromAsync(db.history('k/1'))).at(-1)!.hash;
  await db.put('a concurrent version', { key: 'k/1', prev: [first] });
  await db.delete('k/2');
  await db.put('short-lived', { key: 'purged' });
  await db.purge('purged');
  await db.put(pseudoRandomStream('big', 5 * 1024 * 1024 + 123), { key: 'tree/big.bin', parent: root.hash, meta: { type: 'file' } });
  await db.put(Buffer.from('compressible text, '.repeat(300_000)), { key: 'tree/text', parent: root.hash });
  await db.put(pseudoRandom('unkeyed', 200_000), { meta: { note: 'no key' } });
  const child = await db.put('a child of a child', { parent: (await db.head('k/3'))! });
  await db.put('grandchild', { parent: child.hash });
}

/** Everything a hash stands for in `db`: value digest, stat fields, parent, children; and every key's history and heads. */
async function facts(db: OuroDB): Promise<{ objects: Record<string, unknown>; keys: Record<string, unknown> }> {
  const objects: Record<string, unknown> = {};
  for await (const o of db.objects()) {
    const st = await db.stat(o.hash);
    const children: string[] = [];
    for (let page = await db.children(o.hash); page.length > 0; page = await db.children(o.hash, { after: page.at(-1)! })) children.push(...page);
    objects[o.hash] = { sha: sha(await db.get(o.hash)), type: st.type, size: st.size, created: st.created.getTime(), key: st.key, parent: await db.parent(o.hash), prev: st.prev, meta: st.meta, children };
  }
  const keys: Record<string, unknown> = {};
  for await (const e of db.list({ includeDeleted: true })) keys[e.key] = { heads: e.heads, deleted: e.deleted, history: (await Array.fromAsync(db.history(e.key))).map((v) => `${v.version} ${v.hash}`) };
  return { objects, keys };
}

async function exportTo(db: OuroDB, file: string, creds: { key: Buffer } | { passphrase: string; kdf?: typeof FAST_KDF }) {
  const out = fs.createWriteStream(file);
  const finished = new Promise<void>((resolve, reject) => out.on('finish', () => resolve()).on('error', reject));
  const r = await exportArchive(db, out, creds);
  out.end();
  await finished;
  return r;
}

/** A stream of `file` that fails with an I/O error after `bytes` bytes. */
function breaksAfter(file: string, bytes: number): Readable {
  const data = fs.readFileSync(file);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= bytes) {
        this.destroy(Object.assign(new Error('the disk went away'), { code: 'EIO' }));
        return;
      }
      const piece = data.subarray(sent, Math.min(bytes, sent + 64 * 1024));
      sent += piece.length;
      this.push(piece);
    },
  });
}

/** Decrypts a key-made archive's frames, lets `edit` change each plaintext, and seals them again (for damage an exporter would not make). */
function rewrite(archive: Buffer, key: Buffer, edit: (plain: Buffer, n: number) => Buffer): Buffer {
  const id = archive.subarray(12, 28);
  const aead = new AeadKey(deriveKey(key, archive.subarray(32, 48), 'ourodb/v1/archive'));
  const aad = (n: number, length: number) => {
    const a = Buffer.alloc(28);
    id.copy(a, 0);
    a.writeBigUInt64LE(BigInt(n), 16);
    a.writeUInt32LE(length, 24);
    return a;
  };
  const out: Buffer[] = [archive.subarray(0, 64)];
  for (let at = 64, n = 0; at < archive.length; n++) {
    const length = archive.readUInt32LE(at);
    const nonce = archive.subarray(at + 4, at + 28);
    const plain = edit(Buffer.from(xchachaOpen(aead, nonce, archive.subarray(at + 28, at + 28 + length + 16), aad(n, length))), n);
    const head = Buffer.alloc(28);
    head.writeUInt32LE(plain.length, 0);
    nonce.copy(head, 4);
    out.push(head, xchachaSeal(aead, nonce, plain, aad(n, plain.length)));
    at += 28 + length + 16;
  }
  return Buffer.concat(out);
}

describe('archives that keep their hashes', () => {
  it('a new database from the archive has the source identity: every hash names the same value, history, parent, children and metadata', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), { key: keyA });
    let b: OuroDB | undefined;
    try {
      await populate(a);
      const file = path.join(work, 'x.ouro');
      const exported = await exportTo(a, file, { key: keyA });
      expect(exported.identity).toBe(true);
      expect(fs.readFileSync(file).readUInt16LE(8)).toBe(ARCHIVE_VERSION);
      expect(ARCHIVE_VERSION).toBe(2);
      const source = await facts(a);
      // The new database is opened with the default chunk sizes, not the source's: the chunks come from the archive.
      const r = await importArchiveNew(path.join(work, 'b'), fs.createReadStream(file), { key: keyA });
      b = r.db;
      expect(r).toMatchObject({ created: true, remapped: false, remappedObjects: 0, archiveVersion: 2, sourceDatabaseId: a.databaseId, objects: Object.keys(source.objects).length });
      expect(r.remapReason).toBeUndefined();
      for (const [from, to] of r.hashes) expect(to).toBe(from);
      expect(b.databaseId).toBe(a.databaseId);
      expect(b.descriptor).toEqual(a.descriptor);
      expect(await facts(b)).toEqual(source);
      expect((await b.heads('k/1')).length).toBe(2);
      expect(await b.head('purged')).toBeNull();
      expect((await b.check({ readData: true })).problems).toEqual([]);
      // The source's credential opens it; the result survives a reopen.
      await b.close();
      b = await OuroDB.open(path.join(work, 'b'), { key: keyA, create: false });
      expect(await facts(b)).toEqual(source);
      // New writes to both give equal hashes: they share the keys.
      const same = await Promise.all([a.put('written after', { key: 'later', created: 1 }), b.put('written after', { key: 'later', created: 1 })]);
      expect(same[0].hash).toBe(same[1].hash);
      // Importing again, into itself or into the source, changes nothing and keeps hashes.
      const before = await b.stats();
      const again = await importArchive(b, fs.createReadStream(file), { key: keyA });
      expect(again).toMatchObject({ remapped: false, remappedObjects: 0 });
      expect(await b.stats()).toEqual(before);
      const beforeA = await a.stats();
      expect(await importArchive(a, fs.createReadStream(file), { key: keyA })).toMatchObject({ remapped: false });
      expect(await a.stats()).toEqual(beforeA);
    } finally {
      await a.close();
      await b?.close();
    }
  });

  it('wrong credentials, an unknown version or a bad header create nothing', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), { passphrase: 'source secret' });
    try {
      await a.put('v', { key: 'k' });
      const file = path.join(work, 'x.ouro');
      expect((await exportTo(a, file, { passphrase: 'source secret', kdf: FAST_KDF })).identity).toBe(true);
      const target = path.join(work, 'new', 'db');
      await expect(importArchiveNew(target, fs.createReadStream(file), { passphrase: 'not it' })).rejects.toMatchObject({ code: 'OURO_WRONG_KEY' });
      // The archive opens, but the database's credential does not unlock the source's key slots.
      await expect(importArchiveNew(target, fs.createReadStream(file), { passphrase: 'not it', archive: { passphrase: 'source secret' } })).rejects.toMatchObject({ code: 'OURO_WRONG_KEY' });
      await expect(importArchiveNew(target, fs.createReadStream(file), { key: keyA })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      const v3 = fs.readFileSync(file);
      v3.writeUInt16LE(3, 8);
      v3.writeUInt32LE(zlib.crc32(v3.subarray(0, 60)), 60);
      await expect(importArchiveNew(target, Readable.from([v3]), { passphrase: 'source secret' })).rejects.toMatchObject({ code: 'OURO_UNSUPPORTED_VERSION' });
      await expect(importArchiveNew(target, Readable.from([Buffer.from('not an archive')]), { passphrase: 'source secret' })).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
      expect(fs.existsSync(path.join(work, 'new'))).toBe(false);
      const { db } = await importArchiveNew(target, fs.createReadStream(file), { passphrase: 'source secret' });
      expect(Buffer.from(await db.getByKey('k')).toString()).toBe('v');
      expect(await db.head('k')).toBe(await a.head('k'));
      await db.close();
    } finally {
      await a.close();
    }
  });

  it('an import cut off by a failing input leaves a database that running it again completes, with every hash the same', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), { key: keyA });
    try {
      await populate(a);
      const file = path.join(work, 'x.ouro');
      await exportTo(a, file, { key: keyA });
      const source = await facts(a);
      const target = path.join(work, 'b');
      const size = fs.statSync(file).size;
      await expect(importArchiveNew(target, breaksAfter(file, Math.floor(size * 0.7)), { key: keyA })).rejects.toThrow('the disk went away');
      // What is there is a prefix of the archive, each object whole, under the source's hashes.
      const partial = await OuroDB.open(target, { key: keyA, create: false });
      const had = await facts(partial);
      expect(Object.keys(had.objects).length).toBeGreaterThan(0);
      expect(Object.keys(had.objects).length).toBeLessThan(Object.keys(source.objects).length);
      for (const [hash, o] of Object.entries(had.objects)) expect((o as { sha: string }).sha).toBe((source.objects[hash] as { sha: string }).sha);
      await partial.close();
      // A truncated file stops it too, typed.
      fs.writeFileSync(path.join(work, 'cut.ouro'), fs.readFileSync(file).subarray(0, Math.floor(size * 0.9)));
      await expect(importArchiveNew(target, fs.createReadStream(path.join(work, 'cut.ouro')), { key: keyA })).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
      const r = await importArchiveNew(target, fs.createReadStream(file), { key: keyA });
      try {
        expect(r).toMatchObject({ created: false, remapped: false, remappedObjects: 0 });
        expect(await facts(r.db)).toEqual(source);
        expect((await r.db.check({ readData: true })).problems).toEqual([]);
      } finally {
        await r.db.close();
      }
      // A database of another identity in the directory is refused, not imported into.
      const other = path.join(work, 'other');
      await (await open(other, { key: keyA })).close();
      await expect(importArchiveNew(other, fs.createReadStream(file), { key: keyA })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await a.close();
    }
  });

  it('a crash at any file operation of importArchiveNew leaves no database, or one that the same call completes with every hash', async () => {
    const work = tempDir();
    const small = { blockSize: 8192, chunkSizes: { min: 4096, avg: 8192, max: 16384 } };
    const a = await OuroDB.open(path.join(work, 'a'), { key: keyA, ...small });
    const file = path.join(work, 'x.ouro');
    let source: Awaited<ReturnType<typeof facts>>;
    try {
      const root = await a.put('', { key: 'd/' });
      await a.put(pseudoRandom('c1', 20_000), { key: 'd/f', parent: root.hash, meta: { v: '1' } });
      await a.put(pseudoRandom('c2', 9_000), { key: 'd/f', parent: root.hash, meta: { v: '2' } });
      await a.put('gone soon', { key: 'g' });
      await a.delete('g');
      await a.put(pseudoRandom('c3', 300), { parent: root.hash });
      await exportTo(a, file, { key: keyA });
      source = await facts(a);
    } finally {
      await a.close();
    }
    const crashed = new Error('crashed');
    const outcomes = { nothing: 0, partial: 0 };
    for (let k = 0; ; k++) {
      const dir = path.join(tempDir(), 'db');
      const crashFs = new CrashableFs({ seed: k + 1, crashAfter: k });
      // The import and the close that seals its blocks: a crash may come in either.
      const run = importArchiveNew(dir, fs.createReadStream(file), { key: keyA, fs: crashFs, ...small }).then(async (r) => {
        await r.db.close();
        return true;
      });
      run.catch(() => {});
      let done = false;
      try {
        done = await Promise.race([run, crashFs.crashed.then(() => Promise.reject(crashed))]);
      } catch (err) {
        if (!crashFs.isCrashed) throw err;
      }
      if (done) {
        expect(k).toBeGreaterThan(10);
        break;
      }
      const after = crashFs.afterCrash();
      outcomes[(await after.exists(path.join(dir, 'OURODB.json'))) ? 'partial' : 'nothing']++;
      // The crashed handle lets go of LevelDB's lock asynchronously, as the OS would.
      let r: Awaited<ReturnType<typeof importArchiveNew>> | undefined;
      for (let attempt = 0; !r; attempt++) {
        try {
          r = await importArchiveNew(dir, fs.createReadStream(file), { key: keyA, fs: after, ...small });
        } catch (err) {
          if ((err as { code?: string }).code !== 'OURO_LOCKED' || attempt > 200) throw new Error(`crash after ${k} operations: ${String(err)}`, { cause: err });
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      try {
        expect(r.remapped, `crash after ${k}`).toBe(false);
        expect(await facts(r.db), `crash after ${k}`).toEqual(source);
        expect((await r.db.check({ readData: true })).problems, `crash after ${k}`).toEqual([]);
      } finally {
        await r.db.close();
      }
    }
    expect(outcomes.nothing).toBeGreaterThan(0);
    expect(outcomes.partial).toBeGreaterThan(5);
  });

  it('into a database of another identity: remapped, said so, and the map it writes is right', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), { key: keyA });
    const c = await open(path.join(work, 'c'), { key: keyB });
    try {
      await populate(a);
      await c.put('already here', { key: 'k/0' });
      const file = path.join(work, 'x.ouro');
      await exportTo(a, file, { key: keyA });
      const source = await facts(a);
      const lines: string[] = [];
      const map = new Writable({
        write(chunk: Buffer, _e, cb) {
          lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
          cb();
        },
      });
      const r = await importArchive(c, fs.createReadStream(file), { key: keyA }, { map });
      const n = Object.keys(source.objects).length;
      expect(r).toMatchObject({ remapped: true, remapReason: 'other-database', remappedObjects: n, objects: n, sourceDatabaseId: a.databaseId });
      const entries = lines.map((l) => JSON.parse(l) as { old: string; new: string });
      expect(entries.length).toBe(n);
      expect(new Set(entries.map((e) => e.old))).toEqual(new Set(Object.keys(source.objects)));
      const to = new Map(entries.map((e) => [e.old, e.new]));
      expect(to).toEqual(r.hashes);
      for (const [old, o] of Object.entries(source.objects) as [string, { sha: string; type: string; size: number; created: number; key: string | null; parent: string | null; prev: string[]; meta: Record<string, string> }][]) {
        const now = to.get(old)!;
        expect(now).not.toBe(old);
        expect(sha(await c.get(now))).toBe(o.sha);
        const st = await c.stat(now);
        expect({ type: st.type, size: st.size, created: st.created.getTime(), key: st.key, meta: st.meta, parent: st.parent, prev: [...st.prev].sort() }).toEqual({ type: o.type, size: o.size, created: o.created, key: o.key, meta: o.meta, parent: o.parent && to.get(o.parent), prev: o.prev.map((p) => to.get(p)).sort() });
      }
      // The key the target had already keeps its own version beside the imported ones.
      expect((await Array.fromAsync(c.history('k/0'))).length).toBe((source.keys['k/0'] as { history: string[] }).history.length + 1);
    } finally {
      await a.close();
      await c.close();
    }
  });

  it('an archive made under credentials of its own carries no identity, and imports remapped', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), { key: keyA });
    try {
      await a.put(pseudoRandom('x', 100_000), { key: 'x' });
      const file = path.join(work, 'x.ouro');
      expect((await exportTo(a, file, { key: keyB })).identity).toBe(false);
      const r = await importArchiveNew(path.join(work, 'b'), fs.createReadStream(file), { key: keyA, archive: { key: keyB } });
      try {
        expect(r).toMatchObject({ created: true, remapped: true, remapReason: 'no-identity', sourceDatabaseId: null, remappedObjects: 1 });
        expect(r.db.databaseId).not.toBe(a.databaseId);
        expect(sha(await r.db.getByKey('x'))).toBe(sha(pseudoRandom('x', 100_000)));
      } finally {
        await r.db.close();
      }
    } finally {
      await a.close();
    }
  });

  it('an identity archive whose chunks do not make its hashes fails loudly (CorruptionError)', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), { key: keyA });
    try {
      await a.put(pseudoRandom('y', 300_000), { key: 'y' });
      const file = path.join(work, 'x.ouro');
      await exportTo(a, file, { key: keyA });
      // Move one byte from the first chunk to the second: the same value, cut otherwise.
      const packr = new Packr({ useRecords: false, moreTypes: false });
      const bad = rewrite(fs.readFileSync(file), keyA, (plain) => {
        if (plain[0] !== 1) return plain;
        const o = packr.unpack(plain.subarray(1)) as unknown[];
        const sizes = o[8] as number[];
        sizes[0]! -= 1;
        sizes[1]! += 1;
        return Buffer.concat([plain.subarray(0, 1), packr.pack(o)]);
      });
      const target = path.join(work, 'b');
      await expect(importArchiveNew(target, Readable.from([bad]), { key: keyA })).rejects.toMatchObject({ code: 'OURO_CORRUPTION', message: expect.stringContaining('expectHash') });
      // Nothing of another hash was written; the archive as the source cut it completes the import.
      const r = await importArchiveNew(target, fs.createReadStream(file), { key: keyA });
      expect(await r.db.head('y')).toBe(await a.head('y'));
      expect((await Array.fromAsync(r.db.history('y'))).length).toBe(1);
      expect((await r.db.stats()).objects).toBe(1);
      await r.db.close();
    } finally {
      await a.close();
    }
  });
});

describe('archives of format version 1 (frozen)', () => {
  const fixture = path.join(repoRoot, 'test', 'fixtures', 'archive-v1.ouro');
  const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test', 'fixtures', 'archive-v1.json'), 'utf8')) as {
    key: string;
    objects: { hash: string; type: string; key: string | null; parent: string | null; prev: string[]; created: number; meta: Record<string, string>; size: number; sha256: string }[];
    heads: Record<string, string[]>;
  };
  const key = Buffer.from(manifest.key, 'hex');

  async function expectImported(db: OuroDB, hashes: Map<string, string>): Promise<void> {
    expect(hashes.size).toBe(manifest.objects.length);
    for (const o of manifest.objects) {
      const now = hashes.get(o.hash)!;
      const st = await db.stat(now);
      expect(sha(await db.get(now))).toBe(o.sha256);
      expect({ type: st.type, size: st.size, created: st.created.getTime(), key: st.key, meta: st.meta, parent: st.parent, prev: [...st.prev].sort() }).toEqual({ type: o.type, size: o.size, created: o.created, key: o.key, meta: o.meta, parent: o.parent && hashes.get(o.parent), prev: o.prev.map((p) => hashes.get(p)).sort() });
    }
    for (const [k, heads] of Object.entries(manifest.heads)) expect([...(await db.heads(k))].sort()).toEqual(heads.map((h) => hashes.get(h)).sort());
  }

  it('imports into an existing database and into a new one, remapped', async () => {
    expect(fs.readFileSync(fixture).readUInt16LE(8)).toBe(1);
    const work = tempDir();
    const db = await OuroDB.open(path.join(work, 'a'), { key });
    try {
      const r = await importArchive(db, fs.createReadStream(fixture), { key });
      expect(r).toMatchObject({ archiveVersion: 1, remapped: true, remapReason: 'no-identity', sourceDatabaseId: null, remappedObjects: manifest.objects.length });
      await expectImported(db, r.hashes);
    } finally {
      await db.close();
    }
    const input = new PassThrough();
    fs.createReadStream(fixture).pipe(input);
    const made = await importArchiveNew(path.join(work, 'new'), input, { key, kdf: FAST_KDF });
    try {
      expect(made).toMatchObject({ created: true, archiveVersion: 1, remapped: true, remapReason: 'no-identity' });
      await expectImported(made.db, made.hashes);
    } finally {
      await made.db.close();
    }
  });
});

describe('ouro import', () => {
  const OURO = path.join(repoRoot, 'dist', 'bin', 'ouro.js');
  const ouro = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, [OURO, ...args], { env: { ...process.env, OURO_PASSPHRASE: '', OURO_ARCHIVE_PASSPHRASE: '', ...env }, encoding: 'utf8', maxBuffer: 64 << 20 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
  };

  it('into a DIR that does not exist creates the source database; into another database remaps and writes --map', () => {
    const work = tempDir();
    const fast = ['--kdf-memory', '256', '--kdf-passes', '1'];
    const a = path.join(work, 'a');
    expect(ouro(['init', a, ...fast], { OURO_PASSPHRASE: 'pa' }).code).toBe(0);
    fs.writeFileSync(path.join(work, 'big'), pseudoRandom('big', 1_500_000));
    fs.writeFileSync(path.join(work, 'small'), 'small file\n');
    expect(ouro(['put', a, path.join(work, 'big'), path.join(work, 'small')], { OURO_PASSPHRASE: 'pa' }).code).toBe(0);
    fs.writeFileSync(path.join(work, 'small'), 'small file, edited\n');
    expect(ouro(['put', a, path.join(work, 'small')], { OURO_PASSPHRASE: 'pa' }).code).toBe(0);
    const file = path.join(work, 'x.ouro');
    const exp = ouro(['--json', 'export', a, file], { OURO_PASSPHRASE: 'pa' });
    expect(exp.code).toBe(0);
    expect(exp.json()).toMatchObject({ identity: true });
    const lsA = ouro(['--json', 'ls', a], { OURO_PASSPHRASE: 'pa' }).json() as { key: string; hash: string }[];

    const fresh = path.join(work, 'restored');
    const wrong = ouro(['import', fresh, file], { OURO_PASSPHRASE: 'not it' });
    expect(wrong.code).toBe(4);
    expect(fs.existsSync(fresh)).toBe(false);
    const imp = ouro(['--json', 'import', fresh, file], { OURO_PASSPHRASE: 'pa' });
    expect(imp.code).toBe(0);
    expect(imp.json()).toMatchObject({ created: true, remapped: false, remappedObjects: 0, archiveVersion: 2 });
    expect(ouro(['--json', 'ls', fresh], { OURO_PASSPHRASE: 'pa' }).json()).toEqual(lsA);
    for (const e of lsA) {
      expect(ouro(['--json', 'log', fresh, e.key], { OURO_PASSPHRASE: 'pa' }).json()).toEqual(ouro(['--json', 'log', a, e.key], { OURO_PASSPHRASE: 'pa' }).json());
      expect(ouro(['cat', fresh, e.hash], { OURO_PASSPHRASE: 'pa' }).stdout).toBe(ouro(['cat', a, e.hash], { OURO_PASSPHRASE: 'pa' }).stdout);
    }
    // Again into the restored one: nothing changes, hashes kept (human output says so).
    const again = ouro(['import', fresh, file], { OURO_PASSPHRASE: 'pa' });
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('hashes kept');

    const b = path.join(work, 'b');
    expect(ouro(['init', b, ...fast], { OURO_PASSPHRASE: 'pb' }).code).toBe(0);
    const mapFile = path.join(work, 'map.jsonl');
    const other = ouro(['import', b, file, '--map', mapFile], { OURO_PASSPHRASE: 'pb', OURO_ARCHIVE_PASSPHRASE: 'pa' });
    expect(other.code).toBe(0);
    expect(other.stdout).toMatch(/hashes remapped: 3 objects have new hashes, because the archive is of another database/);
    const map = fs.readFileSync(mapFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { old: string; new: string });
    expect(map.length).toBe(3);
    for (const e of lsA) {
      const to = map.find((m) => m.old === e.hash)!.new;
      expect(to).not.toBe(e.hash);
      expect(ouro(['cat', b, to], { OURO_PASSPHRASE: 'pb' }).stdout).toBe(ouro(['cat', a, e.hash], { OURO_PASSPHRASE: 'pa' }).stdout);
    }
    expect(fs.readdirSync(work).filter((f) => f.includes('ouro-tmp'))).toEqual([]);
  });
});
