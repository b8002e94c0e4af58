/**
 * ChunkList: a value's chunks in order, held as the record stores them (docs/FORMAT.md: the ids
 * as one byte string of 32 bytes each, the sizes as one array), not as an object per chunk.
 *
 * Why packed: a put holds its chunk list until its record commits, and a large value has many
 * chunks (~4,000 per GiB at the default 256 KiB average). As `{ id, size }` objects, each with a
 * Buffer view of its id, the list and its pins kept ~320 bytes per chunk live for the whole put:
 * ~10 MiB of V8 heap by the end of an 8 GiB put (docs/performance.md, "Cost per byte, eighth
 * round"; with the pins' smaller keys, ~110 bytes now). Packed, a chunk costs its 32-byte id and
 * an 8-byte size (plus the doubling's slack), and a decoded record's list is a view of the
 * record's own bytes: no object per chunk on either path.
 *
 * A put learns its chunks' ids out of order (the seal pool answers when it answers) but must list
 * them in value order, so a place can be taken first (`reserve`) and its id set later (`set`);
 * `ids` refuses a list with a place still without its id.
 */
import { ID_BYTES } from './crypto.js';

/** One chunk, as the few callers that want objects see it (inspect, tests). */
export interface ChunkRef {
  id: Buffer;
  size: number;
}

/** Places taken before the first reallocation (a put of a few MiB needs no more). */
const FIRST_CAPACITY = 8;

export class ChunkList {
  /** The ids, packed; capacity `#ids.length / ID_BYTES`, of which the first `#sizes.length` are used. */
  #ids: Buffer;
  readonly #sizes: number[];
  /** Per place, 1 once its id is set: only a list filled out of order (reserve) has one. */
  #set: Uint8Array | undefined;
  /** Places reserved whose id is not set yet. */
  #unset = 0;
  #bytes = 0;

  /**
   * An empty list, or one over a decoded record's `ids` (kept as given, not copied: the caller
   * passes bytes of their own) and `sizes` (checked by the decoder).
   */
  constructor(ids?: Buffer, sizes?: number[]) {
    this.#ids = ids ?? EMPTY_IDS;
    this.#sizes = sizes ?? [];
    for (let i = 0; i < this.#sizes.length; i++) this.#bytes += this.#sizes[i]!;
  }

  /** A list of the given chunks (the ids are copied). */
  static of(refs: Iterable<{ id: Uint8Array; size: number }>): ChunkList {
    const list = new ChunkList();
    for (const r of refs) list.push(r.id, r.size);
    return list;
  }

  get length(): number {
    return this.#sizes.length;
  }

  /** The sum of the chunks' sizes. */
  get totalSize(): number {
    return this.#bytes;
  }

  /** Appends a chunk whose id is known; returns its place. */
  push(id: Uint8Array, size: number): number {
    const at = this.#take(size);
    this.#ids.set(id.subarray(0, ID_BYTES), at * ID_BYTES);
    if (this.#set) this.#set[at] = 1;
    return at;
  }

  /** Takes the next place for a chunk of `size` whose id comes later (`set`); returns the place. */
  reserve(size: number): number {
    const at = this.#take(size);
    this.#set ??= new Uint8Array(this.#ids.length / ID_BYTES).fill(1, 0, at);
    this.#unset++;
    return at;
  }

  /** Sets the id of reserved place `at`. */
  set(at: number, id: Uint8Array): void {
    if (!this.#set || this.#set[at] !== 0 || at >= this.#sizes.length) throw new Error(`chunk place ${at} is not reserved`);
    this.#ids.set(id.subarray(0, ID_BYTES), at * ID_BYTES);
    this.#set[at] = 1;
    this.#unset--;
  }

  /** Whether place `at` has its id (always, unless reserved and not yet set). */
  has(at: number): boolean {
    return at < this.#sizes.length && (!this.#set || this.#set[at] === 1);
  }

  /** The id of chunk `at`: a view of the list's memory (no copy), valid while the list lives unchanged. */
  id(at: number): Buffer {
    return this.#ids.subarray(at * ID_BYTES, (at + 1) * ID_BYTES);
  }

  size(at: number): number {
    return this.#sizes[at]!;
  }

  /** Every id, packed in order, as the record encodes them: a view, for a complete list only. */
  ids(): Buffer {
    if (this.#unset !== 0) throw new Error(`chunk list has ${this.#unset} places without an id`);
    return this.#ids.subarray(0, this.#sizes.length * ID_BYTES);
  }

  /** The sizes in order (the list's own array: read, do not change). */
  sizes(): readonly number[] {
    return this.#sizes;
  }

  /** The chunks as objects, for callers that are not on a hot path (each id a view, as `id`). */
  *[Symbol.iterator](): IterableIterator<ChunkRef> {
    for (let i = 0; i < this.#sizes.length; i++) yield { id: this.id(i), size: this.#sizes[i]! };
  }

  #take(size: number): number {
    const at = this.#sizes.length;
    if ((at + 1) * ID_BYTES > this.#ids.length) this.#grow();
    this.#sizes.push(size);
    this.#bytes += size;
    return at;
  }

  /** Doubles the id space (a list wrapping a decoded record's ids is copied out of it first). */
  #grow(): void {
    const capacity = Math.max(FIRST_CAPACITY, (this.#ids.length / ID_BYTES) * 2);
    // Past Node's pool size a buffer of its own; below it from the pool, as small lists are many.
    const ids = capacity * ID_BYTES >= 4096 ? Buffer.allocUnsafeSlow(capacity * ID_BYTES) : Buffer.allocUnsafe(capacity * ID_BYTES);
    this.#ids.copy(ids, 0, 0, this.#sizes.length * ID_BYTES);
    this.#ids = ids;
    if (this.#set) {
      const set = new Uint8Array(capacity);
      set.set(this.#set.subarray(0, this.#sizes.length));
      this.#set = set;
    }
  }
}

const EMPTY_IDS = Buffer.alloc(0);
