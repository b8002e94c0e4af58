/**
 * OuroDB: the public facade of the embedded engine. Public methods check their arguments and
 * the handle's state, then delegate to the engine's parts, which lib/open.ts builds and wires;
 * this file keeps only the sequencing that spans several parts (flush, close, rebuildIndex,
 * check). The write path, in order (docs/design.md has the reasoning):
 *
 *   put -> chunk (FastCDC) -> chunk id (HMAC) -> dedup (index or in-flight) -> compress, encrypt
 *       -> append to the open block file -> group commit: fdatasync the file(s), then one synced
 *          LevelDB batch with the WAL records and index locations -> resolve
 *
 * (lib/write.ts, then wal/commit.ts) and, once an open block reaches its target size (or on
 * flush/close), the seal protocol of blockstore/store.ts, whose last step registers the block
 * and deletes its WAL records in one synced batch (wal/blocks.ts). Opening the database
 * recovers from a crash at any of these steps (lib/open.ts, wal/recover.ts).
 *
 * Layers (imports only go down): this facade -> engine modules in lib/ (open, write, heads,
 * read, query, snapshots, gc, adopt, lifecycle, put-options, args, types) -> wal/ -> index/
 * -> blockstore/; the leaf helpers of lib/ (errors, bytes, vfs/, fsutil, failpoints, crypto,
 * entry, record, pack, versions, keyname) from anywhere.
 */
import type { SeenEntries } from '../blockstore/entry-hashes.js';
import { type EntryRow, HEADER_BYTES } from '../blockstore/format.js';
import type { BlockStore } from '../blockstore/store.js';
import { PREFIX_BLOCK, PREFIX_TOMBSTONE, keys } from '../index/keys.js';
import { levelBinding, warnUnverifiedIndex } from '../index/leveldb.js';
import { encodeStats } from '../index/stats.js';
import type { IndexStore } from '../index/store.js';
import { decodeBlockInfo, decodeHeads } from '../index/values.js';
import { type BlockSet, type SealedBlockInfo, blockName, openName } from '../wal/blocks.js';
import type { CommitPipeline } from '../wal/commit.js';
import { WAL_RECORD_BYTES } from '../wal/record.js';
import type { AdoptResult, Adopter } from './adopt.js';
import { parseHash, parseRange, sortHeads } from './args.js';
import { copyOf, toHex } from './bytes.js';
import { checkDatabase } from './check.js';
import { type DatabaseKeys, deriveKey } from './crypto.js';
import { BadArgumentError, ConfigError, NotFoundError, isDiskFull } from './errors.js';
import { DEFAULT_GC_PACE } from './gc-pace.js';
import type { Collector } from './gc.js';
import type { Heads } from './heads.js';
import type { Landed } from './landed.js';
import { keyBytes } from './keyname.js';
import { type Descriptor, validateCredentials } from './keyring.js';
import type { Lifecycle } from './lifecycle.js';
import { type Engine, openEngine } from './open.js';
import { parseLink } from './put-options.js';
import type { Query } from './query.js';
import type { Reader } from './read.js';
import { type RebuildReport, rebuildIndex } from './rebuild.js';
import { ChunkList } from './chunk-list.js';
import type { ObjectRecord } from './record.js';
import type { Snapshots } from './snapshots.js';
import type { Writer } from './write.js';

/** Version of the LevelDB key/value layout (index/keys.ts, index/open.ts). Never reuse a retired number. */
export { INDEX_FORMAT_VERSION } from '../index/open.js';

export type { SealedBlockInfo } from '../wal/blocks.js';
export { Tombstone } from './types.js';
export type { Durability, OpenOptions, FlushOptions, BlockListing, ReplicaSource, TombstoneState, ReleaseReport, PutOptions, PutValue, PutResult, ObjectStat, ReadRange, Stats, ListOptions, ListEntry, Version, ExportedObject, GcOptions, GcReport, CheckOptions, Problem, CheckReport } from './types.js';
import { Tombstone } from './types.js';
import type { OpenOptions, FlushOptions, BlockListing, ReplicaSource, TombstoneState, ReleaseReport, PutOptions, PutValue, PutResult, ObjectStat, ReadRange, Stats, ListOptions, ListEntry, Version, ExportedObject, GcOptions, GcReport, CheckOptions, CheckReport } from './types.js';

export class OuroDB {
  readonly dir: string;
  /** The wired engine (lib/open.ts); the fields below are its parts, held for short access. */
  readonly #engine: Engine;
  readonly #index: IndexStore;
  readonly #life: Lifecycle;
  readonly #reader: Reader;
  readonly #snapshots: Snapshots;
  readonly #query: Query;
  readonly #writer: Writer;
  readonly #heads: Heads;
  readonly #landed: Landed;
  readonly #adopter: Adopter;
  readonly #collector: Collector;
  readonly #blocks: BlockSet;
  readonly #commit: CommitPipeline;
  readonly #keys: DatabaseKeys;
  readonly #store: BlockStore;

  private constructor(engine: Engine) {
    this.dir = engine.dir;
    this.#engine = engine;
    this.#index = engine.index;
    this.#life = engine.life;
    this.#reader = engine.reader;
    this.#snapshots = engine.snapshots;
    this.#query = engine.query;
    this.#writer = engine.writer;
    this.#heads = engine.heads;
    this.#landed = engine.landed;
    this.#adopter = engine.adopter;
    this.#collector = engine.collector;
    this.#blocks = engine.blocks;
    this.#commit = engine.commit;
    this.#keys = engine.keys;
    this.#store = engine.store;
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
    if (options.sealInlineBytes !== undefined && !((Number.isSafeInteger(options.sealInlineBytes) && options.sealInlineBytes >= 0) || options.sealInlineBytes === Infinity)) throw new BadArgumentError('sealInlineBytes must be a non-negative integer or Infinity');
    if (options.reserveBytes !== undefined && !(Number.isSafeInteger(options.reserveBytes) && options.reserveBytes >= 0)) throw new BadArgumentError('reserveBytes must be a non-negative integer');
    if (options.maxUnsealedMs !== undefined && !(Number.isSafeInteger(options.maxUnsealedMs) && options.maxUnsealedMs >= 1)) throw new BadArgumentError('maxUnsealedMs must be a positive integer');
    if (!levelBinding.verified) {
      if (options.requireVerifiedIndex === true) throw new ConfigError(`LevelDB here does not verify index block checksums (requireVerifiedIndex): ${levelBinding.reason}`, 'requireVerifiedIndex');
      warnUnverifiedIndex();
    }
    return new OuroDB(await openEngine(dir, options, creds));
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

  // ---------------------------------------------------------------- writes

  /** Stores a value. Resolves to its object hash once it is durable (see PutOptions.durability). */
  async put(value: PutValue, options: PutOptions = {}): Promise<PutResult> {
    const { meta, durability, link } = this.#writer.args(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    return this.#life.tracked(this.#writer.putValue(value, meta, durability, link));
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
    const { meta, durability, link } = this.#writer.args(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    const key = link.key!;
    return this.#life.tracked(
      this.#heads.withKey(key.name, async () => {
        const pending = this.#heads.queued(key.name);
        const { heads, row, tag, match } = this.#heads.checkHint(key, link.hint!);
        if (match) return { hash: toHex(heads[0]!.hash), read: false as const };
        const value = await read();
        link.held = { heads, ...(pending ? {} : { hintRow: row, hintTag: tag }) };
        return { ...(await this.#writer.putValue(value, meta, durability, link)), read: true as const };
      }),
    );
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
    const { meta, durability, link } = this.#writer.args(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    const checked = async function* (): AsyncGenerator<Uint8Array> {
      for await (const piece of pieces) {
        if (!(piece instanceof Uint8Array) || piece.byteLength === 0) throw new BadArgumentError('putCut takes non-empty Uint8Array pieces');
        yield piece;
      }
    };
    return this.#life.tracked(this.#writer.put(checked(), meta, durability, link, true));
  }

  /**
   * A new value whose bytes are those of the values `hashes` names, in order (a hash may repeat;
   * an empty list gives the empty value). Its record lists the parts' chunks, so none is read,
   * sealed or written again: this is how an upload in parts (S3 multipart) is stored once.
   * Takes the options of `put` and resolves as it does; the parts stay as they were, and gc keeps
   * every chunk that either they or the new value still name. A hash that names no object is
   * NotFoundError, a tombstone or purge marker BadArgumentError. See Writer.concat for how
   * parts stored inline are handled.
   */
  async concat(hashes: string[], options: PutOptions = {}): Promise<PutResult> {
    if (!Array.isArray(hashes)) throw new BadArgumentError('hashes must be an array of object hashes');
    const parts = hashes.map((h) => parseHash(h));
    const { meta, durability, link } = this.#writer.args(options);
    while (this.#life.exclusive) await this.#life.exclusive;
    return this.#life.tracked(this.#writer.concat(parts, meta, durability, link));
  }

  // ---------------------------------------------------------------- keys and versions

  /** The value under `key`: its newest head's. A deleted (tombstoned) or unknown key is NotFoundError. */
  async getByKey(key: string): Promise<Uint8Array> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const landing = this.#landed.key(key);
    if (landing) await landing;
    const head = this.#heads.newestHead(keyBytes(key));
    if (!head || head.tombstone) throw new NotFoundError(`no value under key ${JSON.stringify(key)}${head ? ' (deleted)' : ''}`);
    // A cached record (a value read or put lately), or one read cold from an open block file, is
    // taken without a promise of its own (Reader.recordNow).
    const record = this.#reader.recordNow(head.hash) ?? (await this.#reader.record(head.hash));
    // A copy, as get and stream give: the record cache holds the record, and the caller may
    // change what it got.
    if (record.inline) return copyOf(record.inline);
    const parts: Uint8Array[] = [];
    for await (const part of this.#reader.stream(record)) parts.push(part);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The newest head of `key` (a tombstone's hash once deleted), or null if the key has no version. */
  async head(key: string): Promise<string | null> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const landing = this.#landed.key(key);
    if (landing) await landing;
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
    // The hint row lands with its version's batch: checked against the heads before, it would miss.
    const landing = this.#landed.key(key);
    if (landing) await landing;
    const check = this.#heads.checkHint({ name: key, bytes: keyBytes(key) }, hint);
    return check.match ? toHex(check.heads[0]!.hash) : null;
  }

  /** Every head of `key`, newest first (one unless concurrent versions are unmerged). */
  async heads(key: string): Promise<string[]> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const landing = this.#landed.key(key);
    if (landing) await landing;
    const stored = this.#index.get(keys.heads(keyBytes(key)));
    return stored ? sortHeads(decodeHeads(stored)).map((h) => toHex(h.hash)) : [];
  }

  /**
   * Keys in byte order of their UTF-8, with their heads. Reads one LevelDB iterator, which sees
   * a single consistent state however long the listing runs; it streams, so a listing of
   * millions of keys holds at most two batches of 1000 entries.
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
    const link = parseLink({ key, ifHead: options.ifHead, prev: options.prev, created: options.created, expectHash: options.expectHash });
    while (this.#life.exclusive) await this.#life.exclusive;
    const record: ObjectRecord = { type: 'tombstone', size: 0, chunks: new ChunkList(), key, parent: null, prev: [], created: link.created ?? Date.now(), meta: {}, inline: null };
    const op = this.#writer.writeRecord(record, link, options.durability ?? this.#writer.durability);
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
    const op = this.#writer.purge(k);
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
    if (replicas > 1 && !this.#engine.replicas) throw new BadArgumentError(`flush({ replicas: ${replicas} }) needs a cluster node serving this database`);
    const shards = options.shards;
    if (shards !== undefined) {
      if (!Number.isSafeInteger(shards) || shards < 1) throw new BadArgumentError('shards must be a positive integer');
      if (options.replicas !== undefined) throw new BadArgumentError('flush waits for replicas or for shards, not both');
      if (!this.#engine.replicas?.settledShards) throw new BadArgumentError(`flush({ shards: ${shards} }) needs a cluster node serving this database`);
    }
    await this.#flush();
    if (replicas > 1) await this.#engine.replicas!.settled(replicas, options.signal);
    if (shards !== undefined) await this.#engine.replicas!.settledShards!(shards, options.signal);
  }

  async #flush(): Promise<void> {
    await Promise.allSettled(this.#life.inFlight());
    // Records waiting in a pack are appended by the commit loop, maybe to a block it opens for
    // them: let it finish before rotating, so that the rotation seals them too. Hurried each
    // time: chunks queued without their record need not wait to gather (CommitPipeline.hurry).
    const settle = async () => {
      for (let running = this.#commit.running(); running; running = this.#commit.running()) {
        this.#commit.hurry();
        await running;
      }
    };
    await settle();
    this.#blocks.rotate();
    await settle();
    while (this.#blocks.sealingCount > 0) await Promise.allSettled(this.#blocks.sealingTasks());
    // The hints of kept heads (Heads.keepHint) still waiting for a batch, and those batches under way:
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
    return structuredClone(this.#engine.descriptor);
  }

  /** Calls `listener` after each block this database seals (not ones it adopts). Returns an unsubscribe. */
  onSealed(listener: (block: SealedBlockInfo) => void): () => void {
    return this.#blocks.onSealed(listener);
  }

  /**
   * Calls `listener` as each block this database seals is durable under its id (its file renamed
   * into place, the directories fsynced), before the synced index batch that registers it: a
   * crash from then on leaves recovery to register that same file, so the block may be copied
   * out already (the cluster's push starts here). Not yet readable through `block(id)`.
   * A block durable and not yet registered when `listener` subscribes is reported to it at once,
   * during this call: a subscriber that then lists `blocks()` misses no block.
   */
  onSealedDurable(listener: (block: SealedBlockInfo) => void): () => void {
    return this.#blocks.onDurable(listener);
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
    this.#engine.connect(source);
    if (!source) return;
    // Adoptions the open had to leave (see Engine.recover, lib/open.ts); one that fails again waits for the next source.
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
   * `logicalBytes`: what the adoption added to stats().logicalBytes (the node's status page
   * tells those bytes apart from the ones written here).
   */
  adoptBlock(file: string, seen?: SeenEntries): Promise<AdoptResult> {
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
    const pace = options.pace ?? DEFAULT_GC_PACE;
    if (typeof pace !== 'number' || !(pace > 0 && pace <= 1)) throw new BadArgumentError('pace must be a number in (0, 1]');
    return this.#collector.collect(threshold, pace, options.onProgress);
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

  /** The whole value, or the bytes of `range` (see stream), the caller's own. For large values prefer stream(). */
  async get(hash: string, range?: ReadRange): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const part of this.stream(hash, range)) parts.push(part);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /**
   * The value chunk by chunk, reading a few chunks ahead; memory stays bounded. With `range`,
   * only the bytes `[start, end)`, clipped to the value, reading only the chunks they lie in.
   * Each piece is the caller's own (no cache keeps it): it may be kept, changed, or freed once
   * used, as the CLI's restore does (bin/cli/put.ts writeValue).
   */
  async *stream(hash: string, range?: ReadRange): AsyncGenerator<Uint8Array> {
    this.#life.checkOpen();
    const r = range === undefined ? undefined : parseRange(range);
    if (this.#life.exclusive) await this.#life.settledIndex();
    const id = parseHash(hash);
    const landing = this.#landed.object(id);
    if (landing) await landing;
    const record = this.#reader.recordNow(id) ?? (await this.#reader.record(id));
    yield* this.#reader.stream(record, undefined, r && { start: Math.min(r.start, record.size), end: Math.min(r.end, record.size) });
  }

  async has(hash: string): Promise<boolean> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const id = parseHash(hash);
    const landing = this.#landed.object(id);
    if (landing) await landing;
    return this.#index.get(keys.object(id)) !== undefined;
  }

  async stat(hash: string): Promise<ObjectStat> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const id = parseHash(hash);
    const landing = this.#landed.object(id);
    if (landing) await landing;
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
    this.#commit.hurry(); // stats wait for every entry queued: chunks need not gather first
    const landing = this.#landed.all();
    if (landing) await landing;
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
        await this.#writer.closePool();
        await this.#blocks.files.closeAll();
        await this.#index.ldb.close();
      }
    });
  }

}
