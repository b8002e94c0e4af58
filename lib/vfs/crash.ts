/**
 * A crashable in-memory file system, for exhaustive crash tests (as pebble's strict MemFS).
 *
 * It keeps, for every file, what was last made durable by datasync/sync and the writes since;
 * for every directory operation (create, mkdir, rename, remove), whether a later syncDir of each
 * directory it touches made it durable. `crash()` (or reaching `crashAfter` mutating operations)
 * freezes it: every later operation of this instance never completes, as in a dead process, and
 * `afterCrash()` builds the disk a reboot would find:
 *
 * - directory operations that were made durable are all there; of the others, a random prefix
 *   (in the order they were made) survives, as a journaling file system commits them in order;
 *   a rename is atomic (the file is under one name or the other, never both or neither);
 * - each file holds exactly its synced bytes, plus a random prefix of the writes made since, the
 *   last of them torn at a random byte.
 *
 * Randomness comes from a seeded generator, so a failing case is reproducible from its seed.
 */
import path from 'node:path';
import type { Vfs, VfsFile } from './vfs.js';

interface Inode {
  data: Buffer<ArrayBufferLike>;
  size: number;
  /** Contents as of the last datasync/sync. */
  synced: Buffer<ArrayBufferLike>;
  /** Writes and truncations since then, in order. */
  pending: Array<{ at: number; bytes: Buffer } | { truncate: number }>;
}

type MetaOp =
  | { kind: 'mkdir'; path: string; dirs: string[] }
  | { kind: 'create'; path: string; inode: Inode; dirs: string[] }
  | { kind: 'rename'; from: string; to: string; dirs: string[] }
  | { kind: 'remove'; path: string; dirs: string[] };

/** Directories and files (by path), all durable: what a new instance starts from. */
export interface CrashImage {
  dirs: string[];
  files: Map<string, Buffer<ArrayBufferLike>>;
}

function errno(code: string, op: string, p: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${op} '${p}'`), { code, syscall: op, path: p });
}

/** mulberry32: small, fast, seedable. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NEVER = new Promise<never>(() => {});

export class CrashableFs implements Vfs {
  /** Mutating operations made so far (writes, syncs, truncations, directory changes). */
  ops = 0;
  /** Crash when about to make mutating operation number crashAfter + 1. */
  crashAfter = Infinity;
  readonly seed: number;
  readonly crashed: Promise<void>;
  #signalCrash!: () => void;
  #isCrashed = false;
  readonly #random: () => number;
  /** The state all operations see now. */
  readonly #dirs = new Map<string, Map<string, Inode>>();
  /** What this instance started from, and every directory operation since, for afterCrash(). */
  readonly #base: CrashImage;
  readonly #baseInodes = new Map<string, Inode>();
  readonly #log: MetaOp[] = [];
  /** Index in #log of each directory's last syncDir. */
  readonly #dirSynced = new Map<string, number>();

  constructor(options: { seed?: number; crashAfter?: number; image?: CrashImage } = {}) {
    this.seed = options.seed ?? 1;
    this.crashAfter = options.crashAfter ?? Infinity;
    this.#random = generator(this.seed);
    this.crashed = new Promise((resolve) => (this.#signalCrash = resolve));
    this.#base = options.image ?? { dirs: ['/'], files: new Map() };
    for (const d of this.#base.dirs) this.#dirs.set(d, new Map());
    for (const [p, bytes] of this.#base.files) {
      const inode: Inode = { data: Buffer.from(bytes), size: bytes.length, synced: Buffer.from(bytes), pending: [] };
      this.#baseInodes.set(p, inode);
      this.#dirs.get(path.dirname(p))!.set(path.basename(p), inode);
    }
  }

  get isCrashed(): boolean {
    return this.#isCrashed;
  }

  /** Crashes now: nothing of this instance runs again. */
  crash(): void {
    if (this.#isCrashed) return;
    this.#isCrashed = true;
    this.#signalCrash();
  }

  /**
   * Counts a mutating operation; at the crash point, crashes instead. Returns false when the
   * operation must not happen (the instance has crashed).
   */
  #mutate(): boolean {
    if (this.#isCrashed) return false;
    if (this.ops >= this.crashAfter) {
      this.crash();
      return false;
    }
    this.ops++;
    return true;
  }

  /** Runs a read-only operation unless crashed (then it never completes). */
  #read<T>(fn: () => T): Promise<T> {
    if (this.#isCrashed) return NEVER;
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #write<T>(fn: () => T): Promise<T> {
    if (!this.#mutate()) return NEVER;
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #dirOf(p: string, op: string): Map<string, Inode> {
    const dir = this.#dirs.get(path.dirname(p));
    if (!dir) throw errno('ENOENT', op, p);
    return dir;
  }

  #inode(p: string, op: string): Inode {
    const inode = this.#dirOf(p, op).get(path.basename(p));
    if (!inode) throw errno(this.#dirs.has(p) ? 'EISDIR' : 'ENOENT', op, p);
    return inode;
  }

  open(p: string, flags: 'r' | 'r+'): Promise<VfsFile> {
    return this.#read(() => new MemFile(this, this.#inode(p, 'open'), flags === 'r+'));
  }

  create(p: string, options: { exclusive: boolean }): Promise<VfsFile> {
    return this.#write(() => {
      const dir = this.#dirOf(p, 'open');
      const existing = dir.get(path.basename(p));
      if (existing && options.exclusive) throw errno('EEXIST', 'open', p);
      if (existing) {
        truncateInode(existing, 0);
        return new MemFile(this, existing, true);
      }
      const inode: Inode = { data: Buffer.alloc(0), size: 0, synced: Buffer.alloc(0), pending: [] };
      dir.set(path.basename(p), inode);
      this.#log.push({ kind: 'create', path: p, inode, dirs: [path.dirname(p)] });
      return new MemFile(this, inode, true);
    });
  }

  rename(from: string, to: string): Promise<void> {
    return this.#write(() => {
      const inode = this.#inode(from, 'rename');
      const dest = this.#dirOf(to, 'rename');
      this.#dirOf(from, 'rename').delete(path.basename(from));
      dest.set(path.basename(to), inode);
      this.#log.push({ kind: 'rename', from, to, dirs: [path.dirname(from), path.dirname(to)] });
    });
  }

  remove(p: string): Promise<void> {
    return this.#write(() => {
      const dir = this.#dirs.get(path.dirname(p));
      if (!dir?.has(path.basename(p))) return;
      dir.delete(path.basename(p));
      this.#log.push({ kind: 'remove', path: p, dirs: [path.dirname(p)] });
    });
  }

  mkdirp(p: string): Promise<void> {
    if (this.#dirs.has(p)) return this.#read(() => undefined);
    return this.#write(() => {
      const missing: string[] = [];
      for (let d = p; !this.#dirs.has(d); d = path.dirname(d)) missing.unshift(d);
      for (const d of missing) {
        if (this.#dirs.get(path.dirname(d))!.has(path.basename(d))) throw errno('EEXIST', 'mkdir', d);
        this.#dirs.set(d, new Map());
        this.#log.push({ kind: 'mkdir', path: d, dirs: [path.dirname(d)] });
      }
    });
  }

  readdir(p: string): Promise<string[]> {
    return this.#read(() => {
      const dir = this.#dirs.get(p);
      if (!dir) throw errno('ENOENT', 'scandir', p);
      const subdirs = [...this.#dirs.keys()].filter((d) => d !== p && path.dirname(d) === p).map((d) => path.basename(d));
      return [...dir.keys(), ...subdirs].sort();
    });
  }

  syncDir(p: string): Promise<void> {
    return this.#write(() => {
      if (!this.#dirs.has(p)) throw errno('ENOENT', 'open', p);
      this.#dirSynced.set(p, this.#log.length);
    });
  }

  exists(p: string): Promise<boolean> {
    return this.#read(() => this.#dirs.has(p) || (this.#dirs.get(path.dirname(p))?.has(path.basename(p)) ?? false));
  }

  readFile(p: string): Promise<Buffer> {
    return this.#read(() => {
      const inode = this.#inode(p, 'open');
      return Buffer.from(inode.data.subarray(0, inode.size));
    });
  }

  /** For MemFile: the guarded entry points. */
  guardRead<T>(fn: () => T): Promise<T> {
    return this.#read(fn);
  }

  guardWrite<T>(fn: () => T): Promise<T> {
    return this.#write(fn);
  }

  /**
   * The disk after the crash: durable directory operations, a random prefix of the others, and
   * in each file its synced bytes plus a random, torn prefix of its later writes.
   */
  afterCrashImage(): CrashImage {
    this.crash();
    const dirs = new Set(this.#base.dirs);
    const entries = new Map<string, Inode>(this.#baseInodes);
    const durable = (op: MetaOp, i: number) => op.dirs.every((d) => (this.#dirSynced.get(d) ?? -1) > i);
    const undurable = this.#log.filter((op, i) => !durable(op, i)).length;
    // How many of the operations that were not made durable still reach the disk, in order.
    let luck = Math.floor(this.#random() * (undurable + 1));
    this.#log.forEach((op, i) => {
      if (!durable(op, i) && luck-- <= 0) return;
      switch (op.kind) {
        case 'mkdir':
          if (dirs.has(path.dirname(op.path))) dirs.add(op.path);
          break;
        case 'create':
          if (dirs.has(path.dirname(op.path))) entries.set(op.path, op.inode);
          break;
        case 'rename': {
          const inode = entries.get(op.from);
          if (inode && dirs.has(path.dirname(op.to))) {
            entries.delete(op.from);
            entries.set(op.to, inode);
          }
          break;
        }
        case 'remove':
          entries.delete(op.path);
          break;
      }
    });
    const files = new Map<string, Buffer<ArrayBufferLike>>();
    const survived = new Map<Inode, Buffer<ArrayBufferLike>>();
    for (const [p, inode] of entries) {
      if (!dirs.has(path.dirname(p))) continue;
      let bytes = survived.get(inode);
      if (!bytes) survived.set(inode, (bytes = this.#surviving(inode)));
      files.set(p, bytes);
    }
    return { dirs: [...dirs].sort(), files };
  }

  /** A new instance on the disk a reboot after the crash would find. */
  afterCrash(options: { crashAfter?: number } = {}): CrashableFs {
    return new CrashableFs({ seed: this.seed + 1, image: this.afterCrashImage(), ...options });
  }

  #surviving(inode: Inode): Buffer<ArrayBufferLike> {
    let bytes: Buffer<ArrayBufferLike> = Buffer.from(inode.synced);
    const kept = Math.floor(this.#random() * (inode.pending.length + 1));
    inode.pending.forEach((w, i) => {
      if (i > kept) return;
      if ('truncate' in w) {
        if (i < kept) bytes = resize(bytes, w.truncate);
        return;
      }
      // The last surviving write may be torn anywhere; the ones before it reached the disk whole.
      const n = i < kept ? w.bytes.length : Math.floor(this.#random() * (w.bytes.length + 1));
      if (n === 0) return;
      if (w.at + n > bytes.length) bytes = resize(bytes, w.at + n);
      w.bytes.copy(bytes, w.at, 0, n);
    });
    return bytes;
  }
}

function resize(bytes: Buffer<ArrayBufferLike>, size: number): Buffer<ArrayBufferLike> {
  if (size <= bytes.length) return Buffer.from(bytes.subarray(0, size));
  const out = Buffer.alloc(size);
  bytes.copy(out);
  return out;
}

function truncateInode(inode: Inode, length: number): void {
  if (length > inode.data.length) inode.data = resize(inode.data, length);
  else inode.data.fill(0, length, inode.size);
  inode.size = length;
  inode.pending.push({ truncate: length });
}

class MemFile implements VfsFile {
  readonly #fs: CrashableFs;
  readonly #inode: Inode;
  readonly #writable: boolean;
  #closed = false;

  constructor(fs: CrashableFs, inode: Inode, writable: boolean) {
    this.#fs = fs;
    this.#inode = inode;
    this.#writable = writable;
  }

  #check(write: boolean): void {
    if (this.#closed) throw errno('EBADF', 'fd', '');
    if (write && !this.#writable) throw errno('EBADF', 'write', '');
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.#fs.guardRead(() => this.readSync(buf, offset, length, position));
  }

  readSync(buf: Buffer, offset: number, length: number, position: number): number {
    if (this.#fs.isCrashed) throw errno('EIO', 'read', 'crashed');
    this.#check(false);
    const inode = this.#inode;
    if (position >= inode.size) return 0;
    return inode.data.copy(buf, offset, position, Math.min(inode.size, position + length));
  }

  writev(bufs: Buffer[], position: number): Promise<number> {
    return this.#fs.guardWrite(() => {
      this.#check(true);
      const bytes = Buffer.concat(bufs);
      const inode = this.#inode;
      const end = position + bytes.length;
      if (end > inode.data.length) inode.data = resize(inode.data, Math.max(end, inode.data.length * 2));
      bytes.copy(inode.data, position);
      inode.size = Math.max(inode.size, end);
      inode.pending.push({ at: position, bytes });
      return bytes.length;
    });
  }

  datasync(): Promise<void> {
    return this.#fs.guardWrite(() => {
      this.#check(false);
      const inode = this.#inode;
      inode.synced = Buffer.from(inode.data.subarray(0, inode.size));
      inode.pending = [];
    });
  }

  sync(): Promise<void> {
    return this.datasync();
  }

  truncate(length: number): Promise<void> {
    return this.#fs.guardWrite(() => {
      this.#check(true);
      truncateInode(this.#inode, length);
    });
  }

  size(): Promise<number> {
    return this.#fs.guardRead(() => this.#inode.size);
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}
