/**
 * One SharedArrayBuffer, shared with the seal workers, from which streamed chunks take their
 * memory: the chunker copies a chunk into a slot, the worker hashes it and seals it in place
 * (the same memory, seen from its thread), the block's writev writes it from there, and the slot
 * is given back once that write has finished. Nothing moves between threads but offsets.
 *
 * Why: lib/chunk-buffers.ts lent each chunk an ArrayBuffer of its own and moved it to the worker
 * and back by transfer. Each arrival counts as new external memory in the receiving isolate,
 * so a 1 GiB put drove ~23 mark-compacts on the main thread (docs/performance.md, "Where the
 * CPU goes now"), and buffers beyond the 16 MiB kept spare went back to glibc one by one. A slab
 * is allocated once per seal pool, counted once, and reused in place.
 *
 * Slots are carved as a ring, in allocation order: `take` hands out the bytes after the newest
 * slot, and a slot given back frees its bytes only once every older slot has been given back
 * too (chunks are written in the order they were cut, so that is nearly always at once). A slot
 * is never handed out while any part of it is still taken: the invariant the tests check. When
 * the ring has no room, `take` answers -1 and the caller falls back to a buffer of its own
 * (ChunkBuffers): memory stays bounded and nothing waits for a slot.
 */

/** Slot starts are aligned to this many bytes (a cache line: two threads never share one). */
const ALIGN = 64;

interface Taken {
  at: number;
  end: number;
  given: boolean;
}

export class ChunkSlab {
  /** The memory itself: shared with the seal workers through workerData. */
  readonly memory: SharedArrayBuffer;
  /** Slots taken, oldest first (`#first` is the index of the oldest in `#order`). */
  #order: Taken[] = [];
  #first = 0;
  readonly #byStart = new Map<number, Taken>();
  /** Where the next slot starts when there is room after the newest one. */
  #head = 0;

  constructor(bytes: number) {
    this.memory = new SharedArrayBuffer(Math.ceil(bytes / ALIGN) * ALIGN);
  }

  /** Slots taken and not yet freed (given back, or waiting behind an older one). */
  get taken(): number {
    return this.#order.length - this.#first;
  }

  /** The offset of `length` bytes nobody else holds, or -1 when the ring has no room for them. */
  take(length: number): number {
    const size = Math.ceil(Math.max(length, 1) / ALIGN) * ALIGN;
    const capacity = this.memory.byteLength;
    let at = -1;
    if (this.taken === 0) {
      if (size <= capacity) at = 0;
    } else {
      const tail = this.#order[this.#first]!.at; // the oldest slot still taken
      if (this.#head > tail) {
        // Not wrapped: free space after the newest slot, then before the oldest.
        if (this.#head + size <= capacity) at = this.#head;
        else if (size <= tail) at = 0;
      } else if (this.#head + size <= tail) {
        // Wrapped: free space only between the newest and the oldest.
        at = this.#head;
      }
    }
    if (at < 0) return -1;
    const slot: Taken = { at, end: at + size, given: false };
    this.#order.push(slot);
    this.#byStart.set(at, slot);
    this.#head = slot.end;
    return at;
  }

  /** A view of `length` bytes at `at` (a slot's memory; a Buffer, as the write path expects). */
  view(at: number, length: number): Buffer {
    return Buffer.from(this.memory, at, length);
  }

  /**
   * Gives the slot at `at` back: call it once nothing reads or writes it any more (its write has
   * finished, or the chunk will not be written and no worker holds it). Once only; an offset
   * that is not a taken slot's start is ignored.
   */
  give(at: number): void {
    const slot = this.#byStart.get(at);
    if (!slot || slot.given) return;
    slot.given = true;
    this.#byStart.delete(at);
    while (this.#first < this.#order.length && this.#order[this.#first]!.given) this.#first++;
    if (this.#first === this.#order.length) {
      this.#order = [];
      this.#first = 0;
      this.#head = 0;
    } else if (this.#first > 1024) {
      this.#order = this.#order.slice(this.#first);
      this.#first = 0;
    }
  }
}
