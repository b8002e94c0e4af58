/**
 * Export and import: every object, version, parent and metadata field survives the trip into a
 * fresh database; an export taken while writes go on is one consistent snapshot; an interrupted
 * or damaged import is resumed by importing again; the wrong credential opens nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OuroDB, exportArchive, importArchive } from '../lib/index.js';
import { pseudoRandom, tempDir } from './helpers.js';

const keyA = Buffer.alloc(32, 1);
const keyB = Buffer.alloc(32, 2);
const open = (dir: string, key: Buffer) => OuroDB.open(dir, { key, blockSize: 256 * 1024, chunkSizes: { min: 4096, avg: 16384, max: 65536 } });

async function populate(db: OuroDB): Promise<void> {
  const root = await db.put('root', { meta: { role: 'root' } });
  for (let i = 0; i < 20; i++) {
    await db.put(pseudoRandom(`v${i}`, [0, 10, 5000, 70_000][i % 4]!), { key: `k/${i % 6}`, meta: { i: String(i) }, parent: i % 5 === 0 ? root.hash : undefined });
  }
  const first = (await Array.fromAsync(db.history('k/1'))).at(-1)!.hash;
  await db.put('a concurrent version', { key: 'k/1', prev: [first] });
  await db.delete('k/2');
  await db.purge('k/3');
  await db.put(pseudoRandom('unkeyed', 200_000));
  // Versions whose predecessor has the same parent: the export must still put that parent first
  // (a depth-first order that pushed all dependencies at once got this wrong).
  for (let i = 0; i < 12; i++) {
    const dir = await db.put('', { key: `dir${i}/`, meta: { type: 'directory' } });
    for (let v = 0; v < 3; v++) await db.put(`file ${i} v${v}`, { key: `dir${i}/f`, parent: dir.hash });
  }
}

async function exportTo(db: OuroDB, file: string, key: Buffer): Promise<void> {
  const out = fs.createWriteStream(file);
  const finished = new Promise<void>((resolve, reject) => out.on('finish', () => resolve()).on('error', reject));
  await exportArchive(db, out, { key });
  out.end();
  await finished;
}

/**
 * Objects with hashes replaced by a canonical name, so two databases compare. Hashes are keyed per
 * database, so where they break ties (history order among equal version numbers) order is ignored.
 */
async function canonical(db: OuroDB): Promise<unknown[]> {
  const name = new Map<string, string>();
  const out: unknown[] = [];
  for await (const o of db.objects()) {
    const parts: Uint8Array[] = [];
    for await (const p of o.data()) parts.push(p);
    const value = Buffer.concat(parts).toString('base64');
    const id = `${o.key ?? '-'}|${o.created}|${o.type}|${value.slice(0, 40)}|${JSON.stringify(o.meta)}`;
    name.set(o.hash, id);
    out.push({ id, type: o.type, key: o.key, size: o.size, created: o.created, meta: o.meta, value, parent: o.parent && name.get(o.parent), prev: o.prev.map((p) => name.get(p)).sort() });
  }
  const byKey: Record<string, unknown> = {};
  for await (const e of db.list({ includeDeleted: true })) byKey[e.key] = { heads: e.heads.map((h) => name.get(h)).sort(), deleted: e.deleted, history: (await Array.fromAsync(db.history(e.key))).map((v) => `${v.version} ${name.get(v.hash)}`).sort() };
  return [out.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), byKey];
}

describe('export and import', () => {
  it('carries every object, version, parent and metadata field into a fresh database', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), keyA);
    const b = await open(path.join(work, 'b'), keyB);
    try {
      await populate(a);
      await exportTo(a, path.join(work, 'x.ouro'), keyA);
      const r = await importArchive(b, fs.createReadStream(path.join(work, 'x.ouro')), { key: keyA });
      expect(r.objects).toBe((await a.stats()).objects);
      expect(await canonical(b)).toEqual(await canonical(a));
      expect((await b.heads('k/1')).length).toBe(2);
      expect((await b.check({ readData: true })).problems).toEqual([]);
      // Importing again changes nothing: every record dedups to what is there.
      const before = await b.stats();
      await importArchive(b, fs.createReadStream(path.join(work, 'x.ouro')), { key: keyA });
      expect(await b.stats()).toEqual(before);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('an export taken while writers write is one consistent snapshot', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), keyA);
    const b = await open(path.join(work, 'b'), keyB);
    try {
      await populate(a);
      let stop = false;
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          await a.put(pseudoRandom(`w${i}`, 3000), { key: `w/${i % 7}`, parent: i > 0 ? (await a.head(`w/${(i - 1) % 7}`)) ?? undefined : undefined });
          if (i % 5 === 4) await a.purge(`w/${i % 7}`);
        }
      })();
      await exportTo(a, path.join(work, 'x.ouro'), keyA);
      stop = true;
      await writer;
      // Import resolves every parent and predecessor: it fails if the snapshot were torn.
      const r = await importArchive(b, fs.createReadStream(path.join(work, 'x.ouro')), { key: keyA });
      expect(r.objects).toBeGreaterThan(20);
      expect((await b.check({ readData: true })).problems).toEqual([]);
      for await (const e of b.list()) expect((await b.history(e.key).next()).value!.hash).toBe(e.hash);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('an interrupted or damaged import stops with a typed error and resumes by importing again', async () => {
    const work = tempDir();
    const a = await open(path.join(work, 'a'), keyA);
    const b = await open(path.join(work, 'b'), keyB);
    const c = await open(path.join(work, 'c'), keyB);
    try {
      await populate(a);
      const file = path.join(work, 'x.ouro');
      await exportTo(a, file, keyA);
      const bytes = fs.readFileSync(file);
      fs.writeFileSync(path.join(work, 'cut.ouro'), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      await expect(importArchive(b, fs.createReadStream(path.join(work, 'cut.ouro')), { key: keyA })).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
      const partial = (await b.stats()).objects;
      expect(partial).toBeGreaterThan(0);
      const damaged = Buffer.from(bytes);
      damaged[Math.floor(bytes.length / 2)]! ^= 0x40;
      fs.writeFileSync(path.join(work, 'bad.ouro'), damaged);
      await expect(importArchive(c, fs.createReadStream(path.join(work, 'bad.ouro')), { key: keyA })).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
      await expect(importArchive(c, fs.createReadStream(file), { key: keyB })).rejects.toMatchObject({ code: 'OURO_WRONG_KEY' });
      await expect(importArchive(c, fs.createReadStream(file), { passphrase: 'x' })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
      // Resume: the whole archive, again. The result is the same as one clean import.
      await importArchive(b, fs.createReadStream(file), { key: keyA });
      await importArchive(c, fs.createReadStream(file), { key: keyA });
      expect(await canonical(b)).toEqual(await canonical(a));
      expect(await canonical(c)).toEqual(await canonical(a));
      expect((await b.stats()).objects).toBe((await a.stats()).objects);
    } finally {
      await a.close();
      await b.close();
      await c.close();
    }
  });

  it('the CLI exports with a passphrase and imports into another database', async () => {
    const { spawnSync } = await import('node:child_process');
    const { repoRoot } = await import('./paths.js');
    const work = tempDir();
    const run = (args: string[], pass: string, archivePass?: string) =>
      spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'bin', 'ouro.js'), ...args], { env: { ...process.env, OURO_PASSPHRASE: pass, ...(archivePass ? { OURO_ARCHIVE_PASSPHRASE: archivePass } : {}) }, encoding: 'utf8' });
    const fast = ['--kdf-memory', '256', '--kdf-passes', '1'];
    expect(run(['init', path.join(work, 'a'), ...fast], 'pa').status).toBe(0);
    expect(run(['init', path.join(work, 'b'), ...fast], 'pb').status).toBe(0);
    fs.writeFileSync(path.join(work, 'f'), pseudoRandom('f', 123_456));
    expect(run(['put', path.join(work, 'a'), path.join(work, 'f')], 'pa').status).toBe(0);
    const exp = run(['--json', 'export', path.join(work, 'a'), path.join(work, 'x.ouro')], 'pa', 'archive secret');
    expect(exp.status).toBe(0);
    expect(JSON.parse(exp.stdout)).toMatchObject({ objects: 1, valueBytes: 123_456 });
    expect(fs.readdirSync(work).filter((f) => f.includes('ouro-tmp'))).toEqual([]);
    expect(run(['import', path.join(work, 'b'), path.join(work, 'x.ouro')], 'pb', 'not it').status).toBe(4);
    expect(run(['import', path.join(work, 'b'), path.join(work, 'x.ouro')], 'pb', 'archive secret').status).toBe(0);
    const key = path.join(work, 'f').replace(/^\//, '');
    expect(run(['cat', path.join(work, 'b'), key], 'pb').stdout).toBe(pseudoRandom('f', 123_456).toString('utf8'));
  });
});
