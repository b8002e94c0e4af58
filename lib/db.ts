/**
 * OuroDB: the embedded engine. Public methods check their arguments and state, private ones do
 * the work. The write path, in order (docs/design.md has the reasoning):
 *
 *   put -> chunk (FastCDC) -> chunk id (HMAC) -> dedup (index or in-flight) -> compress, encrypt
 *       -> append to the open block file -> group commit: fdatasync the file(s), then one synced
 *          LevelDB batch with the WAL records and index locations -> resolve
 *
 * and, once an open block reaches its target size (or on flush/close), the seal protocol of
 * blockstore/store.ts, whose last step registers the block and deletes its WAL records in one
 * synced batch. Opening the database recovers from a crash at any of these steps.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { levelBinding, warnUnverifiedIndex } from '../index/leveldb.js';
import { ENTRY_HEADER_BYTES, EntryKind, type EntryRow, FLAG_ZSTD, HEADER_BYTES, readEntryHeader } from '../blockstore/format.js';
import { FileCache } from '../blockstore/files.js';
import { BlockStore, type Deferred, type OpenBlock, type SealedBlock, assertBlockEntries, deferred } from '../blockstore/store.js';
import type { SeenEntries } from '../blockstore/entry-hashes.js';
import { PREFIX_BLOCK, PREFIX_OBJECT, PREFIX_RETIRED, PREFIX_TOMBSTONE, keys } from '../index/keys.js';
import { type BatchOp, writeOps } from '../index/batch.js';
import { IndexStore, type Ldb, type Snapshot } from '../index/store.js';
import { checkIndexFormat, existsOnDisk, indexDamage, openIndex, setIndexAside } from '../index/open.js';
import { type PersistedStats, addStat, decodeStats, encodeStats } from '../index/stats.js';
import { HEAD_BYTES, type Head, type Location, deadBytes, decodeBlockInfo, decodeCount, decodeHeads, decodeHintRow, decodeLocation, encodeBlockInfo, encodeCount, encodeHeads, encodeHintRow, encodeLocation } from '../index/values.js';
import { WAL_RECORD_BYTES } from '../wal/record.js';
import { parseHash, sortHeads } from './args.js';
import { Lifecycle } from './lifecycle.js';
import { Query } from './query.js';
import { Reader, isMissingFile } from './read.js';
import { Snapshots } from './snapshots.js';
import { Collector } from './gc.js';
import { Heads, type KeyName } from './heads.js';
import { Adopter } from './adopt.js';
import { BlockSet, type Liveness, type SealedBlockInfo, blockName, openName, sumLengths } from '../wal/blocks.js';
import { CommitPipeline } from '../wal/commit.js';
import { InFlight, type PendingEntry, type RecordExtra } from '../wal/inflight.js';
import { Packer } from '../wal/packer.js';
import { recoverWal } from '../wal/recover.js';
import { fromHex, toHex } from './bytes.js';
import { type ChunkSizes, Chunker, DEFAULT_CHUNK_SIZES } from './chunker.js';
import { DatabaseKeys, ID_BYTES, TAG_CONTENT, TAG_HINT, deriveKey, gearTable, xchachaDecryptRange } from './crypto.js';
import { type SealedEntry, openEntry, sealEntry } from './entry.js';
import { OFFLOAD_MIN_BYTES, SMALL_BATCH_MAX_BYTES, SealPool } from './seal-pool.js';
import {
  BadArgumentError,
  ClosedError,
  ConfigError,
  ConflictError,
  CorruptionError,
  DiskFullError,
  FailedError,
  NotFoundError,
  RefusedError,
  ioError,
  isDiskFull,
} from './errors.js';
import { checkDatabase } from './check.js';
import { failpoint } from './failpoints.js';
import { RecordCache } from './record-cache.js';
import { type OpenedPack, PackCache, type PackSlot, decodePack, encodePack, recordInPack } from './pack.js';
import { type RebuildReport, rebuildIndex } from './rebuild.js';
import { keyBytes, prefixBytes } from './keyname.js';
import { type VersionNode, nextHeads, versionNumber } from './versions.js';
import { type VersionChange, mergeVersions, readBlockRecords } from './adopt.js';
import { ensureDir, fsyncDir } from './fsutil.js';
import { type Vfs, nodeVfs } from './vfs/vfs.js';
import { type Argon2Cost, DESCRIPTOR_FILE, type Descriptor, createDescriptor, readDescriptor, unlock, validateCredentials } from './keyring.js';
import { type ChunkRef, INLINE_MAX_BYTES, type ObjectRecord, type ObjectType, comparedFields, decodeRecord, encodeRecord } from './record.js';

/** Version of the LevelDB key/value layout (index/keys.ts, index/open.ts). Never reuse a retired number. */
export { INDEX_FORMAT_VERSION } from '../index/open.js';

export type { SealedBlockInfo } from '../wal/blocks.js';
export { Tombstone } from './types.js';
export type { Durability, OpenOptions, FlushOptions, BlockListing, ReplicaSource, TombstoneState, ReleaseReport, PutOptions, PutValue, PutResult, ObjectStat, Stats, ListOptions, ListEntry, Version, ExportedObject, GcOptions, GcReport, CheckOptions, Problem, CheckReport } from './types.js';
import { Tombstone } from './types.js';
import type { Durability, OpenOptions, FlushOptions, BlockListing, ReplicaSource, TombstoneState, ReleaseReport, PutOptions, PutValue, PutResult, ObjectStat, Stats, ListOptions, ListEntry, Version, ExportedObject, GcOptions, GcReport, CheckOptions, Problem, CheckReport } from './types.js';

const DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024;
const NO_ID = Buffer.alloc(0);
const NO_NAMES: ReadonlySet<string> = new Set();
/**
 * Puts in flight from which a small entry (an object record, #identifyRecord, or a chunk under
 * OFFLOAD_MIN_BYTES, #storeChunk) is sealed on the pool in a batch with others (SealPool.sealSmall):
 * with fewer, a batch would hold little more than the one entry, and its round trip would cost
 * a lone put more than the work it moves.
 */
const SMALL_OFFLOAD_INFLIGHT = 4;
/** Score (#smallHit, out of 16) from which small chunks are looked up before they are sealed. */
const SMALL_HITS_CHECK_FIRST = 8;
/** Chunks of one put being sealed at once (on the seal pool) while the next are cut. */
const SEAL_AHEAD = 8;
/**
 * Records up to this size go into a pack when a group commit is already under way (a lone put
 * still writes its record as an entry of its own: nothing would share the pack). A pack is
 * sealed at the start of the next group, or once it holds PACK_MAX_BYTES.
 */
const PACK_RECORD_MAX_BYTES = 16 * 1024;
const EMPTY = Buffer.alloc(0);

/** Where a record goes in the key and parent indexes (parsed put options). */
interface Link {
  key?: KeyName;
  parent: Buffer | null;
  /** Compare-and-set: the heads the key must have (null: no version at all). */
  ifHead?: Buffer[] | null;
  /** Explicit predecessors instead of the current heads. */
  prev?: Buffer[];
  /** Creation time to record (ms since the epoch), when not now. */
  created?: number;
  /** PutOptions.expectHash. */
  expect?: Buffer;
  /**
   * Skip the write when the record would equal the key's single head but for time, prev and the
   * metadata entries named here (PutOptions.ifChanged).
   */
  ifChanged?: { ignoreMeta: ReadonlySet<string> };
  /** PutOptions.hint. */
  hint?: Buffer;
  /** Set when ifChanged kept the head (PutResult.unchanged). */
  kept?: boolean;
  /** Checked between chunks and before the record is written. */
  signal?: AbortSignal | undefined;
  /** Told the commit promise of the record once it is queued (the put's chunk pins end there). */
  onQueued?: (committed: Promise<void>) => void;
  /** #diskFullEpoch when the put began: a disk-full failure since may have taken its chunks. */
  epoch?: number;
  /**
   * Set by putHinted, which holds the key's lock from its hint check to the end of the put: the
   * heads it read, and the hint row when nothing of the key was pending then (a pending write may
   * change the row by the time the put compares, so it is read again), with its hint tag.
   */
  held?: { heads: Head[]; hintRow?: Buffer | undefined; hintTag?: Buffer | undefined };
}

export class OuroDB {
  readonly dir: string;
  /** The index: its handle, batch chain, stats and failure latch (index/store.ts). */
  readonly #index: IndexStore;
  /** Closed/closing, the rebuild gate, operations in flight (lib/lifecycle.ts). */
  readonly #life: Lifecycle;
  /** Record and pack caches; reads of entries and records (lib/read.ts). */
  readonly #reader: Reader;
  /** Snapshot readers, the gc epoch, retired files (lib/snapshots.ts). */
  readonly #snapshots: Snapshots;
  readonly #query: Query;
  /** Key locks and the overlay of queued heads (lib/heads.ts). */
  readonly #heads: Heads;
  /** The adoption chain and deferred adoptions (lib/adopt.ts). */
  readonly #adopter: Adopter;
  /** The gc and block-release runs (lib/gc.ts). */
  readonly #collector: Collector;
  /** Block numbering, the open and unsealed blocks, seals, block files (wal/blocks.ts). */
  readonly #blocks: BlockSet;
  /** Pending entries, pins and the chunks gc is dropping (wal/inflight.ts). */
  readonly #held: InFlight;
  /** The queue and group commit (wal/commit.ts). */
  readonly #commit: CommitPipeline;
  readonly #keys: DatabaseKeys;
  /** OURODB.json as opened (set by open). */
  #descriptor: Descriptor | undefined;
  readonly #chunker: Chunker;
  readonly #store: BlockStore;
  readonly #sealPool: SealPool;
  readonly #compression: boolean;
  readonly #durability: Durability;

  /** How many of the last small chunks were found stored, as a moving score (#smallHit). */
  #smallHits = 0;
  #replicas: ReplicaSource | undefined;

  private constructor(dir: string, index: IndexStore, keys: DatabaseKeys, chunker: Chunker, store: BlockStore, opts: OpenOptions, nextSeq: number) {
    this.dir = dir;
    this.#index = index;
    this.#keys = keys;
    this.#chunker = chunker;
    this.#store = store;
    this.#compression = opts.compression ?? true;
    this.#durability = opts.durability ?? 'durable';
    this.#sealPool = new SealPool(keys.material, { chunkMax: chunker.sizes.max });
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    const live = new Lifecycle(index);
    this.#life = live;
    this.#blocks = new BlockSet(store, index, live, nextSeq, { dir, blockSize, reserveBytes: opts.reserveBytes ?? Math.max(2 * blockSize, 16 * 1024 * 1024), maxUnsealedMs: opts.maxUnsealedMs });
    this.#held = new InFlight(index);
    this.#commit = new CommitPipeline(index, this.#blocks, this.#held, new Packer(keys, this.#compression, this.#held), live);
    this.#reader = new Reader(index, this.#blocks, keys, opts.recordCacheBytes ?? 16 * 1024 * 1024, () => this.#replicas);
    this.#snapshots = new Snapshots(index, store, this.#blocks);
    this.#query = new Query(live, index, this.#reader, this.#snapshots);
    this.#heads = new Heads(index, keys);
    this.#adopter = new Adopter({ life: live, index, store, keys, blocks: this.#blocks, held: this.#held, heads: this.#heads, reader: this.#reader });
    this.#collector = new Collector({ life: live, index, store, keys, blocks: this.#blocks, held: this.#held, commit: this.#commit, snapshots: this.#snapshots, cluster: () => this.#replicas });
  }

  /**
   * Creates the database in `dir` if it has none, or opens it. A wrong passphrase or key throws
   * WrongKeyError (code OURO_WRONG_KEY) having read only the descriptor: nothing on disk changes.
   */
  static async open(dir: string, options: OpenOptions): Promise<OuroDB> {
    if (typeof dir !== 'string' || dir.length === 0) throw new BadArgumentError('dir must be a non-empty path');
    const creds = validateCredentials(options);
    if (options.blockSize !== undefined && !(Number.isInteger(options.blockSize) && options.blockSize >= 4096 && options.blockSize <= 1 << 30)) {
      throw new BadArgumentError('blockSize must be an integer between 4 KiB and 1 GiB');
    }
    if (options.durability !== undefined && options.durability !== 'durable' && options.durability !== 'relaxed') throw new BadArgumentError("durability must be 'durable' or 'relaxed'");
    if (options.recordCacheBytes !== undefined && !(Number.isSafeInteger(options.recordCacheBytes) && options.recordCacheBytes >= 0)) throw new BadArgumentError('recordCacheBytes must be a non-negative integer');
    if (options.reserveBytes !== undefined && !(Number.isSafeInteger(options.reserveBytes) && options.reserveBytes >= 0)) throw new BadArgumentError('reserveBytes must be a non-negative integer');
    if (options.maxUnsealedMs !== undefined && !(Number.isSafeInteger(options.maxUnsealedMs) && options.maxUnsealedMs >= 1)) throw new BadArgumentError('maxUnsealedMs must be a positive integer');
    if (!levelBinding.verified) {
      if (options.requireVerifiedIndex === true) throw new ConfigError(`LevelDB here does not verify index block checksums (requireVerifiedIndex): ${levelBinding.reason}`, 'requireVerifiedIndex');
      warnUnverifiedIndex();
    }
    const root = path.resolve(dir);
    const vfs = options.fs ?? nodeVfs;
    const descriptorFile = path.join(root, DESCRIPTOR_FILE);
    let masterKey: Uint8Array;
    let databaseId: Buffer;
    let descriptor: Descriptor;
    if (await vfs.exists(descriptorFile)) {
      descriptor = await readDescriptor(descriptorFile, vfs);
      masterKey = await unlock(descriptor, creds);
      databaseId = fromHex(descriptor.databaseId, 16)!;
    } else {
      if (options.create === false) throw new NotFoundError(`no OuroDB database in ${root}`);
      // A directory with blocks or an index but no descriptor lost its key slots: refuse to
      // create a new database over it, which would make the old data unreadable for good.
      if ((await existsOnDisk(path.join(root, 'index'))) || (await vfs.exists(path.join(root, 'blocks')))) {
        throw new CorruptionError(`${root} holds OuroDB data but no ${DESCRIPTOR_FILE}`, { location: { file: descriptorFile } });
      }
      await ensureDir(vfs, root);
      const created = await createDescriptor(descriptorFile, creds, vfs);
      masterKey = created.masterKey;
      databaseId = created.databaseId;
      descriptor = created.descriptor;
    }

    const store = new BlockStore(vfs, root, databaseId);
    await store.init();
    const dbKeys = new DatabaseKeys(masterKey, databaseId);
    let { ldb, rebuild } = await openIndex(root);
    // A test file system that "loses power" takes the process with it: release the index at once.
    vfs.crashed?.then(() => ldb.close().catch(() => {}));
    for (let attempt = 0; ; attempt++) {
      let db: OuroDB | undefined;
      try {
        rebuild = await checkIndexFormat(ldb, root, store, rebuild);
        if (rebuild) await rebuildFromBlocks(ldb, store, dbKeys);
        const stats = decodeStats(ldb.getSync(keys.meta('stats')));
        const nextSeqBytes = ldb.getSync(keys.meta('nextSeq'));
        const chunker = new Chunker(gearTable(masterKey, databaseId), options.chunkSizes ?? DEFAULT_CHUNK_SIZES);
        db = new OuroDB(root, new IndexStore(ldb, stats), dbKeys, chunker, store, options, nextSeqBytes ? Number(nextSeqBytes.readBigUInt64LE(0)) : 1);
        db.#descriptor = descriptor;
        const opened = db;
        vfs.crashed?.then(() => opened.#lost());
        await db.#recover();
        return db;
      } catch (err) {
        if (db) await db.#abandon();
        await ldb.close().catch(() => {});
        // LevelDB noticed damage in its tables while recovery read them: the index cannot be
        // trusted. Set it aside, like one that does not open, and rebuild it from the blocks.
        if (attempt > 0 || !indexDamage(err)) throw err;
        await setIndexAside(root);
        ({ ldb } = await openIndex(root));
        rebuild = true;
      }
    }
  }

  /**
   * Rebuilds every index from the block files alone (see lib/rebuild.ts), after sealing what is
   * pending. Writes wait while it runs. The rebuilt index answers every query as before.
   */
  async rebuildIndex(): Promise<RebuildReport> {
    this.#life.checkWritable();
    let release!: () => void;
    const exclusive = new Promise<void>((r) => (release = r));
    while (this.#life.exclusive) await this.#life.exclusive;
    this.#life.beginExclusive(exclusive);
    try {
      for (let run = this.#collector.running; run; run = this.#collector.running) await run.catch(() => {});
      await this.#flush();
      await this.#index.settled();
      const report = await rebuildIndex(this.#index.ldb, this.#store, this.#keys, this.#blocks.nextSeq, encodeStats);
      this.#index.resetStats(report.stats);
      this.#blocks.reset(report.nextSeq);
      this.#reader.clear();
      return report;
    } catch (err) {
      this.#index.fail(err);
      throw err;
    } finally {
      this.#life.endExclusive();
      release();
    }
  }

  // ---------------------------------------------------------------- recovery

  /**
   * Brings the directory back to a state where every acknowledged entry is findable:
   * 1. sealed block files the index does not know (a crash between rename and registration) are
   *    verified entry by entry and registered, which also drops their WAL records;
   * 2. open block files are cut back to the end of their last WAL-recorded entry (bytes beyond it
   *    were never acknowledged) and sealed; files with no WAL record at all are removed;
   * 3. WAL records whose bytes are in neither place mean acknowledged data is missing: that is
   *    reported as corruption rather than silently dropped.
   */
  async #recover(): Promise<void> {
    // 0. gc removals a crash interrupted: the block is unregistered, only its file may remain.
    const retired = new Set<string>();
    for await (const [k, v] of this.#index.ldb.iterator(keys.range(PREFIX_RETIRED))) {
      retired.add(toHex(k.subarray(1)));
      await this.#snapshots.removeRetired(Buffer.from(k.subarray(1)), Number(v.readBigUInt64LE(0)));
    }
    // 1, 2. Unknown sealed blocks registered, open blocks cut back to their WAL records.
    const received = await recoverWal(this.#index, this.#store, this.#blocks, retired);
    for (const file of received) {
      try {
        await this.#adopter.adoptNow(file);
      } catch (err) {
        // Merging its versions read records in blocks this member does not keep, and no cluster
        // node serves the database yet: finished once one does (setReplicaSource). Never
        // acknowledged to its sender, so nothing waits on it meanwhile.
        if (!isMissingFile(err) || this.#replicas) throw err;
        this.#adopter.defer(file);
      }
    }
    // On a full disk a recovered block stays open (readable, its WAL records kept) and is sealed
    // once there is room: opening must not need free space.
    await this.#blocks.sealRecovered();
  }

  // ---------------------------------------------------------------- writes

  /** Stores a value. Resolves to its object hash once it is durable (see PutOptions.durability). */
  async put(value: PutValue, options: PutOptions = {}): Promise<PutResult> {
    const { meta, durability, link } = this.#putArgs(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    return this.#life.tracked(this.#putValue(value, meta, durability, link));
  }

  /**
   * matchHint and put in one, for a caller that would read the value only to put it (ouro put,
   * for each file). When the key's head carries `options.hint` (as matchHint tells), resolves to
   * `{ hash: head, read: false }` without calling `read`; else puts what `read()` gives, with
   * these options, and resolves to its PutResult with `read: true`. The key's heads and hint row
   * are looked up once for the check and the put (with matchHint then put, each looked them up),
   * and no other write of the key comes between them: the key's lock is held from the check to
   * the end of the put, the read included.
   */
  async putHinted(read: () => PutValue | Promise<PutValue>, options: PutOptions & { key: string; hint: Uint8Array }): Promise<(PutResult & { read: true }) | { hash: string; read: false }> {
    if (typeof read !== 'function') throw new BadArgumentError('read must be a function giving the value');
    if (options === null || typeof options !== 'object' || options.key === undefined || options.hint === undefined) throw new BadArgumentError('putHinted needs options.key and options.hint');
    const { meta, durability, link } = this.#putArgs(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    const key = link.key!;
    return this.#life.tracked(
      this.#heads.withKey(key.name, async () => {
        const pending = this.#heads.queued(key.name);
        const { heads, row, tag, match } = this.#heads.checkHint(key, link.hint!);
        if (match) return { hash: toHex(heads[0]!.hash), read: false as const };
        const value = await read();
        link.held = { heads, ...(pending ? {} : { hintRow: row, hintTag: tag }) };
        return { ...(await this.#putValue(value, meta, durability, link)), read: true as const };
      }),
    );
  }

  /** The checked arguments of a put. */
  #putArgs(options: PutOptions): { meta: Record<string, string>; durability: Durability; link: Link } {
    this.#life.checkWritable();
    if (options === null || typeof options !== 'object') throw new BadArgumentError('options must be an object');
    const meta = validateMeta(options.meta);
    const durability = options.durability ?? this.#durability;
    if (durability !== 'durable' && durability !== 'relaxed') throw new BadArgumentError("durability must be 'durable' or 'relaxed'");
    const link = this.#link(options);
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new BadArgumentError('signal must be an AbortSignal');
    link.signal = options.signal;
    link.signal?.throwIfAborted();
    return { meta, durability, link };
  }

  /**
   * Advanced, for import (lib/archive.ts): puts a value given as its chunks, each piece stored as
   * one chunk exactly as given instead of being cut by this database's chunker, and never inline
   * (an inline value is put with `put`). A database holding the same master key and id as the one
   * that made a record then makes the same record again, byte for byte, and so the same hash,
   * whatever chunk sizes either was opened with. Takes the options of `put`; at least one piece,
   * none empty.
   */
  async putCut(pieces: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    if (pieces === null || typeof pieces !== 'object' || !(Symbol.asyncIterator in pieces || Symbol.iterator in pieces)) throw new BadArgumentError('pieces must be an iterable of Uint8Array');
    const { meta, durability, link } = this.#putArgs(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    const checked = async function* (): AsyncGenerator<Uint8Array> {
      for await (const piece of pieces) {
        if (!(piece instanceof Uint8Array) || piece.byteLength === 0) throw new BadArgumentError('putCut takes non-empty Uint8Array pieces');
        yield piece;
      }
    };
    return this.#life.tracked(this.#put(checked(), meta, durability, link, true));
  }

  #putValue(value: PutValue, meta: Record<string, string>, durability: Durability, link: Link): Promise<PutResult> {
    const small = smallValue(value);
    return small ? this.#putRecord(small, [], meta, durability, link) : this.#put(value, meta, durability, link);
  }

  /**
   * The value's chunks. `owned` says whether each chunk is a buffer of its own that nobody else
   * holds (stream chunks are copied out of the source by the chunker) and so may be handed to a
   * seal worker without a copy; chunks of a caller's Uint8Array are views of it and are not.
   */
  #chunksOf(value: PutValue): { source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>; owned: boolean } {
    if (typeof value === 'string') return { source: this.#chunker.chunkBytes(Buffer.from(value, 'utf8')), owned: false };
    if (value instanceof Uint8Array) return { source: this.#chunker.chunkBytes(value), owned: false };
    if (value instanceof Readable || (value !== null && typeof value === 'object' && Symbol.asyncIterator in value)) {
      return { source: this.#chunker.chunkStream(value as AsyncIterable<Uint8Array>, (n) => this.#sealPool.buffers.take(n)), owned: true };
    }
    throw new BadArgumentError('value must be a Uint8Array, a string, a Readable or an AsyncIterable<Uint8Array>');
  }

  /** `cut`: `value` is the chunks themselves (putCut), not a value for the chunker. */
  async #put(value: PutValue, meta: Record<string, string>, durability: Durability, link: Link, cut = false): Promise<PutResult> {
    link.epoch = this.#commit.diskFullEpoch;
    const { source, owned } = cut ? { source: value as AsyncIterable<Uint8Array>, owned: false } : this.#chunksOf(value);
    const chunks: ChunkRef[] = [];
    // Pins end when the record's commit lands (not when a relaxed put returns, which is earlier).
    let settled: Promise<void> = Promise.resolve();
    link.onQueued = (committed) => (settled = committed);
    try {
      return await this.#putChunked(source, owned, chunks, meta, durability, link, cut);
    } finally {
      const unpin = () => {
        for (const c of chunks) if (c.id !== NO_ID) this.#held.unpin(toHex(c.id));
      };
      settled.then(unpin, unpin);
    }
  }

  async #putChunked(source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, owned: boolean, chunks: ChunkRef[], meta: Record<string, string>, durability: Durability, link: Link, cut = false): Promise<PutResult> {
    // Up to SEAL_AHEAD chunks are being sealed while the next ones are cut and hashed. Every one
    // is appended (queued for commit) before the object record is, which is what lets the put
    // wait on the record's commit alone (commits go in queue order).
    const sealing: Promise<unknown>[] = [];
    const store = (chunk: Uint8Array) => {
      const p = this.#storeChunk(chunk, chunks, owned);
      p.catch(() => {});
      sealing.push(p);
    };
    // A first chunk small enough to go inline is held back until we know whether more follow.
    let held: Uint8Array | undefined;
    for await (const chunk of source) {
      link.signal?.throwIfAborted();
      if (held) {
        store(held);
        held = undefined;
      }
      if (!cut && chunks.length === 0 && chunk.byteLength <= INLINE_MAX_BYTES) held = chunk;
      else store(chunk);
      if (sealing.length >= SEAL_AHEAD) await sealing.shift();
    }
    await Promise.all(sealing);
    if (cut && chunks.length === 0) throw new BadArgumentError('putCut needs at least one piece (an empty value is put inline, with put)');
    // A value with no bytes at all is an empty inline value, as put(new Uint8Array(0)) makes it:
    // one value, one record, whatever form it came in.
    if (!held && chunks.length === 0) held = EMPTY;
    return this.#putRecord(held ?? null, chunks, meta, durability, link);
  }

  /**
   * Stores one chunk. Its place in `chunks` is taken at once, so the list keeps value order
   * whatever order the seal pool answers in. Large chunks are hashed and sealed on the pool;
   * small ones too, in batches, while other puts are in flight (sealed before the dedup check:
   * see lib/seal-pool.ts); a lone put's small chunk here.
   */
  #storeChunk(chunk: Uint8Array, chunks: ChunkRef[], owned: boolean): Promise<unknown> {
    const size = chunk.byteLength;
    if (size < OFFLOAD_MIN_BYTES && this.#life.inFlightCount >= SMALL_OFFLOAD_INFLIGHT) {
      // Mostly stored already (a tree put again): the id here and the dedup check first, so a
      // chunk found stored costs no round trip to the pool, nor a seal that would be dropped.
      if (this.#smallHits >= SMALL_HITS_CHECK_FIRST) {
        const id = this.#keys.chunkId(chunk);
        const idHex = toHex(id);
        const inflight = this.#held.pending(idHex);
        if (inflight || this.#held.isStored(keys.chunk(id), idHex)) {
          // As #store_ answers for a stored chunk: the entry on its way, or none once committed.
          this.#smallHit(true);
          chunks.push({ id, size });
          this.#held.pin(idHex);
          return Promise.resolve(inflight);
        }
      }
      const at = chunks.push({ id: NO_ID, size }) - 1;
      return this.#sealPool.sealSmall(EntryKind.Chunk, chunk, this.#compression).then(({ id, sealed }) => {
        chunks[at] = { id, size };
        this.#held.pin(toHex(id));
        let found = false;
        const stored = this.#commit.store(EntryKind.Chunk, id, () => sealed, 0, 0, () => (found = true));
        this.#smallHit(found); // #store_ tells a stored chunk before its first await
        return stored;
      });
    }
    if (size < OFFLOAD_MIN_BYTES) {
      const id = this.#keys.chunkId(chunk);
      chunks.push({ id, size });
      this.#held.pin(toHex(id));
      return this.#commit.store(EntryKind.Chunk, id, () => sealEntry(this.#keys.data, EntryKind.Chunk, id, chunk, this.#compression), 0, 0);
    }
    const at = chunks.push({ id: NO_ID, size }) - 1;
    return this.#sealPool.identify(chunk, owned).then((ticket) => {
      chunks[at] = { id: ticket.id, size };
      this.#held.pin(toHex(ticket.id));
      return this.#commit.store(EntryKind.Chunk, ticket.id, () => this.#sealPool.seal(ticket, EntryKind.Chunk, this.#compression), 0, 0, () => this.#sealPool.drop(ticket));
    });
  }

  /** Scores a small chunk found stored (or not): SMALL_HITS_CHECK_FIRST of the last ~16 found makes #storeChunk look before sealing. */
  #smallHit(found: boolean): void {
    this.#smallHits += ((found ? 16 : 0) - this.#smallHits) / 16;
  }

  /** Stores the object record of a value whose chunks are stored (or that goes inline). */
  async #putRecord(inline: Uint8Array | null, chunks: ChunkRef[], meta: Record<string, string>, durability: Durability, link: Link): Promise<PutResult> {
    const size = inline ? inline.byteLength : chunks.reduce((n, c) => n + c.size, 0);
    const record: ObjectRecord = { type: 'value', size, chunks, key: null, parent: link.parent, prev: [], created: link.created ?? Date.now(), meta, inline };
    const hash = await this.#writeRecord(record, link, durability);
    return { hash: toHex(hash), size, ...(link.kept ? { unchanged: true } : {}) };
  }

  /**
   * Writes an object record with its index changes: chunk references, the parent's child key and,
   * for a keyed record, the key's heads and history. They commit in the record's own batch, so
   * after a crash either all of them exist or none. Keyed records are built under the key's lock:
   * reading the heads, the compare-and-set check and queueing the record happen with no other put
   * of that key in between.
   */
  async #writeRecord(record: ObjectRecord, link: Link, durability: Durability): Promise<Buffer> {
    link.signal?.throwIfAborted();
    this.#checkDiskFullEpoch(link);
    const chunkIds = record.chunks.map((c) => c.id);
    const prepare = chunkIds.length === 0 ? undefined : () => {
      for (const id of chunkIds) this.#index.changeRef(id, +1);
    };
    const inlineSize = record.inline ? record.inline.byteLength : 0;
    if (!link.key) {
      if (link.parent) this.#checkParent(link.parent);
      const { hash, store } = await this.#identifyRecord(encodeRecord(record));
      checkExpected(link, hash);
      this.#checkDiskFullEpoch(link); // again: the pool's round trip was a window for a failure
      const ops = link.parent ? [{ type: 'put' as const, key: keys.child(link.parent, hash), value: EMPTY }] : undefined;
      const entry = await store(record.size, inlineSize, { ops, prepare, epoch: link.epoch });
      if (entry) link.onQueued?.(entry.committed);
      if (entry) await (durability === 'durable' ? entry.committed : entry.written);
      return hash;
    }
    const key = link.key;
    const write = async () => {
      const current = link.held?.heads ?? this.#heads.headsOf(key);
      if (link.ifHead !== undefined) checkHeads(key.name, link.ifHead, current);
      const compared = link.hint || link.ifChanged ? comparedFields(record, link.ifChanged?.ignoreMeta ?? NO_NAMES) : undefined;
      if (link.ifChanged && current.length === 1 && !current[0]!.tombstone && !link.prev) {
        const head = current[0]!;
        await this.#heads.keySettled(key.name);
        // The head's content tag, when a hinted put left one, answers without reading its record.
        const contentTag = this.#heads.contentTag(key.bytes, head.hash, compared!);
        const row = link.held && 'hintRow' in link.held ? link.held.hintRow : this.#index.get(keys.hint(key.bytes));
        if (rowHasContent(row, contentTag) || comparedFields(await this.#reader.record(head.hash), link.ifChanged.ignoreMeta).equals(compared!)) {
          if (link.hint) this.#heads.keepHint(key.bytes, head.hash, link.hint, contentTag, link.held?.hintTag);
          link.kept = true;
          return { hash: head.hash, stored: undefined };
        }
      }
      // After ifChanged: an unchanged file's parent is its head's, and its put writes nothing.
      if (link.parent) this.#checkParent(link.parent);
      const prevHeads = link.prev ? await this.#heads.versionsNamed(key, link.prev) : current;
      record.key = key.name;
      record.prev = prevHeads.map((h) => h.hash).sort(Buffer.compare);
      const { hash, store } = await this.#identifyRecord(encodeRecord(record));
      checkExpected(link, hash);
      this.#checkDiskFullEpoch(link);
      const n = versionNumber(prevHeads);
      const heads = nextHeads(current, record.prev, { hash, n, tombstone: record.type === 'tombstone' });
      const ops: BatchOp[] = [
        { type: 'put', key: keys.heads(key.bytes), value: encodeHeads(heads) },
        { type: 'put', key: keys.version(key.bytes, n, hash), value: EMPTY },
      ];
      if (link.parent) ops.push({ type: 'put', key: keys.child(link.parent, hash), value: EMPTY });
      // A hint belongs to the head it came with: a later head without one leaves the row stale,
      // which matchHint() tells by the head hash in its tags; a delete drops it.
      if (link.hint) ops.push({ type: 'put', key: keys.hint(key.bytes), value: this.#heads.hintRow(key.bytes, hash, link.hint, this.#heads.contentTag(key.bytes, hash, compared!)) });
      else if (record.type === 'tombstone') ops.push({ type: 'del', key: keys.hint(key.bytes) });
      const stored = await store(record.size, inlineSize, { ops, prepare, epoch: link.epoch });
      if (stored?.id === hash) this.#heads.overlay(key.name, heads, current, stored);
      if (stored) link.onQueued?.(stored.committed);
      return { hash, stored };
    };
    // putHinted holds the key's lock already.
    const entry = await (link.held ? write() : this.#heads.withKey(key.name, write));
    if (entry.stored) await (durability === 'durable' ? entry.stored.committed : entry.stored.written);
    return entry.hash;
  }

  /**
   * A chunk this value shares with a write that failed for lack of space may be gone with it.
   * Rather than trace which, a put that saw such a failure fails too (records after a failed
   * entry in the queue are rejected with it the same way; see #rejectFrom).
   */
  #checkDiskFullEpoch(link: Link): void {
    if (link.epoch !== undefined && link.epoch !== this.#commit.diskFullEpoch) throw new DiskFullError('the disk filled up while this value was written; nothing of it was kept');
  }

  /**
   * An encoded object record's hash and how to store it. While a group commit is under way, or
   * other puts are in flight, a small record joins the open pack (#joinPack): it would wait for
   * the next group anyway, and sharing that group's pack spares it its own compression frame,
   * encryption and footer row.
   * Otherwise, while other puts are in flight, the record goes to the seal pool, batched with
   * theirs (SealPool.sealSmall), so the HMAC and the sealing leave the main thread; a put on its
   * own keeps them here and skips the worker's round trip. A record that turns out to be stored
   * already was sealed for nothing; records carry their creation time, so that is rare.
   */
  async #identifyRecord(bytes: Buffer): Promise<{ hash: Buffer; store: (objectSize: number, inlineSize: number, extra: RecordExtra) => Promise<PendingEntry | undefined> }> {
    if ((this.#commit.committing || this.#life.inFlightCount >= SMALL_OFFLOAD_INFLIGHT) && bytes.byteLength <= PACK_RECORD_MAX_BYTES) {
      const hash = this.#keys.objectId(bytes);
      return { hash, store: async (objectSize, inlineSize, extra) => this.#commit.joinPack(hash, bytes, objectSize, inlineSize, extra) };
    }
    let hash: Buffer;
    let seal: () => SealedEntry;
    if (this.#life.inFlightCount >= SMALL_OFFLOAD_INFLIGHT && bytes.byteLength <= SMALL_BATCH_MAX_BYTES) {
      const { id, sealed } = await this.#sealPool.sealSmall(EntryKind.Object, bytes, this.#compression);
      hash = id;
      seal = () => sealed;
    } else {
      const h = this.#keys.objectId(bytes);
      hash = h;
      seal = () => sealEntry(this.#keys.data, EntryKind.Object, h, bytes, this.#compression);
    }
    return { hash, store: (objectSize, inlineSize, extra) => this.#commit.store(EntryKind.Object, hash, seal, objectSize, inlineSize, undefined, extra) };
  }

  // ---------------------------------------------------------------- keys and versions

  /** Parses and checks the key, parent and compare-and-set options of a put. */
  #link(options: PutOptions): Link {
    const parent = options.parent === undefined || options.parent === null ? null : parseHash(options.parent, 'parent');
    const expect = options.expectHash === undefined ? {} : { expect: parseHash(options.expectHash, 'expectHash') };
    if (options.key === undefined) {
      if (options.ifHead !== undefined || options.prev !== undefined || options.hint !== undefined) throw new BadArgumentError('ifHead, prev and hint need a key');
      return { parent, ...created(options.created), ...expect };
    }
    const key = { name: options.key, bytes: keyBytes(options.key) };
    const link: Link = { key, parent, ...created(options.created), ...ifChangedOf(options.ifChanged), ...hintOf(options.hint), ...expect };
    if (options.ifHead !== undefined) {
      if (options.ifHead === null) link.ifHead = null;
      else link.ifHead = (Array.isArray(options.ifHead) ? options.ifHead : [options.ifHead]).map((h) => parseHash(h, 'ifHead'));
    }
    if (options.prev !== undefined) {
      if (!Array.isArray(options.prev)) throw new BadArgumentError('prev must be an array of hashes');
      link.prev = options.prev.map((h) => parseHash(h, 'prev'));
    }
    return link;
  }

  #checkParent(parent: Buffer): void {
    const hex = toHex(parent);
    if (this.#held.isPending(hex) || this.#index.get(keys.object(parent)) !== undefined) return;
    throw new NotFoundError(`parent ${hex} does not exist`);
  }

  /** The value under `key`: its newest head's. A deleted (tombstoned) or unknown key is NotFoundError. */
  async getByKey(key: string): Promise<Uint8Array> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const head = this.#heads.newestHead(keyBytes(key));
    if (!head || head.tombstone) throw new NotFoundError(`no value under key ${JSON.stringify(key)}${head ? ' (deleted)' : ''}`);
    const record = await this.#reader.record(head.hash);
    if (record.inline) return record.inline;
    const parts: Uint8Array[] = [];
    for await (const part of this.#reader.stream(record)) parts.push(part);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The newest head of `key` (a tombstone's hash once deleted), or null if the key has no version. */
  async head(key: string): Promise<string | null> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const head = this.#heads.newestHead(keyBytes(key));
    return head ? toHex(head.hash) : null;
  }

  /**
   * The head of `key` if it was put, or last kept by `ifChanged`, with exactly this `hint`
   * (PutOptions.hint), and is still the key's only head and a value (a version queued but not yet
   * committed counts as the head); else null. A later put without a hint, a second head or a
   * delete retire a hint, and so does an index rebuild.
   * The index keeps only a keyed tag of the hint (index/values.ts), so a hint can be matched,
   * never read back.
   */
  async matchHint(key: string, hint: Uint8Array): Promise<string | null> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const check = this.#heads.checkHint({ name: key, bytes: keyBytes(key) }, hint);
    return check.match ? toHex(check.heads[0]!.hash) : null;
  }

  /** Every head of `key`, newest first (one unless concurrent versions are unmerged). */
  async heads(key: string): Promise<string[]> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const stored = this.#index.get(keys.heads(keyBytes(key)));
    return stored ? sortHeads(decodeHeads(stored)).map((h) => toHex(h.hash)) : [];
  }

  /**
   * Keys in byte order of their UTF-8, with their heads. Reads one LevelDB iterator, which sees
   * a single consistent state however long the listing runs; it streams, so a listing of
   * millions of keys holds only the current entry.
   */
  list(options: ListOptions = {}): AsyncGenerator<ListEntry> {
    return this.#query.list(options);
  }

  /**
   * The versions of `key`, newest first (by version number, ties by hash), tombstones included.
   * Reads from one LevelDB snapshot: versions written meanwhile are not seen, and gc keeps the
   * block files this snapshot's locations name until the iteration ends.
   */
  history(key: string, options: { limit?: number } = {}): AsyncGenerator<Version> {
    return this.#query.history(key, options);
  }

  /** Objects put with `parent: hash`, in hash order, a page at a time. */
  children(hash: string, options: { after?: string; limit?: number } = {}): Promise<string[]> {
    return this.#query.children(hash, options);
  }

  /** The parent an object was put with, or null. */
  async parent(hash: string): Promise<string | null> {
    const s = await this.stat(hash);
    return s.parent;
  }

  /** Writes a tombstone version: the key reads as deleted, its history keeps every version. */
  async delete(key: string, options: Pick<PutOptions, 'ifHead' | 'durability' | 'prev' | 'created' | 'expectHash'> = {}): Promise<PutResult> {
    this.#life.checkWritable();
    const link = this.#link({ key, ifHead: options.ifHead, prev: options.prev, created: options.created, expectHash: options.expectHash });
    while (this.#life.exclusive) await this.#life.exclusive;
    const record: ObjectRecord = { type: 'tombstone', size: 0, chunks: [], key, parent: null, prev: [], created: link.created ?? Date.now(), meta: {}, inline: null };
    const op = this.#writeRecord(record, link, options.durability ?? this.#durability);
    this.#life.track(op);
    try {
      return { hash: toHex(await op), size: 0 };
    } finally {
      this.#life.untrack(op);
    }
  }

  /**
   * Forgets `key` and every version of it: the versions stop being readable, their chunks lose
   * a reference, and gc() can then reclaim their space. A small purge marker stays in the blocks
   * (so an index rebuilt from them forgets the same versions). Resolves to the number of
   * versions forgotten (0 when the key had none).
   */
  async purge(key: string): Promise<{ versions: number }> {
    this.#life.checkWritable();
    const k = { name: key, bytes: keyBytes(key) };
    while (this.#life.exclusive) await this.#life.exclusive;
    const op = this.#heads.withKey(key, async () => {
      await this.#heads.keySettled(key);
      const before = this.#heads.headsOf(k);
      const versions: Array<{ vkey: Buffer; hash: Buffer }> = [];
      for await (const vk of this.#index.ldb.keys(keys.versionRange(k.bytes))) versions.push({ vkey: vk, hash: Buffer.from(keys.decodeVersion(vk).hash) });
      if (versions.length === 0) return 0;
      const records = await Promise.all(versions.map((v) => this.#reader.record(v.hash)));
      const ops: BatchOp[] = [{ type: 'del', key: keys.heads(k.bytes) }, { type: 'del', key: keys.hint(k.bytes) }];
      versions.forEach((v, i) => {
        ops.push({ type: 'del', key: v.vkey }, { type: 'del', key: keys.object(v.hash) });
        const parent = records[i]!.parent;
        if (parent) ops.push({ type: 'del', key: keys.child(parent, v.hash) });
      });
      const prepare = (_ops: BatchOp[], delta: Partial<PersistedStats>) => {
        this.#reader.evict(versions.map((v) => toHex(v.hash)));
        versions.forEach((v, i) => {
          const r = records[i]!;
          const loc = this.#index.get(keys.object(v.hash));
          if (loc) {
            const l = decodeLocation(loc);
            this.#index.tx.addDead(keys.dead(l.seq), deadBytes(l));
          }
          addStat(delta, 'objects', -1);
          addStat(delta, 'logicalBytes', -r.size);
          if (r.inline) {
            addStat(delta, 'uniqueBytes', -r.inline.byteLength);
            addStat(delta, 'chunkStoredBytes', -r.inline.byteLength);
          }
          for (const c of r.chunks) this.#index.changeRef(c.id, -1);
        });
      };
      const marker: ObjectRecord = { type: 'purge', size: 0, chunks: [], key, parent: null, prev: versions.map((v) => v.hash).sort(Buffer.compare), created: Date.now(), meta: {}, inline: null };
      const bytes = encodeRecord(marker);
      const hash = this.#keys.objectId(bytes);
      const entry = await this.#commit.store(EntryKind.Object, hash, () => sealEntry(this.#keys.data, EntryKind.Object, hash, bytes, this.#compression), 0, 0, undefined, { ops, prepare, marker: true });
      if (entry) {
        this.#heads.overlay(key, [], before, entry);
        await entry.committed;
        // Again after the batch landed: a read between prepare and landing may have cached one.
        this.#reader.evict(versions.map((v) => toHex(v.hash)));
      }
      return versions.length;
    });
    this.#life.track(op);
    try {
      return { versions: await op };
    } finally {
      this.#life.untrack(op);
    }
  }

  /**
   * Seals everything written so far into blocks. Resolves when the blocks are registered, and
   * with `replicas` > 1 once that many cluster members hold them durably.
   */
  async flush(options: FlushOptions = {}): Promise<void> {
    this.#life.checkWritable();
    const replicas = options.replicas ?? 1;
    if (!Number.isSafeInteger(replicas) || replicas < 1) throw new BadArgumentError('replicas must be a positive integer');
    if (replicas > 1 && !this.#replicas) throw new BadArgumentError(`flush({ replicas: ${replicas} }) needs a cluster node serving this database`);
    await this.#flush();
    if (replicas > 1) await this.#replicas!.settled(replicas, options.signal);
  }

  async #flush(): Promise<void> {
    await Promise.allSettled(this.#life.inFlight());
    // Records waiting in a pack are appended by the commit loop, maybe to a block it opens for
    // them: let it finish before rotating, so that the rotation seals them too.
    for (let running = this.#commit.running(); running; running = this.#commit.running()) await running;
    this.#blocks.rotate();
    for (let running = this.#commit.running(); running; running = this.#commit.running()) await running;
    while (this.#blocks.sealingCount > 0) await Promise.allSettled(this.#blocks.sealingTasks());
    // The hints of kept heads (#keepHint) still waiting for a batch, and those batches under way:
    // after a flush, matchHint sees every hint put before it.
    if (!this.#index.failed) await (this.#index.riding > 0 ? this.#index.write([], {}) : this.#index.settled());
    if (this.#index.failed) throw this.#index.failed;
    this.#blocks.checkStuck();
  }

  // ---------------------------------------------------------------- cluster

  /** The database id (hex, from OURODB.json): every keyed member of a cluster shares it. */
  get databaseId(): string {
    return toHex(this.#keys.material.databaseId);
  }

  /**
   * OURODB.json as this database was opened with it: format version, id, creation time and key
   * slots, each the master key wrapped under one credential (never unwrapped). An export carries
   * it, so that an import can make a database of this identity, whose hashes are this one's.
   */
  get descriptor(): Descriptor {
    return structuredClone(this.#descriptor!);
  }

  /** Calls `listener` after each block this database seals (not ones it adopts). Returns an unsubscribe. */
  onSealed(listener: (block: SealedBlockInfo) => void): () => void {
    return this.#blocks.onSealed(listener);
  }

  /** Every registered block, in id order. */
  async *blocks(): AsyncGenerator<BlockListing> {
    this.#life.checkOpen();
    for await (const [k, v] of this.#index.ldb.iterator(keys.range(PREFIX_BLOCK))) {
      const info = decodeBlockInfo(v);
      yield { id: toHex(k.subarray(1)), size: info.size, adopted: info.adopted === true };
    }
  }

  /** Registered block `id` (hex), or undefined. */
  block(id: string): BlockListing | undefined {
    this.#life.checkOpen();
    const v = this.#index.get(keys.block(parseHash(id, 'block id')));
    if (v === undefined) return undefined;
    const info = decodeBlockInfo(v);
    return { id, size: info.size, adopted: info.adopted === true };
  }

  /** Where block `id`'s file lives (whether or not this member keeps it now). */
  blockPath(id: string): string {
    return this.#store.blockPath(parseHash(id, 'block id'));
  }

  /** Connects (or with undefined, disconnects) the cluster node serving this database. */
  setReplicaSource(source: ReplicaSource | undefined): void {
    this.#replicas = source;
    if (!source) return;
    // Adoptions the open had to leave (see #recover); one that fails again waits for the next source.
    this.#adopter.retryDeferred((file) => this.adoptBlock(file));
  }

  /**
   * Takes in a sealed block another member of the cluster wrote: checks it (its structure, its
   * id, every entry against the footer, and every object record against the key: a block of
   * another database or a forged one is refused with CorruptionError), moves `file` to its
   * place among the blocks (same file system), and indexes it in one synced batch, so that
   * get, getByKey, history and children answer from it. Versions of a key written concurrently
   * elsewhere become extra heads (`heads(key)`), never a silent overwrite.
   *
   * The block keeps its id; its seq here is a fresh registration number (flag `adopted` in its
   * block info), since another writer's seqs mean nothing to this index. Entries already known
   * (the same chunk written on two members) keep their location; the copy counts as dead bytes.
   * A crash after the move is finished by the next open. Adopted blocks are never compacted
   * by gc here. Resolves to adopted false when the block was registered already (its file is
   * then left alone if it is the registered one, else removed). `seen`: entry hashes taken as
   * the file was received (blockstore/entry-hashes.ts); when they match, entries are not reread.
   */
  adoptBlock(file: string, seen?: SeenEntries): Promise<{ id: string; adopted: boolean }> {
    this.#life.checkWritable();
    return this.#adopter.adopt(file, seen);
  }

  // ---------------------------------------------------------------- export

  /**
   * Every live object (values, tombstones; not purge markers) as of one snapshot, each after its
   * parent and its predecessors, with a reader of its value from the same snapshot: what an
   * export needs to be consistent while writes go on. Holds ~100 bytes per object for the order.
   */
  objects(): AsyncGenerator<ExportedObject> {
    return this.#query.objects();
  }

  // ---------------------------------------------------------------- check

  /** Verifies the index against the blocks (see lib/check.ts); problems come back as data. */
  async check(options: CheckOptions = {}): Promise<CheckReport> {
    this.#life.checkOpen();
    const sample = options.sample ?? 1;
    if (typeof sample !== 'number' || !(sample >= 0 && sample <= 1)) throw new BadArgumentError('sample must be a number in [0, 1]');
    const reader = this.#snapshots.open();
    const indexes = new Map<string, Promise<EntryRow[]>>();
    try {
      return await checkDatabase(
        {
          ldb: this.#index.ldb,
          snapshot: reader.snapshot,
          store: this.#store,
          keys: this.#keys,
          blockOf: async (seq) => {
            const open = this.#blocks.openRows(seq);
            const id = this.#index.get(keys.sealedSeq(seq), { snapshot: reader.snapshot }) ?? this.#blocks.sealedId(seq);
            if (!id) return open ? { name: openName(seq), file: this.#store.openPath(seq), rows: open } : undefined;
            const file = this.#store.blockPath(id);
            if (!indexes.has(file)) indexes.set(file, this.#store.readIndex(file).then((i) => i.rows));
            return { name: blockName(id), file, rows: await indexes.get(file)! };
          },
          sealing: (seq) => this.#blocks.isUnsealed(seq),
          read: (name, file, offset, length) => this.#blocks.files.read(name, file, offset, length),
        },
        { readData: options.readData ?? false, sample, ...(options.onProgress ? { onProgress: options.onProgress } : {}) },
      );
    } finally {
      await this.#snapshots.close(reader);
    }
  }

  // ---------------------------------------------------------------- gc

  /**
   * Reclaims the space of dead entries (chunks no live object names, records of purged versions).
   * Every sealed block whose live share is below `threshold` is compacted, one at a time:
   *   1. in the batch chain, decide which of its entries are dead and drop them from the index
   *      (a chunk a put in progress has pinned is kept);
   *   2. copy the live entries' bytes (verified against the footer) into the open block, through
   *      the ordinary group commit, whose batch switches their locations;
   *   3. in one batch, unregister the block and mark it retired ('z'), then delete the file once
   *      no reader's snapshot can still name it, then drop the mark.
   * A crash anywhere leaves either the old location or the new one valid (the old file is
   * removed only after every location has moved), and a retired file found on open is deleted.
   * Writers keep writing throughout: gc holds no lock across these steps.
   */
  async gc(options: GcOptions = {}): Promise<GcReport> {
    this.#life.checkWritable();
    const threshold = options.threshold ?? 0.5;
    if (typeof threshold !== 'number' || !(threshold >= 0 && threshold <= 1)) throw new BadArgumentError('threshold must be a number in [0, 1]');
    return this.#collector.collect(threshold, options.onProgress);
  }

  /**
   * Lets go of block `id` (hex), which the member that sealed it deleted across the cluster: every
   * index entry naming it moves to another adopted copy of the same entry when there is one (the
   * writer's gc put the live entries into newer blocks, adopted here after it), else is copied
   * into this database's open block (this member still needs it), else, a chunk nothing names,
   * is dropped. Then the block is unregistered and tombstoned (never adopted again) in one batch.
   * Its file stays until the cluster deletes every copy: another member may still copy from it.
   * A block this database never knew is tombstoned at once. Refused for a block it sealed itself
   * (only its own gc retires those).
   */
  async releaseBlock(id: string): Promise<ReleaseReport> {
    this.#life.checkWritable();
    const block = parseHash(id, 'block id');
    return this.#collector.release(block);
  }

  /** The tombstone state of block `id` (hex), or undefined when it was never deleted across the cluster. */
  tombstone(id: string): TombstoneState | undefined {
    this.#life.checkOpen();
    const v = this.#index.get(keys.tombstone(parseHash(id, 'block id')));
    return v === undefined ? undefined : (v[0] as TombstoneState);
  }

  /** Every tombstone in `states`, in id order. */
  async *tombstones(states: readonly TombstoneState[] = [Tombstone.Released, Tombstone.Retired, Tombstone.Dropping]): AsyncGenerator<{ id: string; state: TombstoneState }> {
    this.#life.checkOpen();
    for await (const [k, v] of this.#index.ldb.iterator(keys.range(PREFIX_TOMBSTONE))) {
      if (states.includes(v[0] as TombstoneState)) yield { id: toHex(k.subarray(1)), state: v[0] as TombstoneState };
    }
  }

  /** Moves a block this database retired on to its next deletion state (durably). */
  async setTombstone(id: string, state: TombstoneState): Promise<void> {
    this.#life.checkWritable();
    const block = parseHash(id, 'block id');
    if (this.#index.get(keys.tombstone(block)) === undefined) throw new NotFoundError(`block ${id} has no tombstone`);
    await this.#index.write([{ type: 'put', key: keys.tombstone(block), value: Buffer.from([state]) }], {});
  }

  // ---------------------------------------------------------------- reads

  /** The whole value. For large values prefer stream(). */
  async get(hash: string): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const part of this.stream(hash)) parts.push(part);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The value chunk by chunk, reading a few chunks ahead; memory stays bounded. */
  async *stream(hash: string): AsyncGenerator<Uint8Array> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const id = parseHash(hash);
    yield* this.#reader.stream(await this.#reader.record(id));
  }

  async has(hash: string): Promise<boolean> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    return this.#index.get(keys.object(parseHash(hash))) !== undefined;
  }

  async stat(hash: string): Promise<ObjectStat> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const id = parseHash(hash);
    const r = await this.#reader.record(id);
    return {
      hash: toHex(id),
      type: r.type,
      size: r.size,
      chunks: r.chunks.length,
      inline: r.inline !== null,
      created: new Date(r.created),
      key: r.key,
      parent: r.parent ? toHex(r.parent) : null,
      prev: r.prev.map(toHex),
      meta: r.meta,
    };
  }

  // ---------------------------------------------------------------- stats and lifecycle

  /**
   * A 32-byte key for a component that keeps its own secrets under this database's credential
   * (the cluster node seals its identity with `deriveKey('node-identity')`): HKDF-SHA256 of the
   * master key, salted with the database id, info `ourodb/v1/derived/<purpose>`. Distinct from
   * every key the database uses itself, and from each other purpose's.
   */
  deriveKey(purpose: string): Uint8Array {
    if (!/^[a-z][a-z0-9-]{0,63}$/.test(purpose)) throw new BadArgumentError('purpose must be lowercase letters, digits and dashes');
    return deriveKey(this.#keys.material.masterKey, this.#keys.material.databaseId, `ourodb/v1/derived/${purpose}`);
  }

  async stats(): Promise<Stats> {
    this.#life.checkOpen();
    await this.#index.settled();
    const s = this.#index.stats;
    return {
      objects: s.objects,
      chunks: s.chunks,
      logicalBytes: s.logicalBytes,
      uniqueBytes: s.uniqueBytes,
      storedBytes: s.storedBytes + this.#openHeaderBytes(),
      dedupRatio: s.uniqueBytes === 0 ? 1 : s.logicalBytes / s.uniqueBytes,
      compressionRatio: s.chunkStoredBytes === 0 ? 1 : s.uniqueBytes / s.chunkStoredBytes,
      blocks: s.blocks,
      walRecords: s.walRecords,
      walBytes: s.walEntryBytes + s.walRecords * (WAL_RECORD_BYTES + 17),
      indexReadsVerified: levelBinding.verified,
    };
  }

  #openHeaderBytes(): number {
    return this.#blocks.openCount * HEADER_BYTES;
  }

  /** Number of sealed blocks the index knows (counted from the index itself, for tests and checks). */
  async countBlocks(): Promise<number> {
    let n = 0;
    for await (const _ of this.#index.ldb.keys(keys.range(PREFIX_BLOCK))) n++;
    return n;
  }

  /** Waits for writes in flight, seals what is pending, and closes every file. */
  async close(): Promise<void> {
    return this.#life.closeOnce(async () => {
      try {
        // A block a full disk keeps from sealing stays open with its WAL records: the next open
        // seals it. Closing must not need free space.
        if (!this.#index.failed) await this.#flush().catch((err: unknown) => {
          if (!isDiskFull(err)) throw err;
        });
        if (!this.#index.failed) {
          for (const r of this.#snapshots.readers()) await this.#snapshots.close(r);
          await this.#snapshots.removeDeferred(true);
          if (this.#index.riding > 0) await this.#index.write([], {});
          await this.#index.compactTail();
        }
      } finally {
        this.#life.markClosed();
        await this.#sealPool.close();
        await this.#blocks.files.closeAll();
        await this.#index.ldb.close();
      }
    });
  }

  /** The file system under the handle died (a test Vfs's `crashed`): stop as a killed process would. */
  #lost(): void {
    if (this.#life.closed) return;
    this.#index.latch(new FailedError('the file system was lost'));
    void this.#abandon().catch(() => {});
    void this.#index.ldb.close().catch(() => {});
  }

  /** Releases what a half-opened handle holds (worker threads, file handles), writing nothing. */
  async #abandon(): Promise<void> {
    this.#life.markClosed();
    await this.#sealPool.close();
    await this.#blocks.files.closeAll();
  }


}

/** PutOptions.expectHash: the record about to be written must have that hash. */
function checkExpected(link: Link, hash: Buffer): void {
  if (link.expect && !link.expect.equals(hash)) throw new CorruptionError(`the record made hashes to ${toHex(hash)}, not to ${toHex(link.expect)} (expectHash): nothing written`);
}

/** The largest hint a put accepts (it is hashed on every match, so it stays small). */
const HINT_MAX_BYTES = 1024;
/** PutOptions.hint, checked, as Link.hint. */
function hintOf(option: PutOptions['hint']): Pick<Link, 'hint'> {
  if (option === undefined) return {};
  if (!(option instanceof Uint8Array)) throw new BadArgumentError('hint must be a Uint8Array');
  if (option.byteLength > HINT_MAX_BYTES) throw new BadArgumentError(`a hint is at most ${HINT_MAX_BYTES} bytes, not ${option.byteLength}`);
  return { hint: Buffer.from(option) };
}

/** PutOptions.ifChanged, checked, as Link.ifChanged. */
function ifChangedOf(option: PutOptions['ifChanged']): Pick<Link, 'ifChanged'> {
  if (option === undefined || option === false) return {};
  if (option === true) return { ifChanged: { ignoreMeta: new Set() } };
  if (typeof option !== 'object' || option === null || !Array.isArray(option.ignoreMeta) || !option.ignoreMeta.every((k) => typeof k === 'string')) {
    throw new BadArgumentError('ifChanged must be a boolean or { ignoreMeta: string[] }');
  }
  return { ifChanged: { ignoreMeta: new Set(option.ignoreMeta) } };
}

function created(value: unknown): { created?: number } {
  if (value === undefined) return {};
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0) throw new BadArgumentError('created must be a Date or a non-negative integer of milliseconds');
  return { created: ms };
}

/** The compare-and-set check of `ifHead`: the key's heads must be exactly the ones named. */
function checkHeads(name: string, expected: Buffer[] | null, current: Head[]): void {
  const want = (expected ?? []).map(toHex).sort();
  const have = current.map((h) => toHex(h.hash)).sort();
  if (want.length === have.length && want.every((h, i) => h === have[i])) return;
  throw new ConflictError(`key ${JSON.stringify(name)} has heads [${have.join(', ')}], not [${want.join(', ')}]`, want, have);
}

/** Whether a key's hint row (if any) carries `contentTag`: its head has these compared fields. */
function rowHasContent(row: Buffer | undefined, contentTag: Buffer): boolean {
  return row !== undefined && crypto.timingSafeEqual(decodeHintRow(row).contentTag, contentTag);
}

/** The bytes of a string or Uint8Array value small enough to be stored inline, else undefined. */
function smallValue(value: PutValue): Uint8Array | undefined {
  if (value instanceof Uint8Array) return value.byteLength <= INLINE_MAX_BYTES ? value : undefined;
  // UTF-8 takes at most 3 bytes per UTF-16 code unit: skip encoding strings that cannot fit.
  if (typeof value === 'string' && value.length <= INLINE_MAX_BYTES) {
    const bytes = Buffer.from(value, 'utf8');
    return bytes.byteLength <= INLINE_MAX_BYTES ? bytes : undefined;
  }
  return undefined;
}

function validateMeta(meta: unknown): Record<string, string> {
  if (meta === undefined) return {};
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new BadArgumentError('meta must be a Record<string, string>');
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw new BadArgumentError(`meta.${k} must be a string`);
  }
  return { ...(meta as Record<string, string>) };
}

/**
 * Opening with a lost or corrupt index: open block files lost their WAL records with it, so each
 * keeps the longest prefix of entries that authenticate under the key and is sealed; then every
 * index is rebuilt from the sealed blocks.
 */
async function rebuildFromBlocks(ldb: Ldb, store: BlockStore, dbKeys: DatabaseKeys): Promise<void> {
  await ldb.put(keys.meta('rebuilding'), Buffer.from([1]), { sync: true });
  let maxSeq = 0;
  for (const seq of await store.listOpen()) {
    const file = store.openPath(seq);
    const rows = await store.scanOpen(seq, (entry, offset) => {
      try {
        openEntry(dbKeys.data, entry, { id: entry.subarray(12, 44), kind: entry[0] as EntryKind }, file, offset);
        return true;
      } catch {
        return false;
      }
    });
    maxSeq = Math.max(maxSeq, seq);
    if (rows.length === 0) {
      await store.removeOpen(seq);
      continue;
    }
    const block = await store.recoverOpen(seq, rows);
    try {
      await block.seal(store);
    } finally {
      await block.handle.close().catch(() => {});
    }
  }
  await rebuildIndex(ldb, store, dbKeys, maxSeq + 1, encodeStats);
}
