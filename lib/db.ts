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
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ClassicLevel } from 'classic-level';
import { Packr } from 'msgpackr';
import { EntryKind, type EntryRow, HEADER_BYTES } from '../blockstore/format.js';
import { FileCache } from '../blockstore/files.js';
import { BlockStore, type OpenBlock, type SealedBlock } from '../blockstore/store.js';
import { PREFIX_BLOCK, keys } from '../index/keys.js';
import { type Location, decodeLocation, encodeBlockInfo, encodeLocation } from '../index/values.js';
import { WAL_RECORD_BYTES, decodeWalRecords, encodeWalRecords } from '../wal/record.js';
import { fromHex, toHex } from './bytes.js';
import { type ChunkSizes, Chunker, DEFAULT_CHUNK_SIZES } from './chunker.js';
import { DatabaseKeys, ID_BYTES, gearTable } from './crypto.js';
import { type SealedEntry, openEntry, sealEntry } from './entry.js';
import { OFFLOAD_MIN_BYTES, SealPool } from './seal-pool.js';
import {
  BadArgumentError,
  ClosedError,
  CorruptionError,
  FailedError,
  LockedError,
  NotFoundError,
  OuroError,
  UnsupportedVersionError,
  ioError,
} from './errors.js';
import { failpoint } from './failpoints.js';
import { ensureDir, exists } from './fsutil.js';
import { type Argon2Cost, DESCRIPTOR_FILE, createDescriptor, readDescriptor, unlock, validateCredentials } from './keyring.js';
import { type ChunkRef, INLINE_MAX_BYTES, type ObjectRecord, decodeRecord, encodeRecord } from './record.js';

/** Version of the LevelDB key/value layout (index/keys.ts). Never reuse a retired number. */
export const INDEX_FORMAT_VERSION = 1;

export type Durability = 'durable' | 'relaxed';

export interface OpenOptions {
  passphrase?: string;
  key?: Uint8Array;
  /** argon2id cost for a new database's passphrase slot (default: 64 MiB, 3 passes). */
  kdf?: Argon2Cost;
  /** Target size of a sealed block in bytes (default 16 MiB). */
  blockSize?: number;
  /** Content-defined chunking sizes (default min 64 KiB, avg 256 KiB, max 1 MiB). */
  chunkSizes?: ChunkSizes;
  /** Try zstd on every chunk and keep it when it saves space (default true). */
  compression?: boolean;
  /** Default durability of put (default 'durable'). */
  durability?: Durability;
}

export interface PutOptions {
  /** User metadata, stored encrypted in the object record. */
  meta?: Record<string, string>;
  /**
   * 'durable' (default): resolve once the value is on disk (fsync) and survives a crash.
   * 'relaxed': resolve once the bytes are handed to the OS; the fsync still follows within
   * milliseconds, but a crash before it may lose this put (never half of it).
   */
  durability?: Durability;
}

export type PutValue = Uint8Array | string | Readable | AsyncIterable<Uint8Array>;

export interface PutResult {
  hash: string;
  size: number;
}

export interface ObjectStat {
  hash: string;
  type: 'value' | 'tombstone';
  size: number;
  /** Chunks the value was cut into; 0 when it is stored inline. */
  chunks: number;
  /** True when the value (at most 4 KiB) is stored inside its object record, not in chunks. */
  inline: boolean;
  created: Date;
  key: string | null;
  parent: string | null;
  prev: string[];
  meta: Record<string, string>;
}

export interface Stats {
  /** Object records stored (every put is one). */
  objects: number;
  /** Distinct chunks stored. */
  chunks: number;
  /** Sum of the sizes of all stored objects, as the application sees them. */
  logicalBytes: number;
  /** Plaintext bytes of the distinct chunks (what is left after deduplication). */
  uniqueBytes: number;
  /** Bytes on disk in block files, sealed and open (entries with their headers, footers). */
  storedBytes: number;
  /** logicalBytes / uniqueBytes: how many times over deduplication stores the data. */
  dedupRatio: number;
  /** uniqueBytes / stored chunk payload bytes: what compression saved. */
  compressionRatio: number;
  /** Sealed blocks. */
  blocks: number;
  /** Entries acknowledged but not yet sealed into a block (each has a WAL record). */
  walRecords: number;
  /** Bytes those entries occupy in open block files plus their WAL records in LevelDB. */
  walBytes: number;
}

interface PersistedStats {
  objects: number;
  chunks: number;
  logicalBytes: number;
  uniqueBytes: number;
  chunkStoredBytes: number;
  storedBytes: number;
  blocks: number;
  walRecords: number;
  walEntryBytes: number;
}

const ZERO_STATS: PersistedStats = { objects: 0, chunks: 0, logicalBytes: 0, uniqueBytes: 0, chunkStoredBytes: 0, storedBytes: 0, blocks: 0, walRecords: 0, walEntryBytes: 0 };

const statsCodec = new Packr({ useRecords: false });

/** An entry appended to an open block and waiting for (or past) its group commit. */
interface PendingEntry {
  kind: EntryKind;
  id: Buffer;
  block: OpenBlock;
  row: EntryRow;
  written: Promise<void>;
  committed: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
  /** Logical size added by this entry when it is an object record. */
  objectSize: number;
  /** Bytes of the value held inline in this object record (0 for chunks and chunked values). */
  inlineSize: number;
}

interface BatchOp {
  type: 'put' | 'del';
  key: Buffer;
  value?: Buffer;
}

const DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024;
/** How many bytes may wait to be written before put() waits: bounds memory while streaming. */
const WRITE_BACKLOG_LIMIT = 32 * 1024 * 1024;
/** Chunks read ahead while streaming a value out. */
const READ_AHEAD = 4;
const NO_ID = Buffer.alloc(0);
/** Chunks of one put being sealed at once (on the seal pool) while the next are cut. */
const SEAL_AHEAD = 8;

type Ldb = ClassicLevel<Buffer, Buffer>;

export class OuroDB {
  readonly dir: string;
  readonly #ldb: Ldb;
  readonly #keys: DatabaseKeys;
  readonly #chunker: Chunker;
  readonly #store: BlockStore;
  readonly #files = new FileCache();
  readonly #sealPool: SealPool;
  readonly #blockSize: number;
  readonly #compression: boolean;
  readonly #durability: Durability;

  #closed = false;
  #closing: Promise<void> | undefined;
  #failed: OuroError | undefined;
  #nextSeq: number;
  #current: OpenBlock | undefined;
  #creating: Promise<OpenBlock> | undefined;
  /** Open blocks not yet sealed, by seq, with how many of their entries await commit. */
  readonly #unsealed = new Map<number, { block: OpenBlock; uncommitted: number; full: boolean }>();
  readonly #sealing = new Set<Promise<void>>();
  readonly #pending = new Map<string, PendingEntry>();
  #queue: PendingEntry[] = [];
  #committer: Promise<void> | undefined;
  #batchChain: Promise<void> = Promise.resolve();
  #stats: PersistedStats;
  readonly #inflight = new Set<Promise<unknown>>();
  /** Block ids by seq, filled as blocks are registered or first read (a few dozen bytes each). */
  readonly #sealedSeqs = new Map<number, Buffer>();

  private constructor(dir: string, ldb: Ldb, keys: DatabaseKeys, chunker: Chunker, store: BlockStore, opts: OpenOptions, stats: PersistedStats, nextSeq: number) {
    this.dir = dir;
    this.#ldb = ldb;
    this.#keys = keys;
    this.#chunker = chunker;
    this.#store = store;
    this.#blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.#compression = opts.compression ?? true;
    this.#durability = opts.durability ?? 'durable';
    this.#stats = stats;
    this.#nextSeq = nextSeq;
    this.#sealPool = new SealPool(keys.material);
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
    const root = path.resolve(dir);
    const descriptorFile = path.join(root, DESCRIPTOR_FILE);
    let masterKey: Uint8Array;
    let databaseId: Buffer;
    if (await exists(descriptorFile)) {
      const descriptor = await readDescriptor(descriptorFile);
      masterKey = await unlock(descriptor, creds);
      databaseId = fromHex(descriptor.databaseId, 16)!;
    } else {
      // A directory with blocks or an index but no descriptor lost its key slots: refuse to
      // create a new database over it, which would make the old data unreadable for good.
      if ((await exists(path.join(root, 'index'))) || (await exists(path.join(root, 'blocks')))) {
        throw new CorruptionError(`${root} holds OuroDB data but no ${DESCRIPTOR_FILE}`, { location: { file: descriptorFile } });
      }
      await ensureDir(root);
      const created = await createDescriptor(descriptorFile, creds);
      masterKey = created.masterKey;
      databaseId = created.databaseId;
    }

    const ldb: Ldb = new ClassicLevel<Buffer, Buffer>(path.join(root, 'index'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    try {
      await ldb.open();
    } catch (err) {
      const code = (err as { code?: string; cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code;
      if (code === 'LEVEL_LOCKED') throw new LockedError(`${root} is open in another process or handle`, { cause: err });
      if (code === 'LEVEL_CORRUPTION') throw new CorruptionError(`${root}/index is corrupt`, { cause: err });
      throw ioError(`opening ${root}/index`, err);
    }
    try {
      const format = ldb.getSync(keys.meta('format'));
      if (format === undefined) {
        await ldb.put(keys.meta('format'), u32(INDEX_FORMAT_VERSION), { sync: true });
      } else if (format.readUInt32LE(0) !== INDEX_FORMAT_VERSION) {
        throw new UnsupportedVersionError(`${root}/index has layout version ${format.readUInt32LE(0)}; this release reads ${INDEX_FORMAT_VERSION}`);
      }
      const statsBytes = ldb.getSync(keys.meta('stats'));
      const stats: PersistedStats = { ...ZERO_STATS, ...(statsBytes ? (statsCodec.unpack(statsBytes) as Partial<PersistedStats>) : {}) };
      const nextSeqBytes = ldb.getSync(keys.meta('nextSeq'));
      const store = new BlockStore(root, databaseId);
      await store.init();
      const dbKeys = new DatabaseKeys(masterKey, databaseId);
      const chunker = new Chunker(gearTable(masterKey, databaseId), options.chunkSizes ?? DEFAULT_CHUNK_SIZES);
      const db = new OuroDB(root, ldb, dbKeys, chunker, store, options, stats, nextSeqBytes ? Number(nextSeqBytes.readBigUInt64LE(0)) : 1);
      await db.#recover();
      return db;
    } catch (err) {
      await ldb.close().catch(() => {});
      throw err;
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
    let maxSeq = this.#nextSeq - 1;
    for (const { idHex, path: file } of await this.#store.listSealed()) {
      const id = Buffer.from(idHex, 'hex');
      if (this.#ldb.getSync(keys.block(id)) !== undefined) continue;
      const index = await this.#store.readIndex(file);
      if (!index.id.equals(id)) throw new CorruptionError(`${file}: contents hash to ${toHex(index.id)}, not to its name`, { location: { file } });
      const bad = await this.#store.verifyEntries(file, index.rows);
      if (bad.length > 0) throw new CorruptionError(`${file}: ${bad.length} entries do not match the footer`, { location: { file, offset: bad[0]!.offset } });
      maxSeq = Math.max(maxSeq, index.seq);
      const walRows = await this.#walRows(index.seq);
      await this.#register({ id, path: file, size: index.size, seq: index.seq, rows: index.rows }, walRows.length, sumLengths(walRows));
    }

    const walBySeq = new Map<number, EntryRow[]>();
    for await (const [k, v] of this.#ldb.iterator(keys.walRange())) {
      const { seq, offset } = keys.decodeWal(k);
      let rows = walBySeq.get(seq);
      if (!rows) walBySeq.set(seq, (rows = []));
      rows.push(...decodeWalRecords(v, offset));
    }
    const openSeqs = new Set(await this.#store.listOpen());
    for (const seq of walBySeq.keys()) {
      if (!openSeqs.has(seq)) throw new CorruptionError(`acknowledged entries of open block ${seq} are missing: ${this.#store.openPath(seq)} is gone`, { location: { file: this.#store.openPath(seq) } });
    }
    for (const seq of openSeqs) {
      maxSeq = Math.max(maxSeq, seq);
      const rows = walBySeq.get(seq) ?? [];
      if (rows.length === 0) {
        await fs.rm(this.#store.openPath(seq), { force: true }).catch((err: unknown) => {
          throw ioError(`remove ${this.#store.openPath(seq)}`, err);
        });
        continue;
      }
      const block = await this.#store.recoverOpen(seq, rows);
      this.#files.adopt(openName(seq), block.handle);
      this.#unsealed.set(seq, { block, uncommitted: 0, full: true });
    }
    this.#nextSeq = maxSeq + 1;
    await Promise.all([...this.#unsealed.values()].map(({ block }) => this.#seal(block)));
  }

  async #walRows(seq: number): Promise<EntryRow[]> {
    const rows: EntryRow[] = [];
    for await (const [k, v] of this.#ldb.iterator(keys.walRange(seq))) rows.push(...decodeWalRecords(v, keys.decodeWal(k).offset));
    return rows;
  }

  // ---------------------------------------------------------------- writes

  /** Stores a value. Resolves to its object hash once it is durable (see PutOptions.durability). */
  async put(value: PutValue, options: PutOptions = {}): Promise<PutResult> {
    this.#checkWritable();
    if (options === null || typeof options !== 'object') throw new BadArgumentError('options must be an object');
    const meta = validateMeta(options.meta);
    const durability = options.durability ?? this.#durability;
    if (durability !== 'durable' && durability !== 'relaxed') throw new BadArgumentError("durability must be 'durable' or 'relaxed'");
    const small = smallValue(value);
    const op = small ? this.#putRecord(small, [], meta, durability) : this.#put(value, meta, durability);
    this.#inflight.add(op);
    try {
      return await op;
    } finally {
      this.#inflight.delete(op);
    }
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
      return { source: this.#chunker.chunkStream(value as AsyncIterable<Uint8Array>), owned: true };
    }
    throw new BadArgumentError('value must be a Uint8Array, a string, a Readable or an AsyncIterable<Uint8Array>');
  }

  async #put(value: PutValue, meta: Record<string, string>, durability: Durability): Promise<PutResult> {
    const { source, owned } = this.#chunksOf(value);
    const chunks: ChunkRef[] = [];
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
      if (held) {
        store(held);
        held = undefined;
      }
      if (chunks.length === 0 && chunk.byteLength <= INLINE_MAX_BYTES) held = chunk;
      else store(chunk);
      if (sealing.length >= SEAL_AHEAD) await sealing.shift();
    }
    await Promise.all(sealing);
    return this.#putRecord(held ?? null, chunks, meta, durability);
  }

  /**
   * Stores one chunk. Its place in `chunks` is taken at once, so the list keeps value order
   * whatever order the seal pool answers in. Large chunks are hashed and sealed on the pool.
   */
  #storeChunk(chunk: Uint8Array, chunks: ChunkRef[], owned: boolean): Promise<unknown> {
    const size = chunk.byteLength;
    if (size < OFFLOAD_MIN_BYTES) {
      const id = this.#keys.chunkId(chunk);
      chunks.push({ id, size });
      return this.#store_(EntryKind.Chunk, id, () => sealEntry(this.#keys.data, EntryKind.Chunk, id, chunk, this.#compression), 0, 0);
    }
    const at = chunks.push({ id: NO_ID, size }) - 1;
    return this.#sealPool.identify(chunk, owned).then((ticket) => {
      chunks[at] = { id: ticket.id, size };
      return this.#store_(EntryKind.Chunk, ticket.id, () => this.#sealPool.seal(ticket, EntryKind.Chunk, this.#compression), 0, 0, () => this.#sealPool.drop(ticket));
    });
  }

  /** Stores the object record of a value whose chunks are stored (or that goes inline). */
  async #putRecord(inline: Uint8Array | null, chunks: ChunkRef[], meta: Record<string, string>, durability: Durability): Promise<PutResult> {
    const size = inline ? inline.byteLength : chunks.reduce((n, c) => n + c.size, 0);
    const record: ObjectRecord = { type: 'value', size, chunks, key: null, parent: null, prev: [], created: Date.now(), meta, inline };
    const bytes = encodeRecord(record);
    const hash = this.#keys.objectId(bytes);
    const entry = await this.#store_(EntryKind.Object, hash, () => sealEntry(this.#keys.data, EntryKind.Object, hash, bytes, this.#compression), size, inline ? size : 0);
    if (entry) await (durability === 'durable' ? entry.committed : entry.written);
    return { hash: toHex(hash), size };
  }

  /**
   * Stores one entry unless an identical one is stored or on its way. Returns the pending entry
   * (this put's or the one it deduplicated against) or undefined when it is already committed.
   * Correctness of dedup against an in-flight entry: that entry was queued before this call
   * returns, commits go in queue order, so it commits no later than anything queued after it.
   */
  async #store_(kind: EntryKind, id: Buffer, seal: () => SealedEntry | Promise<SealedEntry>, objectSize: number, inlineSize: number, skip?: () => void): Promise<PendingEntry | undefined> {
    const idHex = toHex(id);
    const inflight = this.#pending.get(idHex);
    const indexKey = kind === EntryKind.Chunk ? keys.chunk(id) : keys.object(id);
    if (inflight || this.#ldb.getSync(indexKey) !== undefined) {
      skip?.();
      return inflight;
    }
    const sealing = seal();
    const sealed = sealing instanceof Promise ? await sealing : sealing;
    let block = this.#current ?? (await this.#openBlock());
    // The open block may have filled (and been replaced) while we waited, and another put may have
    // queued (or, while a worker sealed, even committed) the same entry: re-checked after the last await.
    const again = this.#pending.get(idHex);
    if (again) return again;
    if (sealing instanceof Promise && this.#ldb.getSync(indexKey) !== undefined) return undefined;
    if (this.#current !== block) block = this.#current ?? (await this.#openBlock());
    this.#checkWritable();
    const { written } = block.append(sealed.bytes, { id, kind, flags: sealed.flags, length: sealed.bytes.length, plainLength: sealed.plainLength, hash: sealed.hash });
    const row = block.rows[block.rows.length - 1]!;
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const committed = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    committed.catch(() => {});
    const entry: PendingEntry = { kind, id, block, row, written, committed, resolve, reject, objectSize, inlineSize };
    this.#pending.set(idHex, entry);
    this.#unsealed.get(block.seq)!.uncommitted++;
    if (block.size >= this.#blockSize) this.#rotate();
    this.#queue.push(entry);
    this.#committer ??= this.#commitLoop();
    if (block.backlog > WRITE_BACKLOG_LIMIT) await block.drain();
    return entry;
  }

  async #openBlock(): Promise<OpenBlock> {
    this.#creating ??= (async () => {
      try {
        const seq = this.#nextSeq++;
        const block = await this.#store.createOpen(seq);
        this.#files.adopt(openName(seq), block.handle);
        this.#unsealed.set(seq, { block, uncommitted: 0, full: false });
        this.#current = block;
        return block;
      } catch (err) {
        this.#fail(err);
        throw this.#failed!;
      } finally {
        this.#creating = undefined;
      }
    })();
    return this.#creating;
  }

  /** Stops appending to the current block; it is sealed once all its entries are committed. */
  #rotate(): void {
    const block = this.#current;
    if (!block) return;
    this.#current = undefined;
    const state = this.#unsealed.get(block.seq)!;
    state.full = true;
    if (state.uncommitted === 0) this.#startSeal(block);
  }

  /**
   * Group commit. Takes everything queued so far, waits for its bytes to reach the OS, fdatasyncs
   * each block file involved, then writes all their WAL records and locations in one synced
   * LevelDB batch. Puts arriving meanwhile form the next group, so N concurrent puts cost about
   * two fsyncs per group instead of two each.
   *
   * Two groups are in flight at once: while group N's LevelDB batch is being synced, group N+1's
   * block bytes are fdatasynced. Safe because each group's batch is issued only after its own
   * blocks are synced, and batches run strictly in order (#writeBatch), so a group never becomes
   * durable before the groups queued ahead of it (which its dedup hits may point into).
   */
  async #commitLoop(): Promise<void> {
    let previous: Promise<void> = Promise.resolve();
    try {
      while (this.#queue.length > 0 && !this.#failed) {
        const group = this.#queue;
        this.#queue = [];
        let batch: Promise<void>;
        try {
          await Promise.all(group.map((e) => e.written));
          failpoint('commit.after-write');
          const blocks = new Set(group.map((e) => e.block));
          await Promise.all([...blocks].map((b) => b.sync()));
          failpoint('commit.after-datasync');
          batch = this.#writeBatch(...this.#walOps(group));
        } catch (err) {
          batch = Promise.reject(err);
        }
        const settled = batch.then(
          () => {
            failpoint('commit.after-wal');
            this.#committed(group);
          },
          (err: unknown) => {
            this.#fail(err);
            for (const e of group) e.reject(this.#failed);
          },
        );
        await previous;
        previous = settled;
      }
      await previous;
    } finally {
      this.#committer = undefined;
      if (this.#failed) {
        for (const e of this.#queue) e.reject(this.#failed);
        this.#queue = [];
      } else if (this.#queue.length > 0) {
        this.#committer = this.#commitLoop();
      }
    }
  }

  /** The index batch that commits a group: a WAL value per block run, a location per entry, stats. */
  #walOps(group: PendingEntry[]): [BatchOp[], Partial<PersistedStats>] {
    const ops: BatchOp[] = [];
    const delta: Partial<PersistedStats> = { walRecords: group.length };
    // A group's entries in one block are contiguous (append and queue happen together, in order):
    // each run of them gets one WAL value.
    for (let start = 0; start < group.length; ) {
      let end = start + 1;
      while (end < group.length && group[end]!.block === group[start]!.block) end++;
      const run = group.slice(start, end);
      ops.push({ type: 'put', key: keys.wal(run[0]!.block.seq, run[0]!.row.offset), value: encodeWalRecords(run.map((e) => e.row)) });
      start = end;
    }
    for (const e of group) {
      const loc = encodeLocation({ kind: e.kind, flags: e.row.flags, length: e.row.length, plainLength: e.row.plainLength, offset: e.row.offset, seq: e.block.seq });
      ops.push({ type: 'put', key: e.kind === EntryKind.Chunk ? keys.chunk(e.id) : keys.object(e.id), value: loc });
      add(delta, 'walEntryBytes', e.row.length);
      add(delta, 'storedBytes', e.row.length);
      if (e.kind === EntryKind.Chunk) {
        add(delta, 'chunks', 1);
        add(delta, 'uniqueBytes', e.row.plainLength);
        add(delta, 'chunkStoredBytes', e.row.length);
      } else {
        add(delta, 'objects', 1);
        add(delta, 'logicalBytes', e.objectSize);
        // An inline value is stored once per object, so it counts fully as unique bytes. It counts
        // one to one in the compression ratio too: when zstd shrinks its record (only records over
        // 4 KiB are tried), the ratio does not credit it.
        add(delta, 'uniqueBytes', e.inlineSize);
        add(delta, 'chunkStoredBytes', e.inlineSize);
      }
    }
    ops.push({ type: 'put', key: keys.meta('nextSeq'), value: u64(this.#nextSeq) });
    return [ops, delta];
  }

  #committed(group: PendingEntry[]): void {
    for (const e of group) {
      this.#pending.delete(toHex(e.id));
      e.resolve();
      const state = this.#unsealed.get(e.block.seq)!;
      state.uncommitted--;
      if (state.full && state.uncommitted === 0) this.#startSeal(e.block);
    }
  }

  /**
   * Serialises every index batch, so the stats written with each are exact and in order. Once a
   * batch has failed no later one runs: a later group may depend on entries of the failed one.
   */
  #writeBatch(ops: BatchOp[], delta: Partial<PersistedStats>): Promise<void> {
    const run = this.#batchChain.then(async () => {
      if (this.#failed) throw this.#failed;
      const next = { ...this.#stats };
      for (const [k, v] of Object.entries(delta) as [keyof PersistedStats, number][]) next[k] += v;
      ops.push({ type: 'put', key: keys.meta('stats'), value: statsCodec.pack(next) });
      try {
        await this.#ldb.batch(ops as never, { sync: true });
      } catch (err) {
        const failure = ioError('index batch', err);
        this.#fail(failure);
        throw failure;
      }
      this.#stats = next;
    });
    this.#batchChain = run.catch(() => {});
    return run;
  }

  #startSeal(block: OpenBlock): void {
    const task = this.#seal(block)
      .catch((err: unknown) => this.#fail(err))
      .finally(() => this.#sealing.delete(task));
    this.#sealing.add(task);
  }

  async #seal(block: OpenBlock): Promise<void> {
    const sealed = await block.seal(this.#store);
    this.#files.alias(openName(block.seq), blockName(sealed.id));
    await this.#register(sealed, block.rows.length, block.entryBytes);
    this.#files.unpin(openName(block.seq));
    this.#unsealed.delete(block.seq);
  }

  /**
   * Step 5 of the seal protocol: one synced batch registers the block (its info and the 's' key
   * that sends every location naming its seq to it) and deletes the block's WAL records.
   * Locations themselves do not change: they name the seq, which the block keeps.
   */
  async #register(sealed: SealedBlock, walRecords: number, walEntryBytes: number): Promise<void> {
    const ops: BatchOp[] = [
      { type: 'put', key: keys.block(sealed.id), value: encodeBlockInfo({ seq: sealed.seq, size: sealed.size, entries: sealed.rows.length, liveBytes: sumLengths(sealed.rows) }) },
      { type: 'put', key: keys.sealedSeq(sealed.seq), value: sealed.id },
    ];
    for await (const k of this.#ldb.keys(keys.walRange(sealed.seq))) ops.push({ type: 'del', key: k });
    const overhead = sealed.size - sumLengths(sealed.rows);
    await this.#writeBatch(ops, { blocks: 1, storedBytes: overhead, walRecords: -walRecords, walEntryBytes: -walEntryBytes });
    this.#sealedSeqs.set(sealed.seq, sealed.id);
    failpoint('seal.after-register');
  }

  /** Seals everything written so far into blocks. Resolves when the blocks are registered. */
  async flush(): Promise<void> {
    this.#checkWritable();
    await this.#flush();
  }

  async #flush(): Promise<void> {
    await Promise.allSettled([...this.#inflight]);
    this.#rotate();
    while (this.#committer) await this.#committer;
    while (this.#sealing.size > 0) await Promise.allSettled([...this.#sealing]);
    if (this.#failed) throw this.#failed;
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
    this.#checkOpen();
    const id = parseHash(hash);
    const record = await this.#readRecord(id);
    if (record.inline) {
      if (record.inline.byteLength > 0) yield record.inline;
      return;
    }
    const reads: Promise<Buffer>[] = [];
    let next = 0;
    const refill = () => {
      while (reads.length < READ_AHEAD && next < record.chunks.length) {
        const c = record.chunks[next++]!;
        const p = this.#readEntry(EntryKind.Chunk, c.id);
        p.catch(() => {});
        reads.push(p);
      }
    };
    refill();
    while (reads.length > 0) {
      const chunk = await reads.shift()!;
      refill();
      yield chunk;
    }
  }

  async has(hash: string): Promise<boolean> {
    this.#checkOpen();
    return this.#ldb.getSync(keys.object(parseHash(hash))) !== undefined;
  }

  async stat(hash: string): Promise<ObjectStat> {
    this.#checkOpen();
    const id = parseHash(hash);
    const r = await this.#readRecord(id);
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

  async #readRecord(hash: Buffer): Promise<ObjectRecord> {
    const bytes = await this.#readEntry(EntryKind.Object, hash);
    if (!this.#keys.objectId(bytes).equals(hash)) throw new CorruptionError(`object record ${toHex(hash)} does not hash to its id`, { location: { id: toHex(hash) } });
    return decodeRecord(bytes, toHex(hash));
  }

  /** Reads one entry by its id through the index: an exact-range pread, then authenticate. */
  #readEntry(kind: EntryKind, id: Buffer): Promise<Buffer> {
    const locBytes = this.#ldb.getSync(kind === EntryKind.Chunk ? keys.chunk(id) : keys.object(id));
    if (locBytes === undefined) {
      return Promise.reject(kind === EntryKind.Object ? new NotFoundError(`no object ${toHex(id)}`) : new CorruptionError(`chunk ${toHex(id)} is referenced but not in the index`, { location: { id: toHex(id) } }));
    }
    const loc = decodeLocation(locBytes);
    const [name, file] = this.#fileOf(loc);
    // #fileOf and the read's handle lookup happen in this same tick, so a seal or eviction cannot
    // close the descriptor between them (FileCache counts the reference before awaiting).
    return this.#files.read(name, file, loc.offset, loc.length).then((bytes) => {
      if (bytes.length !== loc.length) throw new CorruptionError(`${file}@${loc.offset}: entry truncated`, { location: { file, offset: loc.offset, id: toHex(id) } });
      return openEntry(this.#keys.data, bytes, { id, kind }, file, loc.offset);
    });
  }

  /**
   * The file holding a location's entry: the sealed block its seq became, or the open block file
   * while the seq is unsealed. An unsealed seq stays in #unsealed (and its file handle pinned in
   * the FileCache) until #sealedSeqs knows its block, so a read never finds neither.
   */
  #fileOf(loc: Location): [string, string] {
    let id = this.#sealedSeqs.get(loc.seq);
    if (id === undefined && !this.#unsealed.has(loc.seq)) {
      id = this.#ldb.getSync(keys.sealedSeq(loc.seq));
      if (id === undefined) throw new CorruptionError(`the index places an entry in block seq ${loc.seq}, which is neither open nor sealed`, { location: { offset: loc.offset } });
      this.#sealedSeqs.set(loc.seq, id);
    }
    return id ? [blockName(id), this.#store.blockPath(id)] : [openName(loc.seq), this.#store.openPath(loc.seq)];
  }

  // ---------------------------------------------------------------- stats and lifecycle

  async stats(): Promise<Stats> {
    this.#checkOpen();
    await this.#batchChain;
    const s = this.#stats;
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
    };
  }

  #openHeaderBytes(): number {
    return this.#unsealed.size * HEADER_BYTES;
  }

  /** Number of sealed blocks the index knows (counted from the index itself, for tests and checks). */
  async countBlocks(): Promise<number> {
    let n = 0;
    for await (const _ of this.#ldb.keys(keys.range(PREFIX_BLOCK))) n++;
    return n;
  }

  /** Waits for writes in flight, seals what is pending, and closes every file. */
  async close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        if (!this.#failed) await this.#flush();
      } finally {
        this.#closed = true;
        await this.#sealPool.close();
        await this.#files.closeAll();
        await this.#ldb.close();
      }
    })();
    return this.#closing;
  }

  #fail(err: unknown): void {
    if (this.#failed) return;
    this.#failed = new FailedError(`a write could not be made durable; reopen the database to recover (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }

  #checkOpen(): void {
    if (this.#closed || this.#closing) throw new ClosedError();
  }

  #checkWritable(): void {
    this.#checkOpen();
    if (this.#failed) throw this.#failed;
  }
}

function openName(seq: number): string {
  return `open:${seq}`;
}

function blockName(id: Uint8Array): string {
  return `blk:${toHex(id)}`;
}

function parseHash(hash: string): Buffer {
  const b = fromHex(hash, ID_BYTES);
  if (!b) throw new BadArgumentError('hash must be 64 lowercase hex characters');
  return b;
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

function add(delta: Partial<PersistedStats>, k: keyof PersistedStats, v: number): void {
  delta[k] = (delta[k] ?? 0) + v;
}

function sumLengths(rows: readonly EntryRow[]): number {
  return rows.reduce((n, r) => n + r.length, 0);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
}

