/**
 * The blockstore directory:
 *   open/<seq as 16 hex digits>.open   blocks still being appended to (at most a few)
 *   blocks/<id[0..2]>/<id>.blk         sealed, immutable blocks, named by their id
 *
 * Sealing (OpenBlock.seal) follows this order, and recovery (OuroDB.open) relies on it:
 *   1. append the footer and trailer to the open file
 *   2. fsync the file                       -> the whole block is durable under its open name
 *   3. rename open/<seq>.open -> blocks/<aa>/<id>.blk
 *   4. fsync blocks/<aa>/ and open/         -> the rename is durable
 *   5. (caller) register the block and switch its entries' locations in one synced LevelDB
 *      batch that also deletes their WAL records.
 * A crash before 3 leaves an open file: recovery cuts it back to its last WAL-recorded entry.
 * A crash between 3 and 5 leaves a block nobody registered: recovery verifies and registers it.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import zlib from 'node:zlib';
import { toHex } from '../lib/bytes.js';
import { CorruptionError, ioError, syncFailure } from '../lib/errors.js';
import { failpoint } from '../lib/failpoints.js';
import { ensureDir, fsyncDir } from '../lib/fsutil.js';
import { type Vfs, type VfsFile, readFully, writevAll } from '../lib/vfs/vfs.js';
import type { SeenEntries } from './entry-hashes.js';
import {
  type EntryRow,
  FOOTER_ROW_BYTES,
  HEADER_BYTES,
  TRAILER_BYTES,
  decodeFooterRow,
  decodeHeader,
  decodeTrailer,
  encodeFooter,
  encodeHeader,
  ENTRY_HEADER_BYTES,
  readEntryHeader,
} from './format.js';

export interface SealedBlock {
  id: Buffer;
  path: string;
  size: number;
  seq: number;
  rows: EntryRow[];
}

export interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Callers await it; this keeps a failed write that nobody awaited yet from crashing the process.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * Zeros written ahead of an open block's entries (OpenBlock.#zeroAhead). An fdatasync after an
 * append that grew the file must write the file's new size (its inode) as well as the data; after
 * overwriting bytes already on disk, only the data. On this project's test machine (ext4) a
 * 16 KiB write and fdatasync took ~0.42 ms appending and ~0.22 ms overwriting zeros, and ~0.56
 * against ~0.40 ms with LevelDB's log synced at the same time, as the group commit does. Every
 * durable small put waits for one such sync, so while groups are small the file is kept zeroed
 * ZERO_AHEAD_BYTES past its entries. Large groups (streamed ingest) skip it: their syncs are
 * few, and writing every byte twice would cost more than it saves.
 */
const ZERO_AHEAD_BYTES = 1 << 20;
/** Zeros are written again once the entries come this close to their end. */
const ZERO_AHEAD_SLACK = 256 << 10;
/** The largest group (bytes appended between two syncs) for which zeros are written ahead. */
const ZERO_AHEAD_MAX_GROUP = 256 << 10;
const ZEROS = Buffer.alloc(64 << 10);

export class OpenBlock {
  readonly seq: number;
  readonly path: string;
  readonly handle: VfsFile;
  rows: EntryRow[];
  readonly #header: Buffer;
  #size: number;
  #next: { bufs: Buffer[]; start: number; bytes: number; done: Deferred } | undefined;
  #writing: Promise<void> | undefined;
  #backlog = 0;
  /** The first write that failed: every write after it fails too, so no entry lands past a hole. */
  #writeError: unknown;
  /** The file may hold bytes past #size (a cut left them, or zeros written ahead): seal truncates before its footer. */
  #tail = false;
  /** The file holds entries or zeros up to here (#zeroAhead); -1 once writing zeros failed. */
  #zeroedTo = 0;
  /** No zeros are written past this offset (the block's target size: it is sealed once full). */
  readonly #zeroLimit: number;
  /** #size at the last sync, and whether the group that sync covered was small. */
  #syncedSize: number;
  #smallGroups = false;

  /** `zeroLimit`: see #zeroLimit; 0 (a recovered block, which takes no entries) writes no zeros. */
  constructor(seq: number, file: string, handle: VfsFile, header: Buffer, size: number, rows: EntryRow[], zeroLimit = 0) {
    this.seq = seq;
    this.path = file;
    this.handle = handle;
    this.#header = header;
    this.#size = size;
    this.#syncedSize = size;
    this.#zeroLimit = zeroLimit;
    this.rows = rows;
  }

  /** Bytes in the file so far (header and appended entries). */
  get size(): number {
    return this.#size;
  }

  get entryBytes(): number {
    return this.#size - HEADER_BYTES;
  }

  /** Whether a write to this block failed: it takes no more entries (see cut()). */
  get broken(): boolean {
    return this.#writeError !== undefined;
  }

  /**
   * Reserves the next `bytes.length` bytes and queues them for writing. The offset is reserved
   * synchronously, so the order of append() calls is the order of entries in the file. Appends
   * made while a write is in flight are coalesced into one positional writev, so concurrent small
   * puts share a system call as they share an fsync. `written` resolves once the bytes reached
   * the OS (not yet durable: see sync()).
   */
  append(bytes: Buffer, row: Omit<EntryRow, 'offset'>): { offset: number; written: Promise<void> } {
    const offset = this.#size;
    this.#size += bytes.length;
    this.rows.push({ ...row, offset });
    if (this.#writeError !== undefined) {
      // Broken: fail at once. (Not through #writeLoop, which would then finish synchronously,
      // before append() could record it as running.)
      const written = Promise.reject(this.#writeError);
      written.catch(() => {});
      return { offset, written };
    }
    if (!this.#next) this.#next = { bufs: [], start: offset, bytes: 0, done: deferred() };
    this.#next.bufs.push(bytes);
    this.#next.bytes += bytes.length;
    this.#backlog += bytes.length;
    const written = this.#next.done.promise;
    if (!this.#writing) this.#writing = this.#writeLoop();
    return { offset, written };
  }

  /** Bytes appended but not yet handed to the OS: callers wait on drain() when this grows. */
  get backlog(): number {
    return this.#backlog;
  }

  /** Resolves when everything appended so far has been written (or a write failed). */
  async drain(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  async #writeLoop(): Promise<void> {
    while (this.#next) {
      const batch = this.#next;
      this.#next = undefined;
      try {
        if (this.#writeError !== undefined) throw this.#writeError;
        await writevAll(this.handle, batch.bufs, batch.start);
        batch.done.resolve();
      } catch (err) {
        const failure = ioError(`write ${this.path}@${batch.start}`, err);
        this.#writeError ??= failure;
        batch.done.reject(failure);
      } finally {
        this.#backlog -= batch.bytes;
      }
      const end = batch.start + batch.bytes;
      if (this.#smallGroups && this.#writeError === undefined && this.#zeroedTo >= 0 && end + ZERO_AHEAD_SLACK > this.#zeroedTo) await this.#zeroAhead(end);
    }
    this.#writing = undefined;
  }

  /**
   * Writes zeros from the end of the entries written so far to ZERO_AHEAD_BYTES past it (see
   * ZERO_AHEAD_BYTES for why). It runs in the write loop, so no entry's write can be under way at
   * those offsets or overtake it: later entries overwrite the zeros. Readers never see them
   * (entries are read at their recorded offsets), recovery cuts a block back to its last
   * acknowledged entry, and seal() truncates them before the footer. A failure (a full disk)
   * only ends the zeroing: the entries are unaffected.
   */
  async #zeroAhead(end: number): Promise<void> {
    const to = Math.min(end + ZERO_AHEAD_BYTES, this.#zeroLimit);
    const at = Math.max(end, this.#zeroedTo);
    if (at >= to) {
      this.#zeroedTo = -1; // the block is (nearly) full: nothing left worth zeroing
      return;
    }
    try {
      const zeros: Buffer[] = [];
      for (let n = at; n < to; n += ZEROS.length) zeros.push(ZEROS.subarray(0, Math.min(ZEROS.length, to - n)));
      this.#tail = true;
      await writevAll(this.handle, zeros, at);
      this.#zeroedTo = to;
    } catch {
      this.#zeroedTo = -1;
    }
  }

  /**
   * Forgets every entry at or after `offset` (their writes failed, or depend on one that did):
   * the block ends there and takes no more entries. Entries before it are unaffected. Bytes that
   * did reach the file past the cut are cut off when the block is sealed.
   */
  cut(offset: number, reason: unknown): void {
    this.#writeError ??= reason;
    if (offset >= this.#size) return;
    this.rows = this.rows.filter((r) => r.offset < offset);
    this.#size = offset;
    this.#tail = true;
  }

  /**
   * fdatasync: makes every completed write durable (the file's size included). A failure is
   * fatal to the handle (FailedError): after a failed fsync the kernel may have dropped the dirty
   * pages, so what the file holds is unknown until recovery reads it back (the fsyncgate lesson).
   */
  async sync(): Promise<void> {
    try {
      // In-process tests inject a failing fdatasync here (an EIO, as a dying disk gives).
      failpoint('block.fdatasync');
      this.#smallGroups = this.#size - this.#syncedSize <= ZERO_AHEAD_MAX_GROUP;
      this.#syncedSize = this.#size;
      await this.handle.datasync();
    } catch (err) {
      throw syncFailure(`fdatasync ${this.path}`, err);
    }
  }

  /**
   * Steps 1-4 of the seal protocol (see the top of this file). A full disk before the rename
   * (writing the footer, making the shard directory, renaming) throws DiskFullError and leaves
   * the block as it was, to be sealed again later; a failed fsync throws FailedError.
   */
  async seal(store: BlockStore): Promise<SealedBlock> {
    await this.drain();
    const footerOffset = this.#size;
    const footer = encodeFooter(this.rows, footerOffset);
    failpoint('seal.before-footer');
    try {
      if (this.#tail) await this.handle.truncate(footerOffset);
      this.#tail = false;
      await writevAll(this.handle, [footer], footerOffset);
    } catch (err) {
      this.#tail = true;
      throw ioError(`write footer ${this.path}`, err);
    }
    failpoint('seal.after-footer');
    try {
      await this.handle.sync();
    } catch (err) {
      throw syncFailure(`fsync ${this.path}`, err);
    }
    failpoint('seal.after-fsync');
    const id = crypto.createHash('sha256').update(this.#header).update(footer).digest();
    const dest = store.blockPath(id);
    await ensureDir(store.vfs, path.dirname(dest));
    try {
      await store.vfs.rename(this.path, dest);
    } catch (err) {
      throw ioError(`rename ${this.path} -> ${dest}`, err);
    }
    failpoint('seal.after-rename');
    await fsyncDir(store.vfs, path.dirname(dest)).catch((err: unknown) => {
      throw syncFailure(`fsync ${path.dirname(dest)}`, err);
    });
    await fsyncDir(store.vfs, path.dirname(this.path)).catch((err: unknown) => {
      throw syncFailure(`fsync ${path.dirname(this.path)}`, err);
    });
    failpoint('seal.after-dir-fsync');
    return { id, path: dest, size: footerOffset + footer.length, seq: this.seq, rows: this.rows };
  }
}

export class BlockStore {
  readonly dir: string;
  readonly openDir: string;
  readonly blocksDir: string;
  readonly databaseId: Buffer;
  readonly vfs: Vfs;

  constructor(vfs: Vfs, dir: string, databaseId: Buffer) {
    this.vfs = vfs;
    this.dir = dir;
    this.openDir = path.join(dir, 'open');
    this.blocksDir = path.join(dir, 'blocks');
    this.databaseId = databaseId;
  }

  async init(): Promise<void> {
    await ensureDir(this.vfs, this.openDir);
    await ensureDir(this.vfs, this.blocksDir);
  }

  openPath(seq: number): string {
    return path.join(this.openDir, `${seq.toString(16).padStart(16, '0')}.open`);
  }

  blockPath(id: Uint8Array): string {
    const hex = toHex(id);
    return path.join(this.blocksDir, hex.slice(0, 2), `${hex}.blk`);
  }

  async #readdir(dir: string): Promise<string[]> {
    try {
      return await this.vfs.readdir(dir);
    } catch (err) {
      throw ioError(`readdir ${dir}`, err);
    }
  }

  async listOpen(): Promise<number[]> {
    const names = await this.#readdir(this.openDir);
    return names.filter((n) => /^[0-9a-f]{16}\.open$/.test(n)).map((n) => parseInt(n.slice(0, 16), 16)).sort((a, b) => a - b);
  }

  /** Every sealed block file present, as [id hex, path]. */
  async listSealed(): Promise<Array<{ idHex: string; path: string }>> {
    const out: Array<{ idHex: string; path: string }> = [];
    for (const shard of await this.#readdir(this.blocksDir)) {
      if (!/^[0-9a-f]{2}$/.test(shard)) continue;
      for (const name of await this.#readdir(path.join(this.blocksDir, shard))) {
        const m = /^([0-9a-f]{64})\.blk$/.exec(name);
        if (m && m[1]!.startsWith(shard)) out.push({ idHex: m[1]!, path: path.join(this.blocksDir, shard, name) });
      }
    }
    return out;
  }

  /**
   * Creates open/<seq>.open with its header and makes the directory entry durable. On failure
   * (a full disk) the partial file is removed again: it holds no entry. `blockSize`, the size
   * at which the block will be sealed, bounds the zeros written ahead of its entries (0: none).
   */
  async createOpen(seq: number, blockSize = 0): Promise<OpenBlock> {
    const file = this.openPath(seq);
    const header = encodeHeader({ seq, databaseId: this.databaseId });
    let handle: VfsFile | undefined;
    try {
      handle = await this.vfs.create(file, { exclusive: true });
      await writevAll(handle, [header], 0);
    } catch (err) {
      if (handle) {
        await handle.close().catch(() => {});
        await this.vfs.remove(file).catch(() => {});
      }
      throw ioError(`create ${file}`, err);
    }
    try {
      await fsyncDir(this.vfs, this.openDir);
    } catch (err) {
      await handle.close().catch(() => {});
      throw syncFailure(`fsync ${this.openDir}`, err);
    }
    return new OpenBlock(seq, file, handle, header, HEADER_BYTES, [], blockSize);
  }

  /** Removes an open block file that holds no acknowledged entry. */
  async removeOpen(seq: number): Promise<void> {
    const file = this.openPath(seq);
    try {
      await this.vfs.remove(file);
    } catch (err) {
      throw ioError(`remove ${file}`, err);
    }
  }

  /** Opens open block `seq`'s file and checks its header names that seq and this database. */
  async #openOpenFile(seq: number, flags: 'r' | 'r+'): Promise<{ file: string; handle: VfsFile; size: number; header: Buffer }> {
    const file = this.openPath(seq);
    const handle = await openFile(this.vfs, file, flags);
    try {
      const size = await handle.size();
      const header = Buffer.alloc(HEADER_BYTES);
      await readFully(handle, header, 0, HEADER_BYTES, 0);
      const h = decodeHeader(header, file);
      if (h.seq !== seq || !h.databaseId.equals(this.databaseId)) throw new CorruptionError(`${file}: header names another block or database`, { location: { file } });
      return { file, handle, size, header };
    } catch (err) {
      await handle.close().catch(() => {});
      throw ioError(`open ${file}`, err);
    }
  }

  /**
   * The entries of open block `seq` when its WAL records are lost (the index was): the longest
   * run from the start that are whole and that `accept` (which authenticates them) takes. A torn
   * or damaged entry ends the run: nothing after it can be trusted to be where the run says.
   */
  async scanOpen(seq: number, accept: (entry: Buffer, offset: number) => boolean): Promise<EntryRow[]> {
    const { file, handle, size } = await this.#openOpenFile(seq, 'r');
    try {
      const rows: EntryRow[] = [];
      const head = Buffer.alloc(ENTRY_HEADER_BYTES);
      for (let at = HEADER_BYTES; at + ENTRY_HEADER_BYTES <= size; ) {
        await readFully(handle, head, 0, ENTRY_HEADER_BYTES, at);
        let eh;
        try {
          eh = readEntryHeader(head, 0, file, at);
        } catch {
          break;
        }
        const length = ENTRY_HEADER_BYTES + eh.payloadLength;
        if (at + length > size) break;
        const bytes = Buffer.allocUnsafe(length);
        if ((await readFully(handle, bytes, 0, length, at)) !== length) break;
        if (!accept(bytes, at)) break;
        rows.push({ id: eh.id, kind: eh.kind, flags: eh.flags, length, plainLength: eh.plainLength, offset: at, hash: crypto.createHash('sha256').update(bytes).digest() });
        at += length;
      }
      return rows;
    } finally {
      await handle.close().catch(() => {});
    }
  }

  /**
   * Reopens open block `seq` after a crash. `rows` are its WAL records (the entries that were
   * acknowledged), in offset order. Checks they tile the file from the header on and that each
   * entry's bytes still hash to what the WAL recorded, then cuts off anything after the last one
   * (bytes written but never acknowledged, or a footer whose seal never completed).
   */
  async recoverOpen(seq: number, rows: EntryRow[]): Promise<OpenBlock> {
    const { file, handle, size, header } = await this.#openOpenFile(seq, 'r+');
    try {
      let end = HEADER_BYTES;
      for (const row of rows) {
        if (row.offset !== end) throw new CorruptionError(`${file}: WAL records do not tile the file at ${end}`, { location: { file, offset: end } });
        end += row.length;
      }
      if (end > size) throw new CorruptionError(`${file}: acknowledged entries end at ${end} but the file has ${size} bytes`, { location: { file, offset: size } });
      for (const row of rows) {
        const bytes = Buffer.allocUnsafe(row.length);
        const n = await readFully(handle, bytes, 0, row.length, row.offset);
        if (n !== row.length || !crypto.createHash('sha256').update(bytes).digest().equals(row.hash)) {
          throw new CorruptionError(`${file}@${row.offset}: entry does not match its WAL record`, { location: { file, offset: row.offset, id: toHex(row.id) } });
        }
      }
      const block = new OpenBlock(seq, file, handle, header, size, rows);
      // Bytes past the last acknowledged entry are cut off when the block is sealed; the block
      // takes no new entries (it is sealed as soon as the database opens).
      block.cut(end, new Error(`recovered block ${seq} takes no new entries`));
      return block;
    } catch (err) {
      await handle.close().catch(() => {});
      throw ioError(`recover ${file}`, err);
    }
  }

  /**
   * Reads and checks a sealed block's header, trailer and footer, and recomputes its id. Entry
   * bytes are not read (see assertBlockEntries). Throws CorruptionError on any mismatch, and for a
   * block of another database.
   */
  readIndex(file: string): Promise<BlockIndex> {
    return readBlockIndex(this.vfs, file, this.databaseId);
  }
}

export interface BlockIndex {
  id: Buffer;
  /** The seq the writer sealed it under (its header's). */
  seq: number;
  databaseId: Buffer;
  size: number;
  rows: EntryRow[];
}

/** Opens `file`, an open failure becoming an IOError (with its errno as the cause). */
function openFile(vfs: Vfs, file: string, flags: 'r' | 'r+'): Promise<VfsFile> {
  return vfs.open(file, flags).catch((err: unknown) => {
    throw ioError(`open ${file}`, err);
  });
}

/**
 * Reads and checks a sealed block's header, trailer and footer, and recomputes its id. Entry
 * bytes are not read (see verifyBlockEntries). Throws CorruptionError on any mismatch. Without
 * `databaseId` a block of any database is accepted (a keyless replica checks blocks so).
 */
export async function readBlockIndex(vfs: Vfs, file: string, databaseId?: Buffer): Promise<BlockIndex> {
  const handle = await openFile(vfs, file, 'r');
  try {
    return await indexOf(await handle.size(), (buf, at) => readFully(handle, buf, 0, buf.length, at), file, databaseId);
  } finally {
    await handle.close().catch(() => {});
  }
}

/**
 * readBlockIndex of a block whose bytes are in memory (a small block received whole, in the
 * same bytes that were written to `file`): no file-system call, where reading the index back
 * took three reads between an open and a close.
 */
export function blockIndexOf(bytes: Uint8Array, file: string): Promise<BlockIndex> {
  return indexOf(
    bytes.length,
    async (buf, at) => {
      const piece = bytes.subarray(at, at + buf.length);
      buf.set(piece);
      return piece.length;
    },
    file,
  );
}

async function indexOf(size: number, readAt: (buf: Buffer, at: number) => Promise<number>, file: string, databaseId?: Buffer): Promise<BlockIndex> {
  try {
    if (size < HEADER_BYTES + TRAILER_BYTES) throw new CorruptionError(`${file}: too short to be a block`, { location: { file } });
    const header = Buffer.alloc(HEADER_BYTES);
    await readAt(header, 0);
    const h = decodeHeader(header, file);
    if (databaseId && !h.databaseId.equals(databaseId)) throw new CorruptionError(`${file}: block belongs to another database`, { location: { file } });
    const trailerBytes = Buffer.alloc(TRAILER_BYTES);
    await readAt(trailerBytes, size - TRAILER_BYTES);
    const t = decodeTrailer(trailerBytes, size, file);
    const footer = Buffer.alloc(t.count * FOOTER_ROW_BYTES + TRAILER_BYTES);
    await readAt(footer, t.footerOffset);
    if (zlib.crc32(footer.subarray(0, t.count * FOOTER_ROW_BYTES)) !== t.footerCrc) throw new CorruptionError(`${file}: footer checksum mismatch`, { location: { file, offset: t.footerOffset } });
    const rows: EntryRow[] = [];
    let end = HEADER_BYTES;
    for (let i = 0; i < t.count; i++) {
      const row = decodeFooterRow(footer, i * FOOTER_ROW_BYTES);
      if (row.offset !== end) throw new CorruptionError(`${file}: footer rows do not tile the entries at ${end}`, { location: { file, offset: end } });
      end += row.length;
      rows.push(row);
    }
    if (end !== t.footerOffset) throw new CorruptionError(`${file}: entries end at ${end}, footer starts at ${t.footerOffset}`, { location: { file } });
    const id = crypto.createHash('sha256').update(header).update(footer).digest();
    return { id, seq: h.seq, databaseId: h.databaseId, size, rows };
  } catch (err) {
    throw ioError(`read block ${file}`, err);
  }
}


/** Reads every entry of a sealed block and checks it against its footer hash. Returns the bad rows. */
export async function verifyBlockEntries(vfs: Vfs, file: string, rows: EntryRow[]): Promise<EntryRow[]> {
  const bad: EntryRow[] = [];
  const handle = await openFile(vfs, file, 'r');
  try {
    for (const row of rows) {
      const bytes = Buffer.allocUnsafe(row.length);
      const bytesRead = await readFully(handle, bytes, 0, row.length, row.offset);
      if (bytesRead !== row.length || !crypto.createHash('sha256').update(bytes).digest().equals(row.hash)) bad.push(row);
    }
  } catch (err) {
    throw ioError(`read ${file}`, err);
  } finally {
    await handle.close().catch(() => {});
  }
  return bad;
}

/**
 * Checks a whole block file as a replica must before it keeps it: its structure, that it hashes
 * to `expectedId`, and every entry against its footer hash. No key is needed. Throws
 * CorruptionError naming what is wrong. `seen`: entry hashes computed as the file was written
 * (blockstore/entry-hashes.ts); when they match the footer, the entries are not read back.
 * `bytes`: the file's whole contents, when the caller holds them (its index is read from them).
 */
export async function verifyBlockFile(vfs: Vfs, file: string, expectedId: Uint8Array, seen?: SeenEntries, bytes?: Uint8Array): Promise<BlockIndex> {
  const index = bytes ? await blockIndexOf(bytes, file) : await readBlockIndex(vfs, file);
  if (!index.id.equals(expectedId)) throw new CorruptionError(`${file}: contents hash to ${toHex(index.id)}, not to ${toHex(expectedId)}`, { location: { file } });
  await assertBlockEntries(vfs, file, index.rows, seen);
  return index;
}

/**
 * verifyBlockEntries, throwing CorruptionError (at the first bad entry) if any entry is bad;
 * nothing is read when `seen` (hashes taken as the file was written) matches every row.
 */
export async function assertBlockEntries(vfs: Vfs, file: string, rows: EntryRow[], seen?: SeenEntries): Promise<void> {
  if (seen?.matches(rows)) return;
  const bad = await verifyBlockEntries(vfs, file, rows);
  if (bad.length > 0) throw new CorruptionError(`${file}: ${bad.length} entries do not match the footer`, { location: { file, offset: bad[0]!.offset } });
}
