/**
 * `ouro put`: files and whole trees. Each file is stored under its path as key (relative to the
 * working directory when inside it, else the absolute path without its leading '/', always with
 * '/' separators) and with its directory as parent. A directory is an object too, under its path
 * plus '/', with an empty value and metadata `type: directory`, stored before its entries so
 * that their parent exists. It stays the same object as long as its own parent does: a listing
 * that changes (a file added) must not give every file below it a new parent, hence a new version.
 * `children(dir)` lists every version of every file put in it; `ls DIR dir/` lists what is there now.
 * A file is stored with metadata `type: file` and `mtime` (ms). The stat taken just before it is read (size,
 * mtime, ctime, inode) and its parent are kept as the key's hint (PutOptions.hint: with the head,
 * outside the history). A file whose stat and parent equal its key's hint is taken as unchanged
 * without being read, as restic and borg decide by default, and without reading the head's record
 * either. Size and mtime alone are not enough: tar, `cp -p` and `rsync -a` restore mtimes, and npm
 * stamps every file of a package with the same one, so a new release's file of the same size
 * would be taken as the old one and never stored. The ctime cannot be set back by a user, and a
 * replaced file has a new inode. A file read but equal to its head in bytes, mtime and parent gets
 * no new version (put's ifChanged), but its hint is renewed, so the next backup skips it unread.
 * (Until 2026-11-23 the ctime and inode were in the version's metadata, and a file found equal
 * kept its head's old ones: a tree extracted afresh was read in full on every later backup.
 * Those entries are still left out of the comparison.) A key without a hint (put by an older
 * `ouro put`, or after an index rebuild) is read and compared once. --always writes every file
 * anew. Putting a tree again therefore stores only what changed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
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
  /** Files whose content, metadata and parent equal their key's head: no new version written. */
  unchanged: number;
  /** Files whose contents were read (the others were found unchanged by their stat alone). */
  read: number;
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

/** Files up to this size are read whole (one exact-size buffer); larger ones stream. */
const READ_WHOLE_MAX_BYTES = 4 << 20;

/**
 * Files up to this size are read synchronously. A source tree is mostly files of a few KiB, and
 * for those the thread pool's round trips cost more than the reads: reading the 4,782 files of
 * one date-fns version (22 MB) took 82-93 ms with open/fstat/read/close on this thread against
 * 229-332 ms through the callback API with 64 reads in flight (2-3x the CPU too), page cache
 * warm. With the cache dropped the two were alike (404-515 vs 296-420 ms, two runs each): on
 * this machine's disk, overlapping small reads buys little. Larger files keep the asynchronous
 * path, where reads in flight do overlap with sealing.
 */
const SYNC_READ_MAX_BYTES = 64 * 1024;

/**
 * A file's contents for put, with its stat. Small files are read whole, synchronously (above);
 * larger ones up to READ_WHOLE_MAX_BYTES whole, into one buffer of their size, through the
 * callback API on the descriptor (about half the CPU of FileHandle on small files); larger ones
 * stream, so memory stays bounded. `known`: the stat putFile took of the path just before (for
 * its hint), used instead of a second one of the descriptor. Should the file change or be
 * replaced in between, the hint describes the file as it was, which its next stat will not
 * match: the next backup reads it again, never skips it.
 */
function fileValue(file: string, known?: fs.Stats): Promise<{ value: Buffer | AsyncIterable<Buffer>; st: fs.Stats }> {
  let fd: number;
  let st: fs.Stats;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    return Promise.reject(err);
  }
  try {
    st = known ?? fs.fstatSync(fd);
    if (st.size <= SYNC_READ_MAX_BYTES) {
      const buf = Buffer.allocUnsafe(st.size);
      let at = 0;
      // A file that shrank while being read: keep what it has now, as a read of it would.
      for (let n; at < buf.length && (n = fs.readSync(fd, buf, at, buf.length - at, at)) > 0; ) at += n;
      fs.closeSync(fd);
      return Promise.resolve({ value: at === buf.length ? buf : buf.subarray(0, at), st });
    }
  } catch (err) {
    fs.close(fd, () => {});
    return Promise.reject(err);
  }
  if (st.size > READ_WHOLE_MAX_BYTES) return Promise.resolve({ value: readReusing(fd), st }); // closes fd at its end
  return new Promise((resolve, reject) => {
    const buf = Buffer.allocUnsafe(st.size);
    const fail = (e: Error) => fs.close(fd, () => reject(e));
    const readFrom = (at: number): void => {
      if (at === buf.length) return fs.close(fd, (err) => (err ? reject(err) : resolve({ value: buf, st })));
      fs.read(fd, buf, at, buf.length - at, at, (err, n) => {
        if (err) return fail(err);
        if (n === 0) return fs.close(fd, () => resolve({ value: buf.subarray(0, at), st }));
        readFrom(at + n);
      });
    };
    readFrom(0);
  });
}

/** Bytes asked for per read of a streamed file: readReusing's one buffer. */
const STREAM_READ_BYTES = 1 << 20;

/**
 * A large file's bytes for put, read into one buffer that every read reuses: each piece yielded
 * is valid until the next one is asked for, which is how db.put's chunker consumes a stream (it
 * copies each piece into its window before asking for the next). fs.createReadStream allocated a
 * fresh 64 KiB buffer per read instead, 16,384 per GiB: garbage that drove ~75 full collections
 * of the main thread in a 1 GiB `ouro put` and, waiting for them, tens of MiB of RSS
 * (docs/performance.md, "Cost per byte"). Closes `fd` when done, failed or abandoned.
 */
export async function* readReusing(fd: number): AsyncGenerator<Buffer> {
  const buf = Buffer.allocUnsafeSlow(STREAM_READ_BYTES);
  try {
    for (let at = 0; ; ) {
      const n = await new Promise<number>((resolve, reject) => fs.read(fd, buf, 0, buf.length, at, (err, got) => (err ? reject(err) : resolve(got))));
      if (n === 0) return;
      at += n;
      yield buf.subarray(0, n);
    }
  } finally {
    await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
  }
}

/**
 * Metadata entries an older `ouro put` recorded in each version (now in the key's hint), left out
 * when a file read is compared with its head, so that a head carrying them is still found equal.
 */
const OLD_STAT_META = ['ctime', 'ino'];

/** A file's metadata as stored: what it is and its mtime (ms, truncated). */
function fileMeta(st: fs.Stats): Record<string, string> {
  return { type: 'file', mtime: String(Math.trunc(st.mtimeMs)) };
}

/**
 * The key hint of a file (PutOptions.hint): layout 1, then its size, mtime and ctime (ms,
 * truncated) and inode as float64 LE (the numbers fs.Stats gives), then its parent's hash
 * (absent for none). A file is unchanged unread exactly when its hint now matches its head's.
 * (JSON of the same cost ~7 us a file in the profile.)
 */
function statHint(st: fs.Stats, parent: string | undefined): Buffer {
  const b = Buffer.allocUnsafe(33 + (parent ? 32 : 0));
  b[0] = 1;
  b.writeDoubleLE(st.size, 1);
  b.writeDoubleLE(Math.trunc(st.mtimeMs), 9);
  b.writeDoubleLE(Math.trunc(st.ctimeMs), 17);
  b.writeDoubleLE(st.ino, 25);
  if (parent) b.write(parent, 33, 'hex');
  return b;
}

/**
 * The hint of every directory object. A directory is put on every run (it is never skipped by
 * its stat: its object has no contents to change), and what the hint buys is the content tag its
 * hint row keeps: an unchanged directory is told equal to its head without reading the head's
 * record. Without one, each directory of a tree put again read and decrypted the pack holding its
 * record: 197 directories of a date-fns version cost 33 ms of the main thread in that read.
 */
const DIRECTORY_HINT = Buffer.from([2]);

/** Puts in flight across the whole tree: enough to fill group commits, bounded for memory. */
const PUTS_IN_FLIGHT = 64;

/** Directories walked at once by `ouro put` of a tree (see walkDir). */
const DIRS_IN_FLIGHT = 8;

/** A directory for the walk: its path, its parent directory's object hash and its key. */
interface DirJob {
  dir: string;
  parent: string | undefined;
  key: string;
}

/** Lets at most `limit` tasks run at once; `run` waits for a free slot before starting one. */
class Limiter {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  readonly #running = new Set<Promise<void>>();
  constructor(limit: number) {
    this.#free = limit;
  }
  async run(task: () => Promise<void>): Promise<void> {
    if (this.#free === 0) await new Promise<void>((r) => this.#waiting.push(r));
    else this.#free--;
    const p = task().finally(() => {
      this.#running.delete(p);
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    });
    this.#running.add(p);
  }
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all([...this.#running]);
  }
}

export async function putPaths(db: OuroDB, paths: string[], g: GlobalOptions, opts: { stdinKey?: string | undefined; always?: boolean } = {}): Promise<PutReport> {
  const report: PutReport = { items: [], files: 0, directories: 0, bytes: 0, unchanged: 0, read: 0, skipped: [], failed: [] };
  const progress = new Progress('put', g);
  const tick = () => progress.update(report.bytes, report.items.length);
  const fail = (p: string, err: unknown) => report.failed.push({ path: p, error: err instanceof Error ? err.message : String(err), ...((err as { code?: string }).code ? { code: (err as { code: string }).code } : {}) });
  const ifChanged = opts.always ? {} : { ifChanged: { ignoreMeta: OLD_STAT_META } };
  const limiter = new Limiter(PUTS_IN_FLIGHT);
  // Each put returns once its bytes are written, not synced: the tree is made durable as a whole
  // by the flush at the end, before anything is reported stored (the command's promise, as a
  // backup tool's snapshot is). Waiting for each group commit's fsync kept 64 puts waiting on the
  // disk instead of on the CPU: a version of the tree of new files left its main thread idle for a
  // quarter of the run (385-506 ms of 1.6-2.0 s in its profile).
  const relaxed = { durability: 'relaxed' as const };

  // `key`: given by the walk for what it finds (its directory's key and the name: resolving each
  // path again cost ~8 us a file), else derived from the path.
  const putFile = async (file: string, parent: string | undefined, key = keyForPath(file)) => {
    try {
      let r: { hash: string; size: number; unchanged?: boolean };
      if (opts.always) {
        const { value, st } = await fileValue(file);
        report.read++;
        r = await db.put(value, { key, meta: fileMeta(st), hint: statHint(st, parent), ...relaxed, ...(parent ? { parent } : {}) });
      } else {
        // Same size, mtime, ctime, inode and parent as when the head was put or last found
        // equal: unchanged, not even read (as restic and borg decide; see the top of this file),
        // and its record not read either. A synchronous stat: the walk has just read this
        // directory, so the inode is almost always cached and the call takes a few microseconds,
        // where an fs.stat through the thread pool cost ~25 us of this thread's time per file.
        // putHinted looks the key's heads and hint row up once for the check and the put.
        const seen = fs.statSync(file);
        const meta = fileMeta(seen);
        const done = await db.putHinted(
          async () => {
            const { value } = await fileValue(file, seen);
            report.read++;
            return value;
          },
          { key, meta, hint: statHint(seen, parent), ...ifChanged, ...relaxed, ...(parent ? { parent } : {}) },
        );
        if (!done.read) {
          report.items.push({ key, hash: done.hash, size: seen.size, type: 'file' });
          report.files++;
          report.bytes += seen.size;
          report.unchanged++;
          tick();
          return;
        }
        r = done;
      }
      report.items.push({ key, hash: r.hash, size: r.size, type: 'file' });
      report.files++;
      report.bytes += r.size;
      if (r.unchanged) report.unchanged++;
    } catch (err) {
      fail(file, err);
    }
    tick();
  };

  // A directory's object is put before its entries (their parent must exist). Its files then go
  // through the shared limiter, and its subdirectories onto a stack that up to DIRS_IN_FLIGHT
  // walks take from at once: each directory's put waits for its record to be written (a group
  // commit's turn), and one walk at a time spent most of its time in those waits, 197 of them in
  // a date-fns version, with the files already found all stored. A stack, not a queue: the walk
  // stays close to depth first, so a directory's files land in neighbouring packs, which a
  // restore (in key order) reads together.
  const walkDir = async (job: DirJob, found: (jobs: DirJob[]) => void): Promise<void> => {
    const { dir, parent, key } = job;
    let entries: fs.Dirent[];
    try {
      entries = (await fs.promises.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (err) {
      fail(dir, err);
      return;
    }
    // The keys of its entries: this key and their names ('/' is the root's key, and its entries'
    // keys have no leading '/', as keyForPath gives them).
    const inside = key === '/' ? '' : key;
    let hash: string;
    try {
      hash = (await db.put('', { key, meta: { type: 'directory' }, hint: DIRECTORY_HINT, ...ifChanged, ...relaxed, ...(parent ? { parent } : {}) })).hash;
    } catch (err) {
      fail(dir, err);
      return;
    }
    report.items.push({ key, hash, size: 0, type: 'directory' });
    report.directories++;
    const subdirs: DirJob[] = [];
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) subdirs.push({ dir: p, parent: hash, key: `${inside}${e.name}/` });
      else if (!e.isFile()) report.skipped.push({ path: p, reason: e.isSymbolicLink() ? 'symbolic link' : 'not a regular file' });
    }
    found(subdirs);
    for (const e of entries) if (e.isFile()) await limiter.run(() => putFile(path.join(dir, e.name), hash, inside + e.name));
  };
  const putDir = (root: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const stack: DirJob[] = [{ dir: root, parent: undefined, key: `${keyForPath(root).replace(/\/$/, '')}/` }];
      let walking = 0;
      const pump = (): void => {
        while (walking < DIRS_IN_FLIGHT && stack.length > 0) {
          walking++;
          walkDir(stack.pop()!, (jobs) => {
            // Pushed last to first, so they are taken in name order.
            for (let i = jobs.length - 1; i >= 0; i--) stack.push(jobs[i]!);
            pump();
          }).then(() => {
            walking--;
            if (walking === 0 && stack.length === 0) resolve();
            else pump();
          }, reject);
        }
      };
      pump();
    });

  for (const p of paths) {
    if (p === '-') {
      if (!opts.stdinKey) throw new UsageError('putting stdin (-) needs --key');
      const r = await db.put(process.stdin, { key: opts.stdinKey, meta: { type: 'file' } });
      report.items.push({ key: opts.stdinKey, hash: r.hash, size: r.size, type: 'stdin' });
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
    if (st.isDirectory()) await putDir(p);
    else if (st.isFile()) await limiter.run(() => putFile(p, undefined));
    else report.skipped.push({ path: p, reason: st.isSymbolicLink() ? 'symbolic link' : 'not a regular file' });
  }
  await limiter.idle();
  // Everything put above, durable before the report says it is stored (see `relaxed`).
  await db.flush();
  report.items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
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
  const made = new Map<string, Promise<unknown>>();
  const restoreOne = async (key: string, hash: string) => {
    const rel = key.slice(prefix.length);
    const dest = path.resolve(root, rel);
    if (dest !== root && !dest.startsWith(root + path.sep)) throw new UsageError(`key ${key} would restore outside ${target}`);
    const parentDir = path.dirname(dest);
    if (!made.has(parentDir)) made.set(parentDir, fs.promises.mkdir(parentDir, { recursive: true }));
    await made.get(parentDir);
    const tmp = `${dest}.ouro-tmp-${process.pid}`;
    const st = await db.stat(hash);
    // Small values in one write, large ones streamed (bounded memory).
    if (st.size <= READ_WHOLE_MAX_BYTES) await fs.promises.writeFile(tmp, await db.get(hash));
    else await pipeline(db.stream(hash), fs.createWriteStream(tmp));
    const mtime = Number(st.meta['mtime']);
    if (Number.isFinite(mtime) && mtime > 0) await fs.promises.utimes(tmp, new Date(mtime), new Date(mtime));
    await fs.promises.rename(tmp, dest);
    files++;
    bytes += st.size;
    progress.update(bytes, files);
  };
  for await (const e of db.list({ prefix })) {
    if (e.key.endsWith('/')) continue;
    pending.push(restoreOne(e.key, e.hash));
    if (pending.length >= PUTS_IN_FLIGHT) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  progress.done();
  return { files, bytes };
}
