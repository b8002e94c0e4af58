/**
 * Writer: the write path, from a value to its queued entries.
 *
 *   put -> chunk (FastCDC) -> chunk id (HMAC) -> dedup (InFlight and the index) -> compress,
 *   encrypt (here or on the seal pool) -> CommitPipeline (append, group commit) -> resolve
 *
 * Owns, and is the only code that changes: the seal pool, the chunker's use, and the moving
 * score of small chunks found stored. Keyed records are built under the key's lock (Heads);
 * their index changes commit in the record's own batch. A put pins each chunk in the same
 * synchronous section as its dedup check (InFlight.pin) and unpins it when its record commits.
 */
import { Readable } from 'node:stream';
import { EntryKind } from '../blockstore/format.js';
import type { BatchOp } from '../index/batch.js';
import { keys } from '../index/keys.js';
import { type PersistedStats, addStat } from '../index/stats.js';
import type { IndexStore } from '../index/store.js';
import { decodeLocation, deadBytes, encodeHeads } from '../index/values.js';
import type { CommitPipeline } from '../wal/commit.js';
import type { InFlight, PendingEntry, RecordExtra } from '../wal/inflight.js';
import { toHex } from './bytes.js';
import type { Chunker } from './chunker.js';
import type { DatabaseKeys } from './crypto.js';
import { SEAL_OVERHEAD_BYTES, type SealedEntry, sealEntry } from './entry.js';
import { BadArgumentError, DiskFullError, NotFoundError } from './errors.js';
import { failpoint } from './failpoints.js';
import type { Heads, KeyName } from './heads.js';
import type { Lifecycle } from './lifecycle.js';
import { type Link, checkExpected, checkHeads, parseLink, rowHasContent, smallValue, validateMeta } from './put-options.js';
import type { Reader } from './read.js';
import { ChunkList } from './chunk-list.js';
import { INLINE_MAX_BYTES, type ObjectRecord, comparedFields, encodeRecord } from './record.js';
import { OFFLOAD_MIN_BYTES, SMALL_BATCH_MAX_BYTES, SealPool } from './seal-pool.js';
import type { Durability, PutOptions, PutResult, PutValue } from './types.js';
import { nextHeads, versionNumber } from './versions.js';

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
/**
 * Score (#largeHit, out of 16) from which a large chunk is identified, looked up, and only then
 * sealed (two round trips to the pool); below it, mostly new chunks lately, it is identified and
 * sealed in one (SealPool.identifyAndSeal). A chunk found stored then costs a seal for nothing:
 * one in 16 found stored in a row of new ones costs 1/16 of a seal, against two messages each
 * way saved on every chunk; a value put again moves the score above this within a few chunks.
 */
const LARGE_HITS_IDENTIFY_FIRST = 4;
/** Chunks of one put being sealed at once (on the seal pool) while the next are cut. */
const SEAL_AHEAD = 8;
/**
 * Records up to this size go into a pack when a group commit is already under way (a lone put
 * still writes its record as an entry of its own: nothing would share the pack). A pack is
 * sealed at the start of the next group, or once it holds PACK_MAX_BYTES.
 */
const PACK_RECORD_MAX_BYTES = 16 * 1024;
const EMPTY = Buffer.alloc(0);

export interface WriterParts {
  life: Lifecycle;
  index: IndexStore;
  keys: DatabaseKeys;
  commit: CommitPipeline;
  held: InFlight;
  heads: Heads;
  reader: Reader;
  chunker: Chunker;
  compression: boolean;
  /** Default durability of put and delete. */
  durability: Durability;
  /** OpenOptions.sealInlineBytes (SealPool's `inlineBytes`). */
  sealInlineBytes?: number | undefined;
}

export class Writer {
  readonly #life: Lifecycle;
  readonly #index: IndexStore;
  readonly #keys: DatabaseKeys;
  readonly #commit: CommitPipeline;
  readonly #held: InFlight;
  readonly #heads: Heads;
  readonly #reader: Reader;
  readonly #chunker: Chunker;
  readonly #sealPool: SealPool;
  readonly #compression: boolean;
  readonly durability: Durability;
  /** How many of the last small chunks were found stored, as a moving score (#smallHit). */
  #smallHits = 0;
  /** The same for chunks sent to the seal pool one by one (#largeHit). */
  #largeHits = 0;

  constructor(parts: WriterParts) {
    this.#life = parts.life;
    this.#index = parts.index;
    this.#keys = parts.keys;
    this.#commit = parts.commit;
    this.#held = parts.held;
    this.#heads = parts.heads;
    this.#reader = parts.reader;
    this.#chunker = parts.chunker;
    this.#compression = parts.compression;
    this.durability = parts.durability;
    this.#sealPool = new SealPool(parts.keys.material, { chunkMax: parts.chunker.sizes.max, inlineBytes: parts.sealInlineBytes });
  }

  /** Stops the seal pool's workers (close, or a handle abandoned). */
  closePool(): Promise<void> {
    return this.#sealPool.close();
  }

  /** The checked arguments of a put. */
  args(options: PutOptions): { meta: Record<string, string>; durability: Durability; link: Link } {
    this.#life.checkWritable();
    if (options === null || typeof options !== 'object') throw new BadArgumentError('options must be an object');
    const meta = validateMeta(options.meta);
    const durability = options.durability ?? this.durability;
    if (durability !== 'durable' && durability !== 'relaxed') throw new BadArgumentError("durability must be 'durable' or 'relaxed'");
    const link = parseLink(options);
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new BadArgumentError('signal must be an AbortSignal');
    link.signal = options.signal;
    link.signal?.throwIfAborted();
    return { meta, durability, link };
  }

  putValue(value: PutValue, meta: Record<string, string>, durability: Durability, link: Link): Promise<PutResult> {
    const small = smallValue(value);
    return small ? this.#putRecord(small, new ChunkList(), meta, durability, link) : this.put(value, meta, durability, link);
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
      return { source: this.#chunker.chunkStream(value as AsyncIterable<Uint8Array>, (n) => this.#sealPool.takeChunk(n)), owned: true };
    }
    throw new BadArgumentError('value must be a Uint8Array, a string, a Readable or an AsyncIterable<Uint8Array>');
  }

  /** `cut`: `value` is the chunks themselves (putCut), not a value for the chunker. */
  async put(value: PutValue, meta: Record<string, string>, durability: Durability, link: Link, cut = false): Promise<PutResult> {
    link.epoch = this.#commit.diskFullEpoch;
    const { source, owned } = cut ? { source: value as AsyncIterable<Uint8Array>, owned: false } : this.#chunksOf(value);
    return this.#pinning(link, (chunks) => this.#putChunked(source, owned, chunks, meta, durability, link, cut));
  }

  /**
   * Runs a chunked write whose `body` fills `chunks`, pinning each of them (in the body: see
   * InFlight.pin) until the record that references them commits.
   */
  async #pinning(link: Link, body: (chunks: ChunkList) => Promise<PutResult>): Promise<PutResult> {
    const chunks = new ChunkList();
    // Pins end when the record's commit lands (not when a relaxed put returns, which is earlier).
    let settled: Promise<void> = Promise.resolve();
    link.onQueued = (committed) => (settled = committed);
    try {
      return await body(chunks);
    } finally {
      const unpin = () => {
        // A place without an id (its seal failed) was never pinned.
        for (let i = 0; i < chunks.length; i++) if (chunks.has(i)) this.#held.unpin(chunks.id(i));
      };
      settled.then(unpin, unpin);
    }
  }

  /**
   * concat's body: a value whose bytes are those of the values `parts` names, in order, and whose
   * record lists their chunks, so that no chunk is read, sealed or written again, whatever the
   * parts' sizes. The record format has no whole-value digest and nothing in it says how the
   * chunks were cut (a record is a list of chunk ids and sizes, docs/FORMAT.md), so such a record
   * is an ordinary one: reads, dedup, gc, check, rebuild, export and replication treat it as any
   * other. Its chunk list is simply not the one this database's chunker would cut from the same
   * bytes, so a put of those bytes makes a different record (and `ifChanged` tells them apart).
   *
   * A part stored inline has no chunk to name: when the whole fits inline and every part is
   * inline, the result is inline too; otherwise each run of consecutive inline parts is cut by the
   * chunker and stored like a put's chunks (an S3 upload's last part, the only one that may be
   * that small, costs one new chunk). Empty parts add nothing.
   *
   * Each named chunk is pinned, and checked to be stored, in one synchronous section, as put's
   * dedup check does: a part purged (and its chunks collected) since its record was read fails
   * the concatenation with NotFoundError rather than leave a record naming a missing chunk. The
   * record's batch counts one reference per occurrence (Writer.writeRecord), so the chunks stay
   * live as long as either the parts or the concatenation does.
   */
  async concat(parts: Buffer[], meta: Record<string, string>, durability: Durability, link: Link): Promise<PutResult> {
    link.epoch = this.#commit.diskFullEpoch;
    const records: ObjectRecord[] = [];
    for (const hash of parts) {
      link.signal?.throwIfAborted();
      // A part put 'relaxed' may not have committed yet: its record is readable once it has.
      await this.#held.pending(toHex(hash))?.committed.catch(() => {});
      const r = await this.#reader.record(hash);
      if (r.type !== 'value') throw new BadArgumentError(`object ${toHex(hash)} is a ${r.type}, not a value`);
      records.push(r);
    }
    const size = records.reduce((n, r) => n + r.size, 0);
    if (size <= INLINE_MAX_BYTES && records.every((r) => r.chunks.length === 0)) {
      return this.#putRecord(Buffer.concat(records.map((r) => r.inline ?? EMPTY)), new ChunkList(), meta, durability, link);
    }
    return this.#pinning(link, async (chunks) => {
      const sealing: Promise<unknown>[] = [];
      let run: Uint8Array[] = [];
      const storeRun = async () => {
        for (const piece of this.#chunker.chunkBytes(Buffer.concat(run))) {
          const p = this.#storeChunk(piece, chunks, false);
          p.catch(() => {});
          sealing.push(p);
          if (sealing.length >= SEAL_AHEAD) await sealing.shift();
        }
        run = [];
      };
      for (const r of records) {
        link.signal?.throwIfAborted();
        if (r.chunks.length === 0) {
          if (r.inline && r.inline.byteLength > 0) run.push(r.inline);
          continue;
        }
        if (run.length > 0) await storeRun();
        for (let i = 0; i < r.chunks.length; i++) {
          const id = r.chunks.id(i);
          const hex = toHex(id);
          this.#held.pin(id);
          chunks.push(id, r.chunks.size(i));
          if (!this.#held.isPending(hex) && !this.#held.isStored(keys.chunk(id), hex)) throw new NotFoundError(`a chunk of the value ${toHex(parts[records.indexOf(r)]!)} is gone (purged and collected while it was concatenated)`);
        }
      }
      if (run.length > 0) await storeRun();
      await Promise.all(sealing);
      failpoint('concat.before-record');
      return this.#putRecord(null, chunks, meta, durability, link);
    });
  }

  async #putChunked(source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, owned: boolean, chunks: ChunkList, meta: Record<string, string>, durability: Durability, link: Link, cut = false): Promise<PutResult> {
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
      if (link.signal?.aborted) {
        // Cut into the pool's slab perhaps: its slot must not stay taken (lib/chunk-slab.ts).
        if (owned) this.#sealPool.giveBack(chunk);
        link.signal.throwIfAborted();
      }
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
  #storeChunk(chunk: Uint8Array, chunks: ChunkList, owned: boolean): Promise<unknown> {
    const size = chunk.byteLength;
    const small = size < OFFLOAD_MIN_BYTES;
    // Work the pool would take, kept here while the handle has sealed too little to be worth a
    // worker (SealPool.offload): a tree of small files then never starts one.
    if ((!small || this.#life.inFlightCount >= SMALL_OFFLOAD_INFLIGHT) && !this.#sealPool.offload(size)) return this.#sealChunkHere(chunk, chunks, owned);
    if (small && this.#life.inFlightCount >= SMALL_OFFLOAD_INFLIGHT) {
      // Mostly stored already (a tree put again): the id here and the dedup check first, so a
      // chunk found stored costs no round trip to the pool, nor a seal that would be dropped.
      if (this.#smallHits >= SMALL_HITS_CHECK_FIRST) {
        const id = this.#keys.chunkId(chunk);
        const idHex = toHex(id);
        const inflight = this.#held.pending(idHex);
        if (inflight || this.#held.isStored(keys.chunk(id), idHex)) {
          // As CommitPipeline.store answers for a stored chunk: the entry on its way, or none once committed.
          this.#smallHit(true);
          chunks.push(id, size);
          this.#held.pin(id);
          return Promise.resolve(inflight);
        }
      }
      const at = chunks.reserve(size);
      return this.#sealPool.sealSmall(EntryKind.Chunk, chunk, this.#compression).then(({ id, sealed }) => {
        chunks.set(at, id);
        this.#held.pin(id);
        let found = false;
        const stored = this.#commit.store(EntryKind.Chunk, id, () => sealed, 0, 0, () => (found = true));
        this.#smallHit(found); // CommitPipeline.store tells a stored chunk before its first await
        return stored;
      });
    }
    if (small) return this.#sealChunkHere(chunk, chunks, owned);
    const at = chunks.reserve(size);
    if (this.#largeHits < LARGE_HITS_IDENTIFY_FIRST) {
      // Mostly new chunks lately: hashed and sealed in one round trip to the pool; one found
      // stored was sealed for nothing and is let go.
      return this.#sealPool.identifyAndSeal(chunk, owned, EntryKind.Chunk, this.#compression).then((sealed) => {
        chunks.set(at, sealed.id);
        this.#held.pin(sealed.id);
        let found = false;
        const stored = this.#commit.store(EntryKind.Chunk, sealed.id, () => sealed, 0, 0, () => {
          found = true;
          sealed.release?.();
        });
        this.#largeHit(found); // CommitPipeline.store tells a stored chunk before its first await
        return stored;
      });
    }
    return this.#sealPool.identify(chunk, owned).then((ticket) => {
      chunks.set(at, ticket.id);
      this.#held.pin(ticket.id);
      let found = false;
      const stored = this.#commit.store(EntryKind.Chunk, ticket.id, () => this.#sealPool.seal(ticket, EntryKind.Chunk, this.#compression), 0, 0, () => {
        found = true;
        this.#sealPool.drop(ticket);
      });
      this.#largeHit(found);
      return stored;
    });
  }

  /** Scores a large chunk found stored (or not): below LARGE_HITS_IDENTIFY_FIRST of the last ~16, #storeChunk seals before the dedup check. */
  #largeHit(found: boolean): void {
    this.#largeHits += ((found ? 16 : 0) - this.#largeHits) / 16;
  }

  /**
   * Hashes and seals a chunk on this thread. An owned chunk (memory the chunker took with
   * SealPool.takeChunk: a slot of the slab or one of `buffers`) is sealed in place, as a worker
   * seals it (its memory has room for the entry), and goes back once its write has finished
   * (the entry's release), or at once when it is found stored already or did not fit. Sealed
   * into a fresh buffer instead, the first SEAL_INLINE_BYTES of a large put (sealed here before
   * a worker starts) left ~230 buffers of ~280 KiB to the collector in its first second, 64 MiB
   * that glibc's heap kept for the rest of the put: the 1 GiB ingest's peak RSS ~15-20 MiB
   * higher (docs/performance.md, "The library's memory while ingesting").
   */
  #sealChunkHere(chunk: Uint8Array, chunks: ChunkList, owned: boolean): Promise<unknown> {
    const id = this.#keys.chunkId(chunk);
    chunks.push(id, chunk.byteLength);
    this.#held.pin(id);
    const giveBack = owned ? () => this.#sealPool.giveBack(chunk) : undefined;
    const seal = (): SealedEntry => {
      let sealed: SealedEntry;
      try {
        const room = owned ? Math.min(chunk.buffer.byteLength - chunk.byteOffset, chunk.byteLength + SEAL_OVERHEAD_BYTES) : 0;
        sealed = sealEntry(this.#keys.data, EntryKind.Chunk, id, chunk, this.#compression, owned ? Buffer.from(chunk.buffer, chunk.byteOffset, room) : undefined);
      } catch (err) {
        giveBack?.();
        throw err;
      }
      if (!giveBack || sealed.bytes.buffer !== chunk.buffer) {
        giveBack?.();
        return sealed;
      }
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        giveBack();
      };
      return { ...sealed, release };
    };
    return this.#commit.store(EntryKind.Chunk, id, seal, 0, 0, giveBack);
  }

  /** Scores a small chunk found stored (or not): SMALL_HITS_CHECK_FIRST of the last ~16 found makes #storeChunk look before sealing. */
  #smallHit(found: boolean): void {
    this.#smallHits += ((found ? 16 : 0) - this.#smallHits) / 16;
  }

  /** Stores the object record of a value whose chunks are stored (or that goes inline). */
  async #putRecord(inline: Uint8Array | null, chunks: ChunkList, meta: Record<string, string>, durability: Durability, link: Link): Promise<PutResult> {
    const size = inline ? inline.byteLength : chunks.totalSize;
    const record: ObjectRecord = { type: 'value', size, chunks, key: null, parent: link.parent, prev: [], created: link.created ?? Date.now(), meta, inline };
    const hash = await this.writeRecord(record, link, durability);
    return { hash: toHex(hash), size, ...(link.kept ? { unchanged: true } : {}) };
  }

  /**
   * Writes an object record with its index changes: chunk references, the parent's child key and,
   * for a keyed record, the key's heads and history. They commit in the record's own batch, so
   * after a crash either all of them exist or none. Keyed records are built under the key's lock:
   * reading the heads, the compare-and-set check and queueing the record happen with no other put
   * of that key in between.
   */
  async writeRecord(record: ObjectRecord, link: Link, durability: Durability): Promise<Buffer> {
    link.signal?.throwIfAborted();
    this.#checkDiskFullEpoch(link);
    const chunks = record.chunks;
    const prepare = chunks.length === 0 ? undefined : () => {
      // Indexed, not for-of, as the other per-chunk loops of a put's end (see index/counters.ts).
      for (let i = 0; i < chunks.length; i++) this.#index.changeRef(chunks.id(i), +1);
    };
    const inlineSize = record.inline ? record.inline.byteLength : 0;
    if (!link.key) {
      if (link.parent) this.#checkParent(link.parent);
      const generation = this.#reader.cacheGeneration;
      const encoded = encodeRecord(record);
      const { hash, store } = await this.#identifyRecord(encoded);
      checkExpected(link, hash);
      this.#checkDiskFullEpoch(link); // again: the pool's round trip was a window for a failure
      const ops = link.parent ? [{ type: 'put' as const, key: keys.child(link.parent, hash), value: EMPTY }] : undefined;
      const entry = await store(record.size, inlineSize, { ops, prepare, epoch: link.epoch });
      if (entry) this.#cacheOnCommit(entry, hash, encoded, generation);
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
      const generation = this.#reader.cacheGeneration;
      const encoded = encodeRecord(record);
      const { hash, store } = await this.#identifyRecord(encoded);
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
      if (stored) this.#cacheOnCommit(stored, hash, encoded, generation);
      if (stored) link.onQueued?.(stored.committed);
      return { hash, stored };
    };
    // putHinted holds the key's lock already.
    const entry = await (link.held ? write() : this.#heads.withKey(key.name, write));
    if (entry.stored) await (durability === 'durable' ? entry.stored.committed : entry.stored.written);
    return entry.hash;
  }

  /**
   * Once `entry` commits, the record it stores goes into the reader's record cache, so a read of
   * a value just written (getByKey after put, the common case) costs no index lookup of the
   * record's location, no block-file read and no decryption. Not before the commit: until then
   * get(hash) answers NotFoundError, as the index does. `generation` was read before the record
   * was queued, so a purge that forgot it meanwhile keeps it out (RecordCache.setEncoded).
   */
  #cacheOnCommit(entry: PendingEntry, hash: Buffer, encoded: Uint8Array, generation: number): void {
    if (entry.id !== hash && !entry.id.equals(hash)) return;
    entry.committed.then(() => this.#reader.remember(hash, encoded, generation), () => {});
  }

  /**
   * A chunk this value shares with a write that failed for lack of space may be gone with it.
   * Rather than trace which, a put that saw such a failure fails too (records after a failed
   * entry in the queue are rejected with it the same way; see CommitPipeline's #rejectFrom).
   */
  #checkDiskFullEpoch(link: Link): void {
    if (link.epoch !== undefined && link.epoch !== this.#commit.diskFullEpoch) throw new DiskFullError('the disk filled up while this value was written; nothing of it was kept');
  }

  /**
   * An encoded object record's hash and how to store it. While a group commit is under way, or
   * other puts are in flight, a small record joins the open pack (CommitPipeline.joinPack): it would wait for
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
    if (this.#life.inFlightCount >= SMALL_OFFLOAD_INFLIGHT && bytes.byteLength <= SMALL_BATCH_MAX_BYTES && this.#sealPool.offload(bytes.byteLength)) {
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

  #checkParent(parent: Buffer): void {
    const hex = toHex(parent);
    if (this.#held.isPending(hex) || this.#index.get(keys.object(parent)) !== undefined) return;
    throw new NotFoundError(`parent ${hex} does not exist`);
  }

  /** purge()'s work under the key's lock: resolves to the number of versions forgotten. */
  purge(k: KeyName): Promise<number> {
    const key = k.name;
    return this.#heads.withKey(key, async () => {
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
          for (let c = 0; c < r.chunks.length; c++) this.#index.changeRef(r.chunks.id(c), -1);
        });
      };
      const marker: ObjectRecord = { type: 'purge', size: 0, chunks: new ChunkList(), key, parent: null, prev: versions.map((v) => v.hash).sort(Buffer.compare), created: Date.now(), meta: {}, inline: null };
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
  }
}
