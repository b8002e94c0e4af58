/**
 * `ouro put`: files and whole trees. Each file is stored under its path as key (relative to the
 * working directory when inside it, else the absolute path without its leading '/', always with
 * '/' separators) and with its directory as parent. A directory is an object too, under its path
 * plus '/', whose value is the JSON list of its entry names and whose metadata says
 * `type: directory`; it is stored before its entries, so their parent exists.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { OuroDB } from '../../lib/index.js';
import { type GlobalOptions, Progress, UsageError } from './support.js';

export interface PutItem {
  key: string;
  hash: string;
  size: number;
  type: 'file' | 'directory' | 'stdin';
}

export interface PutReport {
  items: PutItem[];
  files: number;
  directories: number;
  bytes: number;
  skipped: Array<{ path: string; reason: string }>;
  failed: Array<{ path: string; error: string; code?: string }>;
}

/** The key a path is stored under. */
export function keyForPath(p: string): string {
  const abs = path.resolve(p);
  const rel = path.relative(process.cwd(), abs);
  const inside = rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  const key = (inside ? rel : abs.replace(/^[/\\]+/, '')).split(path.sep).join('/');
  return key === '' ? '/' : key;
}

const CONCURRENCY = 16;

export async function putPaths(db: OuroDB, paths: string[], g: GlobalOptions, stdinKey?: string): Promise<PutReport> {
  const report: PutReport = { items: [], files: 0, directories: 0, bytes: 0, skipped: [], failed: [] };
  const progress = new Progress('put', g);
  const tick = () => progress.update(report.bytes, report.items.length);
  const fail = (p: string, err: unknown) => report.failed.push({ path: p, error: err instanceof Error ? err.message : String(err), ...((err as { code?: string }).code ? { code: (err as { code: string }).code } : {}) });

  const putFile = async (file: string, parent: string | undefined) => {
    const key = keyForPath(file);
    try {
      const r = await db.put(fs.createReadStream(file), { key, meta: { type: 'file' }, ...(parent ? { parent } : {}) });
      report.items.push({ key, hash: r.hash, size: r.size, type: 'file' });
      report.files++;
      report.bytes += r.size;
    } catch (err) {
      fail(file, err);
    }
    tick();
  };

  const putDir = async (dir: string, parent: string | undefined): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = (await fs.promises.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (err) {
      fail(dir, err);
      return;
    }
    const key = `${keyForPath(dir).replace(/\/$/, '')}/`;
    let hash: string;
    try {
      const listing = JSON.stringify(entries.filter((e) => e.isFile() || e.isDirectory()).map((e) => (e.isDirectory() ? `${e.name}/` : e.name)));
      hash = (await db.put(listing, { key, meta: { type: 'directory' }, ...(parent ? { parent } : {}) })).hash;
    } catch (err) {
      fail(dir, err);
      return;
    }
    report.items.push({ key, hash, size: 0, type: 'directory' });
    report.directories++;
    const files = entries.filter((e) => e.isFile()).map((e) => path.join(dir, e.name));
    for (let i = 0; i < files.length; i += CONCURRENCY) await Promise.all(files.slice(i, i + CONCURRENCY).map((f) => putFile(f, hash)));
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await putDir(p, hash);
      else if (!e.isFile()) report.skipped.push({ path: p, reason: e.isSymbolicLink() ? 'symbolic link' : 'not a regular file' });
    }
  };

  for (const p of paths) {
    if (p === '-') {
      if (!stdinKey) throw new UsageError('putting stdin (-) needs --key');
      const r = await db.put(process.stdin, { key: stdinKey, meta: { type: 'file' } });
      report.items.push({ key: stdinKey, hash: r.hash, size: r.size, type: 'stdin' });
      report.files++;
      report.bytes += r.size;
      continue;
    }
    let st: fs.Stats;
    try {
      st = await fs.promises.lstat(p);
    } catch (err) {
      fail(p, err);
      continue;
    }
    if (st.isDirectory()) await putDir(p, undefined);
    else if (st.isFile()) await putFile(p, undefined);
    else report.skipped.push({ path: p, reason: st.isSymbolicLink() ? 'symbolic link' : 'not a regular file' });
  }
  progress.done();
  return report;
}

/**
 * Restores every file whose key starts with `prefix` (newest heads; deleted keys and directory
 * objects skipped) into `target`, at its key's path below the prefix. Each file is written to a
 * temporary name and renamed; files are not fsynced one by one (a restore is redone, not resumed).
 */
export async function restoreTree(db: OuroDB, prefix: string, target: string, g: GlobalOptions): Promise<{ files: number; bytes: number }> {
  const progress = new Progress('restore', g);
  let files = 0;
  let bytes = 0;
  const root = path.resolve(target);
  const pending: Promise<void>[] = [];
  const restoreOne = async (key: string, hash: string) => {
    const rel = key.slice(prefix.length);
    const dest = path.resolve(root, rel);
    if (dest !== root && !dest.startsWith(root + path.sep)) throw new UsageError(`key ${key} would restore outside ${target}`);
    await fs.promises.mkdir(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.ouro-tmp-${process.pid}`;
    const out = fs.createWriteStream(tmp);
    const { pipeline } = await import('node:stream/promises');
    await pipeline(db.stream(hash), out);
    await fs.promises.rename(tmp, dest);
    files++;
    bytes += out.bytesWritten;
    progress.update(bytes, files);
  };
  for await (const e of db.list({ prefix })) {
    if (e.key.endsWith('/')) continue;
    pending.push(restoreOne(e.key, e.hash));
    if (pending.length >= CONCURRENCY) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  progress.done();
  return { files, bytes };
}
