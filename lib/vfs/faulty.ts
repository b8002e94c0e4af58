/**
 * An error-injecting file system (as pebble's errorfs): wraps another Vfs and makes chosen
 * operations fail with a chosen errno (EIO, ENOSPC, EDQUOT, ...) or write short, picked by
 * operation kind, path and count. Tests use it to prove that every failure gives a typed error,
 * loses nothing acknowledged, and leaves a state that reopening (or, for a full disk, freeing
 * space) recovers from.
 */
import type { Vfs, VfsFile } from './vfs.js';

export type FsOp = 'open' | 'create' | 'read' | 'write' | 'datasync' | 'sync' | 'truncate' | 'rename' | 'remove' | 'mkdir' | 'readdir' | 'syncDir';

export interface Fault {
  /** Which operations: one kind, or several. */
  op: FsOp | FsOp[];
  /** Only operations on paths matching this (a substring or a RegExp). */
  path?: string | RegExp;
  /** Fail from the nth matching operation on (1-based, counted from inject(); default 1). */
  nth?: number;
  /** How many matching operations fail from there (default: every one until clear()). */
  times?: number;
  /** The errno code to fail with (default 'EIO'). Ignored when `short` is set. */
  code?: string;
  /** For writes: write only part of the bytes and report it, instead of failing (callers must loop). */
  short?: boolean;
}

interface ArmedFault extends Fault {
  seen: number;
  fired: number;
}

export class FaultyFs implements Vfs {
  readonly inner: Vfs;
  #faults: ArmedFault[] = [];
  /** How many operations were failed or shortened. */
  injected = 0;
  /** When set, what freeBytes() reports (a disk that is nearly full, without filling one). */
  free: number | undefined;

  constructor(inner: Vfs) {
    this.inner = inner;
  }

  get crashed(): Promise<void> | undefined {
    return this.inner.crashed;
  }

  inject(fault: Fault): this {
    this.#faults.push({ ...fault, seen: 0, fired: 0 });
    return this;
  }

  /** Removes every fault: the disk is healthy again (space was freed, the cable reseated). */
  clear(): void {
    this.#faults = [];
  }

  /** The fault this operation hits (it fails, or writes short when the fault says so), if any. */
  #decide(op: FsOp, p: string): { fault: ArmedFault } | undefined {
    for (const f of this.#faults) {
      const ops = Array.isArray(f.op) ? f.op : [f.op];
      if (!ops.includes(op)) continue;
      if (f.path !== undefined && !(typeof f.path === 'string' ? p.includes(f.path) : f.path.test(p))) continue;
      f.seen++;
      if (f.seen < (f.nth ?? 1)) continue;
      if (f.times !== undefined && f.fired >= f.times) continue;
      f.fired++;
      this.injected++;
      return { fault: f };
    }
    return undefined;
  }

  /** Runs `fn` unless a fault says this operation fails. */
  async run<T>(op: FsOp, p: string, fn: () => Promise<T>): Promise<T> {
    const hit = this.#decide(op, p);
    if (hit && !hit.fault.short) throw injectedError(hit.fault.code ?? 'EIO', op, p);
    return fn();
  }

  runSync<T>(op: FsOp, p: string, fn: () => T): T {
    const hit = this.#decide(op, p);
    if (hit && !hit.fault.short) throw injectedError(hit.fault.code ?? 'EIO', op, p);
    return fn();
  }

  /** A write: may fail, or write only part of the bytes when the fault is `short`. */
  async runWrite(p: string, bufs: Buffer[], fn: (bufs: Buffer[]) => Promise<number>): Promise<number> {
    const hit = this.#decide('write', p);
    if (!hit) return fn(bufs);
    if (!hit.fault.short) throw injectedError(hit.fault.code ?? 'EIO', 'write', p);
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const part = Math.max(1, Math.floor(total / 2));
    return fn([Buffer.concat(bufs).subarray(0, part)]);
  }

  async open(p: string, flags: 'r' | 'r+'): Promise<VfsFile> {
    return new FaultyFile(this, p, await this.run('open', p, () => this.inner.open(p, flags)));
  }

  async create(p: string, options: { exclusive: boolean }): Promise<VfsFile> {
    return new FaultyFile(this, p, await this.run('create', p, () => this.inner.create(p, options)));
  }

  rename(from: string, to: string): Promise<void> {
    return this.run('rename', `${from} -> ${to}`, () => this.inner.rename(from, to));
  }

  remove(p: string): Promise<void> {
    return this.run('remove', p, () => this.inner.remove(p));
  }

  mkdirp(p: string): Promise<void> {
    return this.run('mkdir', p, () => this.inner.mkdirp(p));
  }

  readdir(p: string): Promise<string[]> {
    return this.run('readdir', p, () => this.inner.readdir(p));
  }

  syncDir(p: string): Promise<void> {
    return this.run('syncDir', p, () => this.inner.syncDir(p));
  }

  exists(p: string): Promise<boolean> {
    return this.inner.exists(p);
  }

  readFile(p: string): Promise<Buffer> {
    return this.run('read', p, () => this.inner.readFile(p));
  }

  async freeBytes(p: string): Promise<number> {
    if (this.free !== undefined) return this.free;
    return this.inner.freeBytes ? this.inner.freeBytes(p) : Infinity;
  }
}

class FaultyFile implements VfsFile {
  readonly #fs: FaultyFs;
  readonly #path: string;
  readonly #inner: VfsFile;

  constructor(fs: FaultyFs, p: string, inner: VfsFile) {
    this.#fs = fs;
    this.#path = p;
    this.#inner = inner;
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.#fs.run('read', this.#path, () => this.#inner.read(buf, offset, length, position));
  }

  readSync(buf: Buffer, offset: number, length: number, position: number): number {
    return this.#fs.runSync('read', this.#path, () => this.#inner.readSync(buf, offset, length, position));
  }

  writev(bufs: Buffer[], position: number): Promise<number> {
    return this.#fs.runWrite(this.#path, bufs, (b) => this.#inner.writev(b, position));
  }

  datasync(): Promise<void> {
    return this.#fs.run('datasync', this.#path, () => this.#inner.datasync());
  }

  sync(): Promise<void> {
    return this.#fs.run('sync', this.#path, () => this.#inner.sync());
  }

  truncate(length: number): Promise<void> {
    return this.#fs.run('truncate', this.#path, () => this.#inner.truncate(length));
  }

  size(): Promise<number> {
    return this.#inner.size();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

function injectedError(code: string, op: FsOp, p: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected failure of ${op} '${p}'`), { code, syscall: op, path: p });
}
