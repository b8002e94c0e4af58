/**
 * InFlight: what writes in progress hold, the one contract between deduplication and gc.
 *
 * Owns, and is the only code that changes:
 *   - the pending entries (`pending`): every entry appended (or gathered into a pack) and not yet
 *     committed, by hex id. Set by the commit pipeline when it takes an entry, removed when the
 *     entry commits or is rejected (wal/commit.ts, wal/packer.ts);
 *   - the pins (`pin`/`unpin`): chunks that puts in progress reference. A put pins a chunk in the
 *     same synchronous section as its dedup check finds it stored (lib/write.ts, #storeChunk), and
 *     unpins it once its record's commit lands;
 *   - the dying set (`markDying`): chunks gc decided to drop, from that decision (inside its
 *     batch's prepare step) until its batch has landed or failed.
 * gc drops a chunk only when it is neither pinned nor pending; a put treats a dying chunk as
 * absent (`isStored`) and writes a fresh copy, whose location lands after gc's delete.
 */
import type { EntryKind, EntryRow } from '../blockstore/format.js';
import type { OpenBlock } from '../blockstore/store.js';
import type { BatchOp } from '../index/batch.js';
import type { PersistedStats } from '../index/stats.js';
import type { IndexStore, Prepare } from '../index/store.js';
import type { PackSlot } from '../lib/pack.js';

/** An entry appended to an open block and waiting for (or past) its group commit. */
export interface PendingEntry {
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
  /** Index changes that commit with this entry (a keyed version's heads, history, child key). */
  ops?: BatchOp[];
  /** Computes more of them inside the batch chain, where the index is exactly current. */
  prepare?: Prepare;
  /** A purge marker: an object record, but not an object in stats (it stands for none). */
  marker?: boolean;
  /**
   * A copy of an entry stored elsewhere (gc's copy of a live entry): not new data, so stats count
   * only its bytes, and instead of the usual location its batch's prepare step runs this with
   * the copy's encoded location, to switch the index to it or count it dead (lib/gc.ts).
   */
  relocate?: (e: PendingEntry, loc: Buffer, ops: BatchOp[], delta: Partial<PersistedStats>) => void;
  /** A record in a pack: where it lies in the pack's plaintext (set when the pack is sealed). */
  slot?: PackSlot;
}

/** Index changes that commit with an object record (see lib/write.ts, Writer.writeRecord). */
export interface RecordExtra {
  ops?: BatchOp[] | undefined;
  prepare?: PendingEntry['prepare'];
  marker?: boolean;
  /** The put's disk-full epoch: checked again right before the record is appended (CommitPipeline.enqueue). */
  epoch?: number | undefined;
}

export class InFlight {
  readonly #index: IndexStore;
  /** Entries queued and not yet committed, by hex id. */
  readonly #pending = new Map<string, PendingEntry>();
  /**
   * Chunks that puts in progress reference (pin key -> count): gc must keep them. Keyed by the
   * id's first 48 bits as a number (pinKey), not its 64-character hex: a put of a large value
   * holds one pin per chunk until its record commits, ~4,000 per GiB, and a hex key was ~90
   * bytes of string each. Two ids sharing those 48 bits share a count, so each keeps the other
   * while pinned: a pin only ever keeps a chunk, never drops one, so the one effect is that gc
   * may skip an unreferenced chunk until a later pass (at 10^6 pins, for about one chunk in 3 *
   * 10^8 it looks at).
   */
  readonly #pins = new Map<number, number>();
  /** Chunks gc has decided to drop, between that decision and its batch landing. */
  readonly #dying = new Set<string>();

  constructor(index: IndexStore) {
    this.#index = index;
  }

  /** The entry with this id on its way to commit, if any. */
  pending(idHex: string): PendingEntry | undefined {
    return this.#pending.get(idHex);
  }

  isPending(idHex: string): boolean {
    return this.#pending.has(idHex);
  }

  /**
   * Resolves once every entry pending now has committed or failed (never rejects); undefined
   * when none is pending. A read that must see every write resolved before it waits for this
   * (lib/landed.ts): a relaxed write resolves before its commit.
   */
  settled(): Promise<unknown> | undefined {
    if (this.#pending.size === 0) return undefined;
    return Promise.allSettled(Array.from(this.#pending.values(), (e) => e.committed));
  }

  /** The entry is on its way from now on: equal entries deduplicate against it. */
  setPending(idHex: string, entry: PendingEntry): void {
    this.#pending.set(idHex, entry);
  }

  /** The entry committed: the index names it now. */
  committed(idHex: string): void {
    this.#pending.delete(idHex);
  }

  /** The entry failed: forgotten, unless another entry of the id took its place. */
  rejected(idHex: string, entry: PendingEntry): void {
    if (this.#pending.get(idHex) === entry) this.#pending.delete(idHex);
  }

  /**
   * Chunks pinned while a put runs: between the dedup check that finds a chunk stored and the
   * commit of the record that counts a reference to it, gc must not drop it. The put pins the
   * chunk in the same synchronous section as that check (no await between them).
   */
  pin(id: Uint8Array): void {
    const key = pinKey(id);
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
  }

  unpin(id: Uint8Array): void {
    const key = pinKey(id);
    const n = (this.#pins.get(key) ?? 0) - 1;
    if (n > 0) this.#pins.set(key, n);
    else this.#pins.delete(key);
  }

  /** Whether a put in progress holds the chunk, or it is on its way to commit (gc keeps it). */
  isHeld(idHex: string): boolean {
    return this.#pins.has(pinKeyOfHex(idHex)) || this.#pending.has(idHex);
  }

  /** Pins held now (counted once per key; tests). */
  get pinCount(): number {
    return this.#pins.size;
  }

  /** Whether the index names the entry and gc is not dropping it (synchronous). */
  isStored(indexKey: Buffer, idHex: string): boolean {
    return this.#index.get(indexKey) !== undefined && !this.#dying.has(idHex);
  }

  /** gc drops the chunk in the batch being prepared: it counts as absent until `undying`. */
  markDying(idHex: string): void {
    this.#dying.add(idHex);
  }

  undying(idHex: string): void {
    this.#dying.delete(idHex);
  }
}

/** The pins' key of a chunk id: its first 6 bytes, big-endian, as a number (exact below 2^53). */
export function pinKey(id: Uint8Array): number {
  return id[0]! * 2 ** 40 + id[1]! * 2 ** 32 + ((id[2]! << 24) >>> 0) + (id[3]! << 16) + (id[4]! << 8) + id[5]!;
}

/** pinKey of the id whose hex is `idHex`: the number its first 12 hex digits spell. */
function pinKeyOfHex(idHex: string): number {
  return Number.parseInt(idHex.slice(0, 12), 16);
}
