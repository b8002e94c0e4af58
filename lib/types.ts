/**
 * The public types of OuroDB's API (options, results, reports), re-exported by lib/db.ts and
 * lib/index.ts. No state, no behaviour but the Tombstone constants.
 */
import type { Readable } from 'node:stream';
import type { ChunkSizes } from './chunker.js';
import type { Argon2Cost } from './keyring.js';
import type { ObjectType } from './record.js';
import type { Vfs } from './vfs/vfs.js';

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
  /** Bytes of decoded small object records kept in memory for reads (default 16 MiB; 0: none). */
  recordCacheBytes?: number;
  /**
   * Bytes of chunks and records this handle hashes and seals on the calling thread before it
   * starts its seal workers (default 64 MiB, SEAL_INLINE_BYTES; 0: a worker from the first
   * large chunk, as before 2026-12-07). A worker is a second V8 isolate, ~40 MiB of RSS: a
   * handle that writes less than this never starts one, a larger ingest moves its sealing to
   * workers after the first 64 MiB (docs/operations.md, "Memory on a small machine").
   */
  sealInlineBytes?: number;
  /** Create the database if `dir` has none (default true); false: NotFoundError instead. */
  create?: boolean;
  /**
   * Free space to leave on the disk (default: twice the block size, at least 16 MiB). A new
   * block is not started with less than this plus a block free: the put fails with
   * OURO_DISK_FULL while LevelDB still has room for its log and compactions, so the handle goes
   * on once space is freed (a LevelDB write that hits a full disk stops the handle). 0: no guard.
   */
  reserveBytes?: number;
  /**
   * The file system for every file OuroDB writes itself (descriptor, blocks); default the real
   * one. Tests pass a crashable or error-injecting one (lib/vfs). The index directory is always
   * LevelDB's, on the real disk.
   */
  fs?: Vfs;
  /**
   * Seal the open block once its oldest entry is this old, even if it is not full (default: no
   * limit). A cluster node sets it: data reaches other members only once sealed, so this bounds
   * how long an acknowledged write may exist on one node only.
   */
  maxUnsealedMs?: number;
  /**
   * Refuse to open (OURO_BAD_CONFIG) when this process's LevelDB does not verify the checksums
   * of the index blocks it reads (default false: open, and warn once per process). That happens
   * only where neither the shipped binding nor a local build of it loads: see `levelBinding`
   * and docs/design.md, "Verified index reads".
   */
  requireVerifiedIndex?: boolean;
}

export interface FlushOptions {
  /**
   * Also wait until this many cluster members, this one included, hold every block sealed so
   * far durably (needs a node serving the database; see docs/node.md). Default 1: this one.
   */
  replicas?: number;
  /**
   * On a cluster at ec K+M (`ouro cluster redundancy ec K+M`), instead of `replicas`: also wait
   * until this many shards (K to K+M) of every block sealed so far as shards are durable, each
   * on a member of its own; blocks below the small-block line, kept whole, wait for shards - K + 1
   * copies (as many losses survived). `replicas` on such a cluster is refused (OURO_BAD_ARGUMENT):
   * whole copies are not what protects its blocks. docs/node.md, "Redundancy".
   */
  shards?: number;
  /** Gives up waiting for replicas (rejects with the signal's reason); sealing is not undone. */
  signal?: AbortSignal;
}

/** A registered block, as `blocks()` lists it. */
export interface BlockListing {
  id: string;
  size: number;
  /** Received from another member (adoptBlock) rather than sealed here. */
  adopted: boolean;
}

/**
 * What a cluster node plugs into a database it serves (carrier/replication.ts): waiting for
 * replicas, and fetching a registered block whose file this member does not keep.
 */
export interface ReplicaSource {
  /** Resolves once every block this database sealed so far is held by `replicas` members. */
  settled(replicas: number, signal?: AbortSignal): Promise<void>;
  /** Resolves once `shards` shards of every block this database sealed as shards are durable (FlushOptions.shards). */
  settledShards?(shards: number, signal?: AbortSignal): Promise<void>;
  /** Puts block `id` (hex) at `dest`, verified and durable, from a member that holds it. */
  fetchBlock(id: string, dest: string): Promise<void>;
}

/**
 * States of a block deleted across the cluster (index key 't'; docs/node.md, "Deletion across
 * the cluster"). A tombstone is kept for good: a block once deleted is never adopted again.
 */
export const Tombstone = {
  /** Released here (another member retired it): nothing here names it; never adopted again. */
  Released: 0,
  /** Retired by this database's gc: the other members are asked to release it. */
  Retired: 1,
  /** Every member released it: the holders are asked to delete their copies. */
  Dropping: 2,
} as const;
export type TombstoneState = (typeof Tombstone)[keyof typeof Tombstone];

export interface ReleaseReport {
  /** False when something still named the block at the end (a write raced it): release again. */
  released: boolean;
  /** Entries moved to another adopted copy, copied into this database's open block, dropped as dead. */
  repointed: number;
  copied: number;
  dropped: number;
}

export interface PutOptions {
  /** User metadata, stored encrypted in the object record. */
  meta?: Record<string, string>;
  /** File the value under this key: it becomes the key's head, the old head its predecessor. */
  key?: string;
  /** Hash of an existing object this one is a child of (see children/parent). */
  parent?: string;
  /**
   * Compare-and-set on `key`: the put happens only if the key's heads are exactly these (one
   * hash, or all of them to merge several heads), or, with null, only if the key has no version.
   * Otherwise it fails with ConflictError (OURO_CONFLICT) and writes nothing.
   */
  ifHead?: string | string[] | null;
  /**
   * Advanced: the predecessors to record instead of the current heads, as a writer that had not
   * seen the newer versions would (each must be a version of `key`). The key then has several
   * heads until a put names them all. Replication uses this model; most callers never need it.
   * An empty array records a first version (no predecessor), as an importer of a history does.
   */
  prev?: string[];
  /** Advanced: the creation time to record (default: now). Import uses it to keep histories as they were. */
  created?: Date | number;
  /**
   * Advanced: the hash the new record must have. If it would have another, the put fails with
   * CorruptionError before the record is written (chunks it stored stay unreferenced until gc).
   * Import of an archive that keeps its source's hashes passes each one (lib/archive.ts).
   */
  expectHash?: string;
  /**
   * Cancels the put: it rejects with the signal's reason and writes no object record (chunks it
   * already stored stay unreferenced until gc collects them).
   */
  signal?: AbortSignal;
  /**
   * With `key`: write a new version only if it would differ from the key's head (value, metadata
   * or parent); otherwise resolve to the head's hash and write nothing, as a backup of an
   * unchanged file should. Only applies when the key has exactly one head, a value.
   * `{ ignoreMeta: [names] }`: the same, except that the metadata entries named are left out of
   * the comparison (a value that differs from the head only in them keeps the head, whose
   * entries stay as they were). With `hint`, an equal value is told by the key's hint row,
   * without reading the head's record, when the head was put (or last kept) with a hint and the
   * same `ignoreMeta`.
   */
  ifChanged?: boolean | { ignoreMeta: readonly string[] };
  /**
   * With `key`: up to 1 KiB that `matchHint(key, hint)` later recognizes, bound to the head this
   * put leaves (the version it makes, or the head `ifChanged` keeps). Not part of the version,
   * never exported or replicated; the index keeps only a keyed tag of it. `ouro put` gives the
   * stat a file was read with, so the next backup can tell the file is unchanged without reading
   * it or the head's record.
   */
  hint?: Uint8Array;
  /**
   * 'durable' (default): resolve once the value is on disk (fsync) and survives a crash.
   * 'relaxed': resolve once the bytes are handed to the OS; the fsync still follows within
   * milliseconds, but a crash before it may lose this put (never half of it).
   * Either way a write is visible to every read made after it resolved (get, stream, has, stat,
   * getByKey, head, heads, matchHint, history, list, children, objects, stats): a read first
   * waits for the commit of the queued writes it depends on, which follows within milliseconds
   * (lib/landed.ts). If that commit fails (a full disk, a failed fsync), the read does not fail
   * with it: it sees the database without that write.
   */
  durability?: Durability;
}

export type PutValue = Uint8Array | string | Readable | AsyncIterable<Uint8Array>;

export interface PutResult {
  hash: string;
  size: number;
  /** True when `ifChanged` found the value equal to the key's head and kept it (nothing written). */
  unchanged?: boolean;
}

/**
 * A byte range of a value for `get` and `stream`: `start` (default 0) up to `end` (default the
 * value's size), end exclusive. A range reaching past the end of the value is clipped to it, so
 * a `start` at or past the end gives no bytes.
 */
export interface ReadRange {
  start?: number;
  end?: number;
}

export interface ObjectStat {
  hash: string;
  type: ObjectType;
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
  /** Whether LevelDB verifies the checksum of every index block it reads (see `levelBinding`). */
  indexReadsVerified: boolean;
}

export interface ListOptions {
  /** Only keys starting with this (default: all keys). */
  prefix?: string;
  /** Start after this key (exclusive): pass the last key of one page to get the next. */
  after?: string;
  /** At most this many keys (default: no limit). */
  limit?: number;
  /** Also list keys whose head is a tombstone (default false). */
  includeDeleted?: boolean;
}

export interface ListEntry {
  key: string;
  /** The newest head (highest version number; ties by hash). */
  hash: string;
  /** Every head, newest first: more than one while concurrent versions are unmerged. */
  heads: string[];
  /** True when the newest head is a tombstone (only listed with includeDeleted). */
  deleted: boolean;
}

export interface Version {
  hash: string;
  /** Version number: 1 for a key's first version, 1 + the largest of its predecessors' after. */
  version: number;
  type: ObjectType;
  size: number;
  created: Date;
  meta: Record<string, string>;
  prev: string[];
}

/** One object of `db.objects()`: its record's fields and a reader of its value. */
export interface ExportedObject {
  hash: string;
  type: 'value' | 'tombstone';
  key: string | null;
  parent: string | null;
  prev: string[];
  /** Milliseconds since the Unix epoch. */
  created: number;
  meta: Record<string, string>;
  size: number;
  /**
   * Plaintext size of each chunk the value is stored as, in value order; empty when it is stored
   * inline. An archive that keeps its source's hashes carries it, so that the import cuts the
   * value exactly so (`putCut`) whatever chunk sizes either database was opened with.
   */
  chunkSizes: number[];
  data(): AsyncIterable<Uint8Array>;
}

export interface GcOptions {
  /** Compact sealed blocks whose live share of entry bytes is below this (0..1, default 0.5). */
  threshold?: number;
  /**
   * The share of time gc's copying may take while puts are being written (0 < pace <= 1,
   * default 1/3): after each slice of copies, gc rests for (1 - pace) / pace times as long as
   * the slice took, if puts were queued meanwhile. 1 never rests. With no puts it never rests.
   */
  pace?: number;
  /** Called after each block: the report so far and the number of candidate blocks. */
  onProgress?: (report: GcReport, candidates: number) => void;
}

export interface GcReport {
  /** Blocks whose live entries were copied out and whose files were removed. */
  blocksRemoved: number;
  /** Dead entries (chunks no live object names) dropped from the index. */
  entriesDropped: number;
  /** Live entry bytes copied into new blocks. */
  bytesCopied: number;
  /** Block file bytes removed from disk. */
  bytesFreed: number;
  /** Milliseconds gc rested between slices of copies because puts were being written (GcOptions.pace). */
  restedMs: number;
}

export interface CheckOptions {
  /** Read every entry (or a sample) and authenticate it with the key (default false). */
  readData?: boolean;
  /** With readData, the share of entries to authenticate, 0..1 (default 1). */
  sample?: number;
  /** Called now and then with the entries checked and the entry bytes read so far. */
  onProgress?: (entries: number, bytesRead: number) => void;
}

export interface Problem {
  /** What is wrong, as a stable word: see docs/errors.md ("check problems"). */
  kind: string;
  /** The block file involved (hex id) or open block (`open:<seq>`). */
  block?: string;
  /** The chunk id or object hash involved (hex). */
  id?: string;
  key?: string;
  message: string;
}

export interface CheckReport {
  ok: boolean;
  blocks: number;
  entries: number;
  /** Entries authenticated with the key (readData). */
  entriesRead: number;
  problems: Problem[];
}
