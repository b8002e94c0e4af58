/**
 * Opening a database: the descriptor and keys, the index (set aside and rebuilt when damaged),
 * the engine's parts built and wired, then recovery, in its order. lib/db.ts (the facade) checks
 * the options first and wraps the Engine this returns.
 *
 * Engine owns the wiring (each part is given its collaborators here and only here), the
 * descriptor as opened, and the cluster node serving the database (`connect`, called only by
 * OuroDB.setReplicaSource). Each part owns its own state (see each module's header):
 *
 *   lib/db.ts (facade) -> lib/write, heads, read, query, snapshots, gc, adopt, lifecycle
 *     -> wal/commit, packer, inflight, blocks, recover -> index/store, open, stats
 *     -> blockstore/
 */
import path from 'node:path';
import { EntryKind } from '../blockstore/format.js';
import { BlockStore } from '../blockstore/store.js';
import { PREFIX_RETIRED, keys } from '../index/keys.js';
import { checkIndexFormat, existsOnDisk, indexDamage, openIndex, setIndexAside } from '../index/open.js';
import { decodeStats, encodeStats } from '../index/stats.js';
import { IndexStore, type Ldb } from '../index/store.js';
import { BlockSet } from '../wal/blocks.js';
import { CommitPipeline } from '../wal/commit.js';
import { InFlight } from '../wal/inflight.js';
import { Packer } from '../wal/packer.js';
import { recoverWal } from '../wal/recover.js';
import { Adopter } from './adopt.js';
import { fromHex, toHex } from './bytes.js';
import { Chunker, DEFAULT_CHUNK_SIZES } from './chunker.js';
import { DatabaseKeys, gearTable } from './crypto.js';
import { openEntry } from './entry.js';
import { CorruptionError, FailedError, NotFoundError } from './errors.js';
import { ensureDir } from './fsutil.js';
import { Collector } from './gc.js';
import { Heads } from './heads.js';
import { Landed } from './landed.js';
import { type Credentials, DESCRIPTOR_FILE, type Descriptor, createDescriptor, readDescriptor, unlock } from './keyring.js';
import { Lifecycle } from './lifecycle.js';
import { Query } from './query.js';
import { Reader, isMissingFile } from './read.js';
import { rebuildIndex } from './rebuild.js';
import { Snapshots } from './snapshots.js';
import type { OpenOptions, ReplicaSource } from './types.js';
import { nodeVfs } from './vfs/vfs.js';
import { Writer } from './write.js';

const DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024;

export class Engine {
  readonly dir: string;
  /** OURODB.json as opened. */
  readonly descriptor: Descriptor;
  readonly keys: DatabaseKeys;
  readonly store: BlockStore;
  /** The index: its handle, batch chain, stats and failure latch (index/store.ts). */
  readonly index: IndexStore;
  /** Closed/closing, the rebuild gate, operations in flight (lib/lifecycle.ts). */
  readonly life: Lifecycle;
  /** Block numbering, the open and unsealed blocks, seals, block files (wal/blocks.ts). */
  readonly blocks: BlockSet;
  /** Pending entries, pins and the chunks gc is dropping (wal/inflight.ts). */
  readonly held: InFlight;
  /** The queue and group commit (wal/commit.ts). */
  readonly commit: CommitPipeline;
  /** Record and pack caches; reads of entries and records (lib/read.ts). */
  readonly reader: Reader;
  /** Snapshot readers, the gc epoch, retired files (lib/snapshots.ts). */
  readonly snapshots: Snapshots;
  readonly query: Query;
  /** Key locks and the overlay of queued heads (lib/heads.ts). */
  readonly heads: Heads;
  /** What a read waits for to see every write resolved before it (lib/landed.ts). */
  readonly landed: Landed;
  /** The write path: seal pool, chunker, puts, deletes, purges (lib/write.ts). */
  readonly writer: Writer;
  /** The adoption chain and deferred adoptions (lib/adopt.ts). */
  readonly adopter: Adopter;
  /** The gc and block-release runs (lib/gc.ts). */
  readonly collector: Collector;
  readonly compression: boolean;
  /** The cluster node serving the database (set by connect). */
  #replicas: ReplicaSource | undefined;

  constructor(dir: string, index: IndexStore, keys: DatabaseKeys, chunker: Chunker, store: BlockStore, opts: OpenOptions, nextSeq: number, descriptor: Descriptor) {
    this.dir = dir;
    this.descriptor = descriptor;
    this.index = index;
    this.keys = keys;
    this.store = store;
    this.compression = opts.compression ?? true;
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    const live = new Lifecycle(index);
    this.life = live;
    this.blocks = new BlockSet(store, index, live, nextSeq, { dir, blockSize, reserveBytes: opts.reserveBytes ?? Math.max(2 * blockSize, 16 * 1024 * 1024), maxUnsealedMs: opts.maxUnsealedMs });
    this.held = new InFlight(index);
    this.commit = new CommitPipeline(index, this.blocks, this.held, new Packer(keys, this.compression, this.held), live);
    this.reader = new Reader(index, this.blocks, keys, opts.recordCacheBytes ?? 16 * 1024 * 1024, () => this.#replicas);
    this.snapshots = new Snapshots(index, store, this.blocks);
    this.heads = new Heads(index, keys);
    this.landed = new Landed(this.heads, this.held);
    this.query = new Query(live, index, this.reader, this.snapshots, this.landed);
    this.writer = new Writer({ life: live, index, keys, commit: this.commit, held: this.held, heads: this.heads, reader: this.reader, chunker, compression: this.compression, durability: opts.durability ?? 'durable', sealInlineBytes: opts.sealInlineBytes });
    this.adopter = new Adopter({ life: live, index, store, keys, blocks: this.blocks, held: this.held, heads: this.heads, reader: this.reader });
    this.collector = new Collector({ life: live, index, store, keys, blocks: this.blocks, held: this.held, commit: this.commit, snapshots: this.snapshots, cluster: () => this.#replicas });
  }

  get replicas(): ReplicaSource | undefined {
    return this.#replicas;
  }

  /** Connects (or with undefined, disconnects) the cluster node serving this database. */
  connect(source: ReplicaSource | undefined): void {
    this.#replicas = source;
  }

  /**
   * Brings the directory back to a state where every acknowledged entry is findable:
   * 1. sealed block files the index does not know (a crash between rename and registration) are
   *    verified entry by entry and registered, which also drops their WAL records;
   * 2. open block files are cut back to the end of their last WAL-recorded entry (bytes beyond it
   *    were never acknowledged) and sealed; files with no WAL record at all are removed;
   * 3. WAL records whose bytes are in neither place mean acknowledged data is missing: that is
   *    reported as corruption rather than silently dropped.
   */
  async recover(): Promise<void> {
    // 0. gc removals a crash interrupted: the block is unregistered, only its file may remain.
    const retired = new Set<string>();
    for await (const [k, v] of this.index.ldb.iterator(keys.range(PREFIX_RETIRED))) {
      retired.add(toHex(k.subarray(1)));
      await this.snapshots.removeRetired(Buffer.from(k.subarray(1)), Number(v.readBigUInt64LE(0)));
    }
    // 1, 2. Unknown sealed blocks registered, open blocks cut back to their WAL records.
    const received = await recoverWal(this.index, this.store, this.blocks, retired);
    for (const file of received) {
      try {
        await this.adopter.adoptNow(file);
      } catch (err) {
        // Merging its versions read records in blocks this member does not keep, and no cluster
        // node serves the database yet: finished once one does (setReplicaSource). Never
        // acknowledged to its sender, so nothing waits on it meanwhile.
        if (!isMissingFile(err) || this.#replicas) throw err;
        this.adopter.defer(file);
      }
    }
    // On a full disk a recovered block stays open (readable, its WAL records kept) and is sealed
    // once there is room: opening must not need free space.
    await this.blocks.sealRecovered();
  }

  /** The file system under the handle died (a test Vfs's `crashed`): stop as a killed process would. */
  lost(): void {
    if (this.life.closed) return;
    this.index.latch(new FailedError('the file system was lost'));
    void this.abandon().catch(() => {});
    void this.index.ldb.close().catch(() => {});
  }

  /** Releases what a half-opened handle holds (worker threads, file handles), writing nothing. */
  async abandon(): Promise<void> {
    this.life.markClosed();
    await this.writer.closePool();
    await this.blocks.files.closeAll();
  }
}

/**
 * Opens (or creates) the database in `dir` and recovers it; `options` are checked already
 * (OuroDB.open). A wrong passphrase or key throws WrongKeyError having read only the descriptor.
 */
export async function openEngine(dir: string, options: OpenOptions, creds: Credentials): Promise<Engine> {
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
    let db: Engine | undefined;
    try {
      rebuild = await checkIndexFormat(ldb, root, store, rebuild);
      if (rebuild) await rebuildFromBlocks(ldb, store, dbKeys);
      const stats = decodeStats(ldb.getSync(keys.meta('stats')));
      const nextSeqBytes = ldb.getSync(keys.meta('nextSeq'));
      const chunker = new Chunker(gearTable(masterKey, databaseId), options.chunkSizes ?? DEFAULT_CHUNK_SIZES);
      db = new Engine(root, new IndexStore(ldb, stats), dbKeys, chunker, store, options, nextSeqBytes ? Number(nextSeqBytes.readBigUInt64LE(0)) : 1, descriptor);
      const opened = db;
      vfs.crashed?.then(() => opened.lost());
      await db.recover();
      return db;
    } catch (err) {
      if (db) await db.abandon();
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
