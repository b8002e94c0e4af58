/**
 * Reader: reads of entries and object records through the index.
 *
 * Owns, and is the only code that changes: the record cache (cleared by `clear` after a rebuild,
 * trimmed by `evict` when a purge forgets records, fed by `remember` with the records puts
 * committed), the cache of opened packs, and the packs being opened (concurrent reads of one
 * pack share its opening). It writes nothing.
 */
import { ENTRY_HEADER_BYTES, type EntryHeader, EntryKind, FLAG_ZSTD, readEntryHeader } from '../blockstore/format.js';
import type { IndexStore, Snapshot } from '../index/store.js';
import { type Location, decodeLocation } from '../index/values.js';
import { keys } from '../index/keys.js';
import type { BlockSet } from '../wal/blocks.js';
import { copyOf, toHex } from './bytes.js';
import { type DatabaseKeys, freeNow, xchachaDecryptRange } from './crypto.js';
import { openEntry } from './entry.js';
import { CorruptionError, NotFoundError } from './errors.js';
import { type OpenedPack, PackCache, type PackSlot, decodePack, recordInPack } from './pack.js';
import { type KeptHeader, PackHeaders } from './pack-headers.js';
import { type ObjectRecord, decodeRecord } from './record.js';
import { RecordCache } from './record-cache.js';

/**
 * A record in an uncompressed pack whose first ChaCha20 block begins at most this far from the
 * pack's entry header is read together with the header, in one pread, bytes between included.
 * A pread of the page cache cost ~4 us here whatever its size, plus ~0.5 us per KiB (fs.readSync,
 * 100,000 reads each of 72 B, 1.1, 4, 8 and 16 KiB): one read saves a syscall while the gap costs
 * less than one.
 */
const ONE_READ_GAP_BYTES = 4096;

/** Pack entry headers kept (Reader.#packHeaders): ~100 bytes each, each standing for its pack's records (lib/pack-headers.ts). */
const PACK_HEADERS_KEPT = 8192;

/** The largest slice `recordNow` reads into its scratch buffer: a pack is ~16 KiB (lib/write.ts PACK_MAX_BYTES). */
const SCRATCH_BYTES = 32 * 1024;

/** Chunks read ahead while streaming a value out. */
const READ_AHEAD = 4;

/** Where a registered block this member does not keep can be fetched from (the cluster node). */
export interface BlockFetcher {
  fetchBlock(id: string, dest: string): Promise<void>;
}

export function isMissingFile(err: unknown): boolean {
  const code = (e: unknown) => (e as { code?: string } | undefined)?.code;
  return code(err) === 'ENOENT' || code((err as { cause?: unknown } | undefined)?.cause) === 'ENOENT';
}

export class Reader {
  readonly #index: IndexStore;
  readonly #blocks: BlockSet;
  readonly #keys: DatabaseKeys;
  readonly #fetcher: () => BlockFetcher | undefined;
  readonly #recordCache: RecordCache;
  readonly #packCache = new PackCache();
  /**
   * Entry headers of uncompressed packs (their nonce and lengths) by `seq@offset`, so a cold read
   * of a record whose pack was read before is one pread of the record's own bytes (see
   * lib/pack-headers.ts for why a kept header is safe to use).
   */
  readonly #packHeaders = new PackHeaders(PACK_HEADERS_KEPT);
  /** Where recordNow reads the ciphertext it decrypts at once (allocated at its first use). */
  #scratch: Buffer | undefined;
  /** Compressed packs being read and opened, by `file@offset`: concurrent reads share one (#readAt). */
  readonly #packsOpening = new Map<string, Promise<OpenedPack>>();

  constructor(index: IndexStore, blocks: BlockSet, keys: DatabaseKeys, recordCacheBytes: number, fetcher: () => BlockFetcher | undefined) {
    this.#index = index;
    this.#blocks = blocks;
    this.#keys = keys;
    this.#fetcher = fetcher;
    this.#recordCache = new RecordCache(recordCacheBytes);
  }

  /** What a put reads before queueing a record it will hand to `remember` once committed. */
  get cacheGeneration(): number {
    return this.#recordCache.generation;
  }

  /** Caches a committed record by its canonical bytes (lib/write.ts, #cacheOnCommit). */
  remember(hash: Buffer, encoded: Uint8Array, generation: number): void {
    this.#recordCache.setEncoded(toHex(hash), encoded, generation);
  }

  /** Forgets cached records (a purge dropped them). */
  evict(hexes: string[]): void {
    this.#recordCache.evict(hexes);
  }

  /** Forgets every cached record (after a rebuild of the index). */
  clear(): void {
    this.#recordCache.clear();
    this.#packHeaders.clear();
  }

  /**
   * The value's bytes in `[start, end)` (the whole value without a range; the caller checked and
   * clipped the range to the value). Only the chunks the range touches are read: the record's
   * chunk sizes say where each chunk begins, so the first one is found without reading any
   * before it, and the last chunk read is the one holding byte `end - 1`. A chunk is one
   * authenticated (and maybe compressed) entry, so the first and last are read whole and sliced.
   */
  async *stream(record: ObjectRecord, snapshot?: Snapshot, range?: { start: number; end: number }): AsyncGenerator<Uint8Array> {
    const start = range?.start ?? 0;
    const end = range?.end ?? record.size;
    if (start >= end) return;
    if (record.inline) {
      // A copy: the record cache holds the record, and every piece stream yields is the
      // caller's own to keep, change or free (bin/cli/put.ts writeValue frees what it wrote).
      yield copyOf(record.inline.subarray(start, end));
      return;
    }
    let next = 0;
    let at = 0; // where chunk `next` begins in the value
    const chunks = record.chunks;
    while (at + chunks.size(next) <= start) at += chunks.size(next++);
    const reads: Array<{ read: Promise<Buffer>; at: number }> = [];
    let readAt = at;
    const refill = () => {
      while (reads.length < READ_AHEAD && next < chunks.length && readAt < end) {
        const read = this.entry(EntryKind.Chunk, chunks.id(next), snapshot);
        read.catch(() => {});
        reads.push({ read, at: readAt });
        readAt += chunks.size(next++);
      }
    };
    refill();
    while (reads.length > 0) {
      const { read, at: chunkAt } = reads.shift()!;
      const chunk = await read;
      refill();
      const from = Math.max(0, start - chunkAt);
      const to = Math.min(chunk.length, end - chunkAt);
      if (to > from) yield from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to);
    }
  }

  /**
   * An object record, authenticated: the entry's AEAD binds its bytes to the hash (the id is in
   * the associated data), so only a holder of the key could have written them under this hash.
   * Recomputing the HMAC over the record as well would cost a fifth of a small read for no
   * further assurance; check({ readData }) still does it, to catch a writer that computed a
   * hash over other bytes than it stored.
   */
  async record(hash: Buffer, snapshot?: Snapshot): Promise<ObjectRecord> {
    const hex = toHex(hash);
    const cached = this.#recordCache.get(hex);
    if (cached) return cached;
    return this.#readRecord(hash, hex, snapshot);
  }

  /**
   * The record at once, without a promise, when that can be done synchronously: from the record
   * cache, or read cold from a record's own entry or an uncompressed pack in a block file whose
   * handle is open (or a compressed pack the pack cache holds). Otherwise undefined, and also on
   * any failure: then `record` reads it and decides the error (a record gc moved since the index
   * was read, a block fetched from the cluster, damage) exactly as before, so this path can only
   * succeed where `record` would have, with the same bytes authenticated the same way.
   * Why: every step of a cold read was synchronous already (getSync, a pread of the page cache,
   * the cipher, the HMAC), but chained through six async functions and their promises, and the
   * ciphertext read into a fresh buffer each time; here it goes into a scratch buffer consumed
   * before anything else runs (docs/performance.md, branch get-sync).
   */
  recordNow(hash: Buffer): ObjectRecord | undefined {
    const hex = toHex(hash);
    const cached = this.#recordCache.get(hex);
    if (cached) return cached;
    try {
      const locBytes = this.#index.get(keys.object(hash));
      if (locBytes === undefined) return undefined;
      const loc = decodeLocation(locBytes);
      const [name, file] = this.#blocks.fileOf(loc);
      let plain: Buffer | undefined;
      if (!loc.slot) {
        const bytes = this.#blocks.files.readNow(name, file, loc.offset, loc.length, this.#scratchBuffer());
        if (bytes?.length !== loc.length) return undefined;
        plain = openEntry(this.#keys.data, bytes, { id: hash, kind: EntryKind.Object }, file, loc.offset);
      } else if ((loc.flags & FLAG_ZSTD) === 0) {
        plain = this.#packedSliceNow(name, file, loc, hash, loc.slot);
      } else {
        const pack = this.#packCache.get(file, loc.offset);
        if (pack) plain = Buffer.from(recordInPack(pack.plain, pack.records, hash, loc.slot, `${file}@${loc.offset}`));
      }
      if (!plain) return undefined;
      const record = decodeRecord(plain, hex);
      this.#recordCache.set(hex, record, plain.length, this.#recordCache.generation);
      return record;
    } catch {
      return undefined;
    }
  }

  #scratchBuffer(): Buffer {
    return (this.#scratch ??= Buffer.allocUnsafeSlow(SCRATCH_BYTES));
  }

  /**
   * #readPackedSlice done synchronously into the scratch buffer (see recordNow), or undefined
   * where that one would read asynchronously, throw or retry. The cipher's output is a buffer of
   * its own, so the scratch is free again once this returns.
   */
  #packedSliceNow(name: string, file: string, loc: Location, id: Buffer, slot: PackSlot): Buffer | undefined {
    const from = slot.offset - (slot.offset % 64);
    const cipherLength = slot.offset + slot.length - from;
    const headerKey = `${loc.seq}@${loc.offset}`;
    const scratch = this.#scratchBuffer();
    const files = this.#blocks.files;
    let h: KeptHeader | undefined = this.#packHeaders.get(headerKey);
    const known = h !== undefined;
    let cipher: Buffer | undefined;
    if (h) {
      cipher = files.readNow(name, file, loc.offset + ENTRY_HEADER_BYTES + from, cipherLength, scratch);
    } else if (ENTRY_HEADER_BYTES + from <= ONE_READ_GAP_BYTES) {
      const both = files.readNow(name, file, loc.offset, ENTRY_HEADER_BYTES + from + cipherLength, scratch);
      if (both?.length !== ENTRY_HEADER_BYTES + from + cipherLength) return undefined;
      h = readEntryHeader(both, 0, file, loc.offset); // copies the nonce out of the scratch
      cipher = both.subarray(ENTRY_HEADER_BYTES + from);
    } else {
      // The header goes at the scratch's end, the ciphertext at its start.
      if (cipherLength > SCRATCH_BYTES - ENTRY_HEADER_BYTES) return undefined;
      const headerBytes = files.readNow(name, file, loc.offset, ENTRY_HEADER_BYTES, scratch.subarray(SCRATCH_BYTES - ENTRY_HEADER_BYTES));
      if (headerBytes?.length !== ENTRY_HEADER_BYTES) return undefined;
      h = readEntryHeader(headerBytes, 0, file, loc.offset);
      cipher = files.readNow(name, file, loc.offset + ENTRY_HEADER_BYTES + from, cipherLength, scratch);
    }
    if (cipher?.length !== cipherLength) return undefined;
    if (h.kind !== EntryKind.Pack || h.flags !== loc.flags || ENTRY_HEADER_BYTES + h.payloadLength !== loc.length || slot.offset + slot.length > h.plainLength) return undefined;
    const plain = xchachaDecryptRange(this.#keys.data, h.nonce, from, cipher).subarray(slot.offset - from);
    if (!this.#keys.objectId(plain).equals(id)) return undefined;
    if (!known) this.#packHeaders.set(headerKey, h);
    return plain;
  }

  async #readRecord(hash: Buffer, hex: string, snapshot?: Snapshot): Promise<ObjectRecord> {
    const generation = this.#recordCache.generation;
    const bytes = await this.entry(EntryKind.Object, hash, snapshot);
    const record = decodeRecord(bytes, hex);
    this.#recordCache.set(hex, record, bytes.length, generation);
    return record;
  }

  /**
   * Reads one entry by its id through the index: an exact-range pread, then authenticate. If the
   * read fails because gc moved the entry and removed its old file between the index lookup and
   * the read, it is retried once at the entry's new location (same id, so same bytes).
   */
  async entry(kind: EntryKind, id: Buffer, snapshot?: Snapshot): Promise<Buffer> {
    const indexKey = kind === EntryKind.Chunk ? keys.chunk(id) : keys.object(id);
    const before = this.#index.get(indexKey, snapshot ? { snapshot } : {});
    try {
      return await this.#readAt(kind, id, before);
    } catch (err) {
      const now = this.#index.get(indexKey);
      if (now === undefined || (before !== undefined && now.equals(before))) throw err;
      return this.#readAt(kind, id, now);
    }
  }

  #readAt(kind: EntryKind, id: Buffer, locBytes: Buffer | undefined): Promise<Buffer> {
    if (locBytes === undefined) {
      return Promise.reject(kind === EntryKind.Object ? new NotFoundError(`no object ${toHex(id)}`) : new CorruptionError(`chunk ${toHex(id)} is referenced but not in the index`, { location: { id: toHex(id) } }));
    }
    const loc = decodeLocation(locBytes);
    const [name, file] = this.#blocks.fileOf(loc);
    const slot = loc.slot;
    if (slot) {
      // A record in a pack: the pack is opened once and kept while its neighbours are read.
      const where = `${file}@${loc.offset}`;
      const cached = this.#packCache.get(file, loc.offset);
      if (cached) return Promise.resolve(Buffer.from(recordInPack(cached.plain, cached.records, id, slot, where)));
      if ((loc.flags & FLAG_ZSTD) === 0) return this.#readPackedSlice(name, file, loc, id, slot);
      // Reads of neighbours arrive together (a tree's files are put, and their heads read, in
      // order, many in flight): they share one opening of the pack rather than each decrypting
      // and decompressing it before the first lands in the cache.
      let opening = this.#packsOpening.get(where);
      if (!opening) {
        opening = this.#readLocated(name, file, loc)
          .then((bytes) => {
            const plain = openEntry(this.#keys.data, bytes, { id: null, kind: EntryKind.Pack }, file, loc.offset);
            const pack = { plain, records: decodePack(plain, where) };
            this.#packCache.set(file, loc.offset, pack);
            return pack;
          })
          .finally(() => this.#packsOpening.delete(where));
        this.#packsOpening.set(where, opening);
      }
      return opening.then((pack) => Buffer.from(recordInPack(pack.plain, pack.records, id, slot, where)));
    }
    return this.#readLocated(name, file, loc).then((bytes) => {
      const plain = openEntry(this.#keys.data, bytes, { id, kind }, file, loc.offset);
      // The sealed bytes were read for this call alone and nothing refers to them once opened:
      // handed back now rather than at the next full collection, which a 1 GiB restore (two
      // fresh buffers per chunk) ran 61 times, with up to ~60 MiB of them waiting for it
      // (docs/performance.md, "Cost per byte", second round).
      freeNow(bytes);
      return plain;
    });
  }

  /** The bytes of the entry at `loc` in block file `file` (cache name `name`), exactly its length. */
  #readLocated(name: string, file: string, loc: Location, at = loc.offset, length = loc.length): Promise<Buffer> {
    // fileOf and the read's handle lookup happen in this same tick, so a seal or eviction cannot
    // close the descriptor between them (FileCache counts the reference before awaiting).
    const read = this.#blocks.files.read(name, file, at, length).catch(async (err: unknown) => {
      // A registered block this cluster member does not keep: fetch it from a holder. A member
      // drops a copy it is not placed on in its repair passes, and one can come between the
      // fetch and this read: then fetched again (three times at most; each fetch is whole).
      const fetcher = this.#fetcher();
      if (!fetcher || !name.startsWith('blk:') || !isMissingFile(err)) throw err;
      for (let attempt = 1; ; attempt++) {
        await fetcher.fetchBlock(name.slice(4), file);
        try {
          return await this.#blocks.files.read(name, file, at, length);
        } catch (again) {
          if (attempt === 3 || !isMissingFile(again)) throw again;
        }
      }
    });
    return read.then((bytes) => {
      if (bytes.length !== length) throw new CorruptionError(`${file}@${loc.offset}: entry truncated`, { location: { file, offset: loc.offset } });
      return bytes;
    });
  }

  /**
   * A record from a pack stored without compression, reading only its own bytes: the entry
   * header and the record's slice of ciphertext. ChaCha20 decrypts any range of a stream on its
   * own; the Poly1305 tag, which covers the whole pack, is not checked, so the record is
   * authenticated by its hash instead: HMAC-SHA256 under the object-id key over the bytes
   * decrypted must give the hash asked for, which only a holder of the key can arrange. A random
   * read then costs about what it did for a record in an entry of its own, instead of
   * decrypting the whole pack.
   * Decryption starts at the 64-byte ChaCha20 block the record begins in (the read starts there),
   * instead of first running the cipher over a buffer of zeros up to the record: one cipher
   * update instead of two and no buffer of zeros. A record near the pack's start is read with
   * its header in one pread (see ONE_READ_GAP_BYTES), and once its pack's header is known
   * (#packHeaders, kept only from a read whose record authenticated) a record is one pread of
   * its own bytes. A record that fails to authenticate under a kept header is read once more
   * with the header read afresh (`useKnown` false), so only the bytes on disk decide an error.
   */
  async #readPackedSlice(name: string, file: string, loc: Location, id: Buffer, slot: PackSlot, useKnown = true): Promise<Buffer> {
    const from = slot.offset - (slot.offset % 64); // the ChaCha20 block the record starts in
    const where = () => ({ file, offset: loc.offset, id: toHex(id) });
    const headerKey = `${loc.seq}@${loc.offset}`;
    const known = useKnown ? this.#packHeaders.get(headerKey) : undefined;
    let h: KeptHeader;
    let cipher: Buffer;
    if (known) {
      h = known;
      cipher = await this.#readLocated(name, file, loc, loc.offset + ENTRY_HEADER_BYTES + from, slot.offset + slot.length - from);
    } else {
      let headerBytes: Buffer;
      if (ENTRY_HEADER_BYTES + from <= ONE_READ_GAP_BYTES) {
        const both = await this.#readLocated(name, file, loc, loc.offset, ENTRY_HEADER_BYTES + slot.offset + slot.length);
        headerBytes = both.subarray(0, ENTRY_HEADER_BYTES);
        cipher = both.subarray(ENTRY_HEADER_BYTES + from);
      } else {
        // Both reads are issued in the same tick (see #readLocated).
        [headerBytes, cipher] = await Promise.all([
          this.#readLocated(name, file, loc, loc.offset, ENTRY_HEADER_BYTES),
          this.#readLocated(name, file, loc, loc.offset + ENTRY_HEADER_BYTES + from, slot.offset + slot.length - from),
        ]);
      }
      h = readEntryHeader(headerBytes, 0, file, loc.offset);
    }
    if (h.kind !== EntryKind.Pack || h.flags !== loc.flags || ENTRY_HEADER_BYTES + h.payloadLength !== loc.length || slot.offset + slot.length > h.plainLength) {
      if (known) {
        this.#packHeaders.delete(headerKey);
        return this.#readPackedSlice(name, file, loc, id, slot, false);
      }
      throw new CorruptionError(`${file}@${loc.offset}: not the pack the index names`, { location: where() });
    }
    const plain = xchachaDecryptRange(this.#keys.data, h.nonce, from, cipher).subarray(slot.offset - from);
    if (!this.#keys.objectId(plain).equals(id)) {
      if (known) {
        this.#packHeaders.delete(headerKey);
        return this.#readPackedSlice(name, file, loc, id, slot, false);
      }
      throw new CorruptionError(`${file}@${loc.offset}: record ${toHex(id)} in its pack does not hash to its id`, { location: where() });
    }
    if (!known) {
      this.#packHeaders.set(headerKey, h);
    }
    return plain;
  }

}
