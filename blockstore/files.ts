/**
 * Open file handles for reading entries by exact byte range (pread). Handles are reference
 * counted so a read in flight never sees its descriptor closed under it, and unreferenced ones
 * are closed least-recently-used first to stay within a descriptor budget.
 */
import { ClosedError, ioError } from '../lib/errors.js';
import type { Vfs, VfsFile } from '../lib/vfs/vfs.js';

/** Reads up to this size are synchronous (see #readSync). */
const SYNC_READ_MAX_BYTES = 16 * 1024;

interface Slot {
  handle: VfsFile;
  refs: number;
  pinned: boolean;
  /** Forgotten while reads were in flight: the last of them closes the handle. */
  closeWhenIdle?: boolean;
}

export class FileCache {
  readonly #slots = new Map<string, Slot>();
  readonly #opening = new Map<string, Promise<Slot>>();
  readonly #max: number;
  readonly #vfs: Vfs;
  /**
   * Set by closeAll. A handle that arrives later (an open block whose creation was under way, a
   * read's open that was in flight) is closed at once instead of kept: nothing would close it,
   * and Node closes such a descriptor only when the garbage collector finds it, with a warning.
   */
  #closed = false;

  constructor(vfs: Vfs, maxOpen = 128) {
    this.#vfs = vfs;
    this.#max = maxOpen;
  }

  /** Registers an already open handle (an open block being written) under `name`, pinned. */
  adopt(name: string, handle: VfsFile): void {
    if (this.#closed) {
      void handle.close().catch(() => {});
      throw new ClosedError();
    }
    this.#slots.set(name, { handle, refs: 0, pinned: true });
  }

  /** Gives `name`'s handle a second name (a sealed block keeps its open block's descriptor). */
  alias(from: string, to: string): void {
    const slot = this.#slots.get(from);
    if (slot) this.#slots.set(to, slot);
  }

  unpin(name: string): void {
    const slot = this.#slots.get(name);
    if (slot) slot.pinned = false;
  }

  forget(name: string): void {
    this.#slots.delete(name);
  }

  /** Drops `name` and every alias of its handle, closing it once no read uses it (gc removed the file). */
  retire(name: string): void {
    const slot = this.#slots.get(name);
    if (!slot) return;
    for (const [n, s] of this.#slots) if (s === slot) this.#slots.delete(n);
    if (slot.refs === 0) void slot.handle.close().catch(() => {});
    else slot.closeWhenIdle = true;
  }

  async #acquire(name: string, path: string): Promise<Slot> {
    let slot = this.#slots.get(name);
    if (!slot) {
      let opening = this.#opening.get(name);
      if (!opening) {
        opening = this.#vfs.open(path, 'r').then(
          (handle) => {
            this.#opening.delete(name);
            if (this.#closed) {
              void handle.close().catch(() => {});
              throw new ClosedError();
            }
            const s: Slot = { handle, refs: 0, pinned: false };
            this.#slots.set(name, s);
            return s;
          },
          (err: unknown) => {
            this.#opening.delete(name);
            throw ioError(`open ${path}`, err);
          },
        );
        this.#opening.set(name, opening);
      }
      slot = await opening;
    } else {
      // refresh LRU position
      this.#slots.delete(name);
      this.#slots.set(name, slot);
    }
    slot.refs++;
    return slot;
  }

  /** Reads exactly `length` bytes at `offset` of the file `name` (opened from `path` if needed). */
  async read(name: string, path: string, offset: number, length: number): Promise<Buffer> {
    const open = this.#slots.get(name);
    if (open && length <= SYNC_READ_MAX_BYTES) return this.#readSync(name, open, path, offset, length);
    const slot = await this.#acquire(name, path);
    if (length <= SYNC_READ_MAX_BYTES) {
      slot.refs--;
      return this.#readSync(name, slot, path, offset, length);
    }
    try {
      const buf = Buffer.allocUnsafeSlow(length);
      let done = 0;
      while (done < length) {
        const bytesRead = await slot.handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === length ? buf : buf.subarray(0, done);
    } catch (err) {
      throw ioError(`read ${path}@${offset}`, err);
    } finally {
      slot.refs--;
      if (slot.closeWhenIdle && slot.refs === 0) void slot.handle.close().catch(() => {});
      this.#evict();
    }
  }

  /**
   * Reads now, synchronously, when `name`'s handle is open and the read is small (see #readSync);
   * else undefined, and the caller takes `read`. Into `into` when given (it must hold `length`
   * bytes): a caller that consumes the bytes before anything else runs reads without allocating.
   */
  readNow(name: string, path: string, offset: number, length: number, into?: Buffer): Buffer | undefined {
    const open = this.#slots.get(name);
    if (!open || length > SYNC_READ_MAX_BYTES || (into && into.length < length)) return undefined;
    return this.#readSync(name, open, path, offset, length, into);
  }

  /**
   * Small reads are synchronous preads on the cached descriptor, as LevelDB's getSync reads its
   * own files: from the page cache that costs a few microseconds, where a round trip through the
   * thread pool costs several times more main-thread time than the read itself. Large reads (chunks)
   * stay asynchronous so that a cold disk never stalls the event loop for long.
   */
  #readSync(name: string, slot: Slot, path: string, offset: number, length: number, into?: Buffer): Buffer {
    if (this.#slots.get(name) === slot) {
      // refresh LRU position
      this.#slots.delete(name);
      this.#slots.set(name, slot);
    }
    const buf = into ?? Buffer.allocUnsafeSlow(length);
    let done = 0;
    try {
      while (done < length) {
        const n = slot.handle.readSync(buf, done, length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
    } catch (err) {
      throw ioError(`read ${path}@${offset}`, err);
    } finally {
      this.#evict();
    }
    return done === length && !into ? buf : buf.subarray(0, done);
  }

  #evict(): void {
    if (this.#slots.size <= this.#max) return;
    const seen = new Set<Slot>();
    for (const slot of this.#slots.values()) {
      if (this.#slots.size <= this.#max) break;
      if (slot.refs > 0 || slot.pinned || seen.has(slot)) continue;
      seen.add(slot);
      for (const [n, s] of this.#slots) if (s === slot) this.#slots.delete(n);
      void slot.handle.close().catch(() => {});
    }
  }

  async closeAll(): Promise<void> {
    this.#closed = true;
    const handles = new Set([...this.#slots.values()].map((s) => s.handle));
    this.#slots.clear();
    await Promise.all([...handles].map((h) => h.close().catch(() => {})));
  }
}
