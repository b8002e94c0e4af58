/**
 * BlockSet: the block files of the write-ahead side, from the open block to registration.
 *
 * Owns, and is the only code that changes:
 *   - the block numbering (`nextSeq`): a seq is taken by `openBlock` or `allocateSeq` (adoption),
 *     set by recovery and by a rebuild (`reset`), under the rebuild gate;
 *   - the open block (`current`) and the one being created;
 *   - the unsealed blocks (by seq): how many of each one's entries await commit (`appended`,
 *     `committed`, `dropped`), whether it is full, and its seal's state;
 *   - the seals under way;
 *   - the sealed blocks' ids and file names by seq (caches of the index's 's' keys, filled as
 *     blocks are registered or first read, emptied by `forget` and `reset`);
 *   - the file cache's handles (`files`): open block files are pinned from creation until their
 *     block is registered, so a read that found the seq unsealed always finds a file;
 *   - the listeners told of each seal.
 * Sealing follows blockstore/store.ts; its last step (`register`) writes one index batch.
 */
import type { EntryRow } from '../blockstore/format.js';
import { FileCache } from '../blockstore/files.js';
import type { BlockStore, OpenBlock, SealedBlock } from '../blockstore/store.js';
import type { BatchOp } from '../index/batch.js';
import { keys } from '../index/keys.js';
import type { IndexStore } from '../index/store.js';
import { type Location, encodeBlockInfo } from '../index/values.js';
import { toHex } from '../lib/bytes.js';
import { CorruptionError, DiskFullError, ioError, isDiskFull } from '../lib/errors.js';
import { failpoint } from '../lib/failpoints.js';

/** A block this database sealed, as `onSealed` reports it. */
export interface SealedBlockInfo {
  id: string;
  size: number;
  path: string;
}

/** What the write-ahead side needs to know of the handle's life (lib/db.ts implements it). */
export interface Liveness {
  /** True once the handle is closed (or abandoned). */
  readonly closed: boolean;
  /** Throws ClosedError on a closed handle, the failure on a failed one: work under way stops. */
  checkAlive(): void;
}

/** An open block not yet sealed: how many of its entries await commit, and its seal's state. */
export interface UnsealedBlock {
  block: OpenBlock;
  uncommitted: number;
  /** Takes no more entries; sealed once `uncommitted` is 0. */
  full: boolean;
  sealing?: Promise<void>;
  /** The last seal attempt ran out of disk space: flush and rotate try again. */
  sealError?: unknown;
  /**
   * Set once seal steps 1-4 are done (the block durable under its id), before its registration.
   * A seal tried again after a failed registration (a full disk) only registers: the open file
   * is already renamed away, and the block was already reported durable (see #seal).
   */
  durable?: { sealed: SealedBlock; info: SealedBlockInfo };
}

export interface BlockSetOptions {
  dir: string;
  blockSize: number;
  reserveBytes: number;
  maxUnsealedMs: number | undefined;
}

export function openName(seq: number): string {
  return `open:${seq}`;
}

export function blockName(id: Uint8Array): string {
  return `blk:${toHex(id)}`;
}

export function sumLengths(rows: readonly EntryRow[]): number {
  return rows.reduce((n, r) => n + r.length, 0);
}

export class BlockSet {
  readonly #store: BlockStore;
  readonly #index: IndexStore;
  readonly #live: Liveness;
  readonly #dir: string;
  readonly #blockSize: number;
  readonly #reserveBytes: number;
  readonly #maxUnsealedMs: number | undefined;
  /** Handles of block files, open and sealed (reads share them). */
  readonly files: FileCache;
  /** Taken by openBlock and allocateSeq (inside an index batch's prepare step); set by recovery and reset. */
  #nextSeq: number;
  /** Set by openBlock; cleared by rotate and by cut (a disk-full failure in it). */
  #current: OpenBlock | undefined;
  /** The one openBlock under way: concurrent appenders share it. */
  #creating: Promise<OpenBlock> | undefined;
  /** Open blocks not yet sealed, by seq, with how many of their entries await commit. */
  readonly #unsealed = new Map<number, UnsealedBlock>();
  /** Seals under way: added and removed by #startSeal only. */
  readonly #sealing = new Set<Promise<void>>();
  /** Block ids by seq, filled as blocks are registered or first read (a few dozen bytes each). */
  readonly #sealedSeqs = new Map<number, Buffer>();
  /** File cache name and path of sealed blocks by seq (the hot read path builds them once). */
  readonly #blockFiles = new Map<number, [string, string]>();
  readonly #sealedListeners = new Set<(block: SealedBlockInfo) => void>();
  readonly #durableListeners = new Set<(block: SealedBlockInfo) => void>();

  constructor(store: BlockStore, index: IndexStore, live: Liveness, nextSeq: number, opts: BlockSetOptions) {
    this.#store = store;
    this.#index = index;
    this.#live = live;
    this.#nextSeq = nextSeq;
    this.#dir = opts.dir;
    this.#blockSize = opts.blockSize;
    this.#reserveBytes = opts.reserveBytes;
    this.#maxUnsealedMs = opts.maxUnsealedMs;
    this.files = new FileCache(store.vfs);
  }

  /** The next seq a block will get (written with every group commit). */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  /** Recovery: seqs up to `nextSeq - 1` are taken. */
  set nextSeq(seq: number) {
    this.#nextSeq = seq;
  }

  /** A fresh seq (an adopted block's), inside the index batch that registers it. */
  allocateSeq(): number {
    return this.#nextSeq++;
  }

  /** The open block taking appends, if any. */
  get current(): OpenBlock | undefined {
    return this.#current;
  }

  /** How many block files are open (not yet sealed and registered). */
  get openCount(): number {
    return this.#unsealed.size;
  }

  async openBlock(): Promise<OpenBlock> {
    this.#creating ??= (async () => {
      try {
        await this.#checkFreeSpace();
        const seq = this.#nextSeq++;
        const block = await this.#store.createOpen(seq, this.#blockSize);
        this.files.adopt(openName(seq), block.handle);
        this.#unsealed.set(seq, { block, uncommitted: 0, full: false });
        this.#current = block;
        return block;
      } catch (err) {
        if (isDiskFull(err)) throw err;
        this.#index.fail(err);
        throw this.#index.failed!;
      } finally {
        this.#creating = undefined;
      }
    })();
    return this.#creating;
  }

  /**
   * Refuses a new block when the disk would keep less than reserveBytes free once it is full,
   * so that a full disk stops puts before it stops LevelDB (see OpenOptions.reserveBytes).
   */
  async #checkFreeSpace(): Promise<void> {
    const vfs = this.#store.vfs;
    if (this.#reserveBytes === 0 || !vfs.freeBytes) return;
    let free: number;
    try {
      free = await vfs.freeBytes(this.#dir);
    } catch {
      return; // a file system without statfs: rely on ENOSPC alone
    }
    if (free < this.#reserveBytes + this.#blockSize) {
      throw new DiskFullError(`${free} bytes free on the disk of ${this.#dir}; OuroDB keeps ${this.#reserveBytes} free (reserveBytes) beside the block it writes`);
    }
  }

  /** Stops appending to the current block; it is sealed once all its entries are committed. */
  rotate(): void {
    const block = this.#current;
    this.#current = undefined;
    // Seals that a full disk stopped are tried again whenever a block fills.
    for (const state of this.#unsealed.values()) {
      if (state.block === block) state.full = true;
      if (state.full && state.uncommitted === 0) this.#startSeal(state);
    }
  }

  /** After an append: the unsealed-time limit starts with a block's first entry; a full block rotates. */
  afterAppend(block: OpenBlock): void {
    if (block.rows.length === 1 && this.#maxUnsealedMs !== undefined) {
      const first = block;
      setTimeout(() => {
        if (this.#current === first && !this.#live.closed) this.rotate();
      }, this.#maxUnsealedMs).unref();
    }
    if (block.size >= this.#blockSize) this.rotate();
  }

  /** An entry was appended to block `seq`: one more awaits commit. */
  appended(seq: number): void {
    this.#unsealed.get(seq)!.uncommitted++;
  }

  /** An entry of block `seq` committed: a full block with none left uncommitted is sealed. */
  committed(seq: number): void {
    const state = this.#unsealed.get(seq)!;
    state.uncommitted--;
    if (state.full && state.uncommitted === 0) this.#startSeal(state);
  }

  /** An entry of block `seq` failed: one fewer awaits commit (see `sealIfSettled`). */
  dropped(seq: number): void {
    this.#unsealed.get(seq)!.uncommitted--;
  }

  /** A write failed for lack of space: `block` ends at `offset` and takes no more entries. */
  cut(block: OpenBlock, offset: number, failure: unknown): void {
    block.cut(offset, failure);
    if (this.#current === block) this.#current = undefined;
    this.#unsealed.get(block.seq)!.full = true;
  }

  /** Seals block `seq` if none of its entries awaits commit (after a cut). */
  sealIfSettled(seq: number): void {
    const state = this.#unsealed.get(seq)!;
    if (state.uncommitted === 0) this.#startSeal(state);
  }

  /**
   * Seals a full block whose entries are all committed. A full disk leaves it open (readable,
   * WAL records kept) with `sealError` set, for rotate or flush to try again; other failures
   * are fatal to the handle.
   */
  #startSeal(state: UnsealedBlock): void {
    if (state.sealing) return; // already under way
    const task = this.#seal(state)
      .then(
        () => (state.sealError = undefined),
        (err: unknown) => {
          if (isDiskFull(err)) state.sealError = err;
          else this.#index.fail(err);
        },
      )
      .finally(() => {
        state.sealing = undefined;
        this.#sealing.delete(task);
      });
    state.sealing = task;
    this.#sealing.add(task);
  }

  async #seal(state: UnsealedBlock): Promise<void> {
    const block = state.block;
    if (block.rows.length === 0) return this.#dropEmpty(block);
    // Steps 1-4 run once. A registration that failed for lack of space leaves the block durable
    // under its id with its WAL records kept; the seal tried again (rotate, flush) only registers
    // it. Running steps 1-4 again renamed an open file that was no longer there (ENOENT, and the
    // handle failed), and would report the same block durable twice (a second push of it).
    if (!state.durable) {
      const sealed = await block.seal(this.#store);
      this.files.alias(openName(block.seq), blockName(sealed.id));
      // Seal steps 1-4 are done: the block is durable under its id, and a crash from here on
      // leaves it to recovery, which registers this very file (blockstore/store.ts). Its holders
      // need not wait for step 5 (the synced index batch) to start on it.
      state.durable = { sealed, info: { id: toHex(sealed.id), size: sealed.size, path: sealed.path } };
      // Over a copy: a listener subscribing from one of these is told of this block by onDurable.
      for (const listener of [...this.#durableListeners]) listener(state.durable.info);
    }
    const { sealed, info } = state.durable;
    failpoint('seal.before-register');
    await this.register(sealed, block.rows.length, block.entryBytes);
    this.files.unpin(openName(block.seq));
    this.#unsealed.delete(block.seq);
    for (const listener of this.#sealedListeners) listener(info);
  }

  /** A block a full disk cut back to nothing: it holds no entry and no WAL record names it. */
  async #dropEmpty(block: OpenBlock): Promise<void> {
    await block.drain();
    this.#unsealed.delete(block.seq);
    this.files.retire(openName(block.seq));
    await this.#store.removeOpen(block.seq);
  }

  /**
   * Step 5 of the seal protocol: one synced batch registers the block (its info and the 's' key
   * that sends every location naming its seq to it) and deletes the block's WAL records.
   * Locations themselves do not change: they name the seq, which the block keeps.
   */
  async register(sealed: SealedBlock, walRecords: number, walEntryBytes: number): Promise<void> {
    const ops: BatchOp[] = [
      { type: 'put', key: keys.block(sealed.id), value: encodeBlockInfo({ seq: sealed.seq, size: sealed.size, entries: sealed.rows.length, liveBytes: sumLengths(sealed.rows) }) },
      { type: 'put', key: keys.sealedSeq(sealed.seq), value: sealed.id },
    ];
    for await (const k of this.#index.ldb.keys(keys.walRange(sealed.seq))) ops.push({ type: 'del', key: k });
    const overhead = sealed.size - sumLengths(sealed.rows);
    await this.#index.write(ops, { blocks: 1, storedBytes: overhead, walRecords: -walRecords, walEntryBytes: -walEntryBytes });
    this.#sealedSeqs.set(sealed.seq, sealed.id);
    failpoint('seal.after-register');
  }

  /** Recovery: an open block cut back to its WAL records, to be sealed by `sealRecovered`. */
  recovered(seq: number, block: OpenBlock): void {
    this.files.adopt(openName(seq), block.handle);
    this.#unsealed.set(seq, { block, uncommitted: 0, full: true });
  }

  /**
   * Recovery's last step: seals every recovered block. On a full disk a recovered block stays
   * open (readable, its WAL records kept) and is sealed once there is room: opening must not
   * need free space.
   */
  sealRecovered(): Promise<void[]> {
    return Promise.all(
      [...this.#unsealed.values()].map(async (state) => {
        try {
          await this.#seal(state);
        } catch (err) {
          if (!isDiskFull(err)) throw err;
          state.sealError = err;
        }
      }),
    );
  }

  /** How many seals are under way. */
  get sealingCount(): number {
    return this.#sealing.size;
  }

  /** The seals under way. */
  sealingTasks(): Promise<void>[] {
    return [...this.#sealing];
  }

  /** Throws the error of a seal a full disk stopped, if any (flush). */
  checkStuck(): void {
    const stuck = [...this.#unsealed.values()].find((s) => s.sealError !== undefined);
    if (stuck) throw ioError(`sealing block ${stuck.block.seq}`, stuck.sealError);
  }

  /** Whether block `seq` is open (not yet sealed and registered). */
  isUnsealed(seq: number): boolean {
    return this.#unsealed.has(seq);
  }

  /** The rows of open block `seq`, or undefined when it is not open. */
  openRows(seq: number): EntryRow[] | undefined {
    return this.#unsealed.get(seq)?.block.rows;
  }

  /** The id of sealed block `seq`, if this process registered or read it. */
  sealedId(seq: number): Buffer | undefined {
    return this.#sealedSeqs.get(seq);
  }

  /** Block `id` was registered (an adoption) as `seq`. */
  noteSealed(seq: number, id: Buffer): void {
    this.#sealedSeqs.set(seq, id);
  }

  /** Sealed block `id` (seq `seq`) is gone: its handles are closed and its names forgotten. */
  forget(id: Buffer, seq: number): void {
    this.files.retire(blockName(id));
    this.#sealedSeqs.delete(seq);
    this.#blockFiles.delete(seq);
  }

  /** After a rebuild of the index (under its gate): the numbering it found, nothing cached. */
  reset(nextSeq: number): void {
    this.#nextSeq = nextSeq;
    this.#sealedSeqs.clear();
    this.#blockFiles.clear();
  }

  /** Calls `listener` after each block sealed here. Returns an unsubscribe. */
  onSealed(listener: (block: SealedBlockInfo) => void): () => void {
    this.#sealedListeners.add(listener);
    return () => this.#sealedListeners.delete(listener);
  }

  /**
   * Calls `listener` as each block sealed here is durable under its id, before its registration
   * (see #seal); and at once, before returning, for each block durable now and not yet
   * registered. So a subscriber that lists the registered blocks after subscribing misses none:
   * a block registered by then is listed, and one durable before the subscription but
   * registered after the listing began is reported here (the replicator's start, which listed
   * first and subscribed next, lost the blocks sealed in between to the repair loop).
   */
  onDurable(listener: (block: SealedBlockInfo) => void): () => void {
    this.#durableListeners.add(listener);
    for (const state of this.#unsealed.values()) if (state.durable) listener(state.durable.info);
    return () => this.#durableListeners.delete(listener);
  }

  /**
   * The file holding a location's entry: the sealed block its seq became, or the open block file
   * while the seq is unsealed. An unsealed seq stays in #unsealed (and its file handle pinned in
   * the FileCache) until #sealedSeqs knows its block, so a read never finds neither.
   */
  fileOf(loc: Location): [string, string] {
    const known = this.#blockFiles.get(loc.seq);
    if (known && this.#sealedSeqs.has(loc.seq)) return known;
    let id = this.#sealedSeqs.get(loc.seq);
    if (id === undefined && !this.#unsealed.has(loc.seq)) {
      id = this.#index.get(keys.sealedSeq(loc.seq));
      if (id === undefined) throw new CorruptionError(`the index places an entry in block seq ${loc.seq}, which is neither open nor sealed`, { location: { offset: loc.offset } });
      this.#sealedSeqs.set(loc.seq, id);
    }
    if (!id) return [openName(loc.seq), this.#store.openPath(loc.seq)];
    // Sealed blocks never move: remember their name and path (bounded like #sealedSeqs).
    const file: [string, string] = [blockName(id), this.#store.blockPath(id)];
    this.#blockFiles.set(loc.seq, file);
    return file;
  }
}
