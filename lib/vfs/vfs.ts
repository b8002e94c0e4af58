/**
 * The file-system seam. Every file OuroDB writes itself (the descriptor, open blocks, sealed
 * blocks, their directories) is reached through a `Vfs`, so tests can put a crashable or an
 * error-injecting file system under the engine (lib/vfs/crash.ts, lib/vfs/faulty.ts) the way
 * pebble's vfs.MemFS and errorfs do. The index directory is LevelDB's own: LevelDB does its file
 * I/O natively and always on the real disk, so it is not behind this seam (tests fault it with
 * a real process kill instead).
 *
 * The interface is deliberately small: positional reads and writes, the two syncs, and the few
 * directory operations the seal and gc protocols use. Errors are the platform's errno errors
 * (`code: 'ENOSPC'`, ...); callers wrap them (lib/errors.ts ioError).
 */
import fsCallbacks from 'node:fs';
import fs from 'node:fs/promises';

export interface VfsFile {
  /** Reads up to `length` bytes at `position` into `buf[offset..]`; returns how many (0 at EOF). */
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /**
   * The same read, synchronously. The hot read path uses it for small entries that the page
   * cache serves in microseconds (blockstore/files.ts explains why).
   */
  readSync(buf: Buffer, offset: number, length: number, position: number): number;
  /** Writes the buffers in order at `position`; returns how many bytes were written (may be short). */
  writev(bufs: Buffer[], position: number): Promise<number>;
  /** fdatasync: completed writes and the file size become durable. */
  datasync(): Promise<void>;
  /** fsync: as datasync, plus the file's metadata. */
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

export interface Vfs {
  /** Opens an existing file for reading ('r') or reading and writing ('r+'). */
  open(path: string, flags: 'r' | 'r+'): Promise<VfsFile>;
  /**
   * Creates a file for reading and writing, owner-only. `exclusive`: fail with EEXIST if it
   * exists; otherwise an existing file is truncated.
   */
  create(path: string, options: { exclusive: boolean }): Promise<VfsFile>;
  /** Atomically replaces `to` with `from` (POSIX rename). Durable only once both directories are synced. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a file that is not there is not an error. Durable once its directory is synced. */
  remove(path: string): Promise<void>;
  /** mkdir -p, owner-only. */
  mkdirp(path: string): Promise<void>;
  /** Names in a directory (ENOENT if there is none). */
  readdir(path: string): Promise<string[]>;
  /** fsync of a directory: entries created, renamed or removed in it become durable. */
  syncDir(path: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  readFile(path: string): Promise<Buffer>;
  /** Bytes an unprivileged writer may still use on the file system holding `path` (statfs). */
  freeBytes?(path: string): Promise<number>;
  /**
   * Test file systems only: resolves when the file system "lost power" (lib/vfs/crash.ts). A
   * handle on it then stops at once as a killed process would: it releases the index (so the
   * test can reopen the directory in the same process) and does nothing more.
   */
  readonly crashed?: Promise<void>;
}

/**
 * The real file system. The append and read paths call fs's callback API on the descriptor:
 * FileHandle.writev, .datasync and .read cost more per call (measured on 1 KiB puts from 64
 * writers: +3% to +17% puts/s with less CPU per put; see blockstore/store.ts), and the
 * synchronous small read has no FileHandle form at all.
 */
class NodeFile implements VfsFile {
  readonly #handle: fs.FileHandle;
  readonly #fd: number;

  constructor(handle: fs.FileHandle) {
    this.#handle = handle;
    this.#fd = handle.fd;
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => fsCallbacks.read(this.#fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
  }

  readSync(buf: Buffer, offset: number, length: number, position: number): number {
    return fsCallbacks.readSync(this.#fd, buf, offset, length, position);
  }

  writev(bufs: Buffer[], position: number): Promise<number> {
    return new Promise((resolve, reject) => fsCallbacks.writev(this.#fd, bufs, position, (err, n) => (err ? reject(err) : resolve(n))));
  }

  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fsCallbacks.fdatasync(this.#fd, (err) => (err ? reject(err) : resolve())));
  }

  sync(): Promise<void> {
    return this.#handle.sync();
  }

  truncate(length: number): Promise<void> {
    return this.#handle.truncate(length);
  }

  async size(): Promise<number> {
    return (await this.#handle.stat()).size;
  }

  close(): Promise<void> {
    return this.#handle.close();
  }
}

export class NodeVfs implements Vfs {
  async open(path: string, flags: 'r' | 'r+'): Promise<VfsFile> {
    return new NodeFile(await fs.open(path, flags));
  }

  async create(path: string, options: { exclusive: boolean }): Promise<VfsFile> {
    return new NodeFile(await fs.open(path, options.exclusive ? 'wx+' : 'w+', 0o600));
  }

  rename(from: string, to: string): Promise<void> {
    return fs.rename(from, to);
  }

  remove(path: string): Promise<void> {
    return fs.rm(path, { force: true });
  }

  async mkdirp(path: string): Promise<void> {
    await fs.mkdir(path, { recursive: true, mode: 0o700 });
  }

  readdir(path: string): Promise<string[]> {
    return fs.readdir(path);
  }

  async syncDir(path: string): Promise<void> {
    const handle = await fs.open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close().catch(() => {});
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await fs.access(path);
      return true;
    } catch {
      return false;
    }
  }

  readFile(path: string): Promise<Buffer> {
    return fs.readFile(path);
  }

  async freeBytes(path: string): Promise<number> {
    const st = await fs.statfs(path);
    return st.bavail * st.bsize;
  }
}

/** The default: the real file system. */
export const nodeVfs: Vfs = new NodeVfs();

/** Writes all of `bufs` at `position`, continuing after short writes. */
export async function writevAll(file: VfsFile, bufs: Buffer[], position: number): Promise<void> {
  let pending = bufs;
  let pos = position;
  while (pending.length > 0) {
    let bytesWritten = await file.writev(pending, pos);
    pos += bytesWritten;
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (bytesWritten >= b.length) bytesWritten -= b.length;
      else {
        rest.push(bytesWritten > 0 ? b.subarray(bytesWritten) : b);
        bytesWritten = 0;
      }
    }
    pending = rest;
  }
}

/** Reads exactly `length` bytes at `position`, or fewer only at end of file. */
export async function readFully(file: VfsFile, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await file.read(buf, offset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
