/**
 * Buffers for large chunks, lent out and taken back, so that streaming ingest allocates almost
 * nothing per chunk. A chunk's buffer makes a round trip: the chunker copies the chunk into it,
 * the seal pool moves it to a worker (a transfer, no copy), the worker seals the chunk in place
 * (lib/entry.ts: the sealed entry is the plaintext plus SEAL_OVERHEAD_BYTES) and moves it back,
 * the block writes it, and once that write has finished the buffer comes back here.
 *
 * Why: every fresh buffer is memory outside the JavaScript heap, and V8 starts a full garbage
 * collection each time some tens of MiB of it have been allocated. A 512 MiB ingest allocated
 * two fresh buffers per chunk (the chunk's copy and its sealed entry) and ran ~46 full
 * collections; GC took about 1 ms per MiB of CPU across threads, on a machine with two cores
 * that ingest keeps busy (docs/performance.md).
 *
 * Capacities are powers of two plus the seal overhead, from the smallest chunk worth a worker
 * (OFFLOAD_MIN_BYTES) to the chunker's largest, so a chunk never wastes more than half its
 * buffer. At most `idleLimit` bytes of spare buffers are kept; the rest go to the collector.
 */
import { SEAL_OVERHEAD_BYTES } from './entry.js';

export class ChunkBuffers {
  readonly #minBytes: number;
  readonly #maxBytes: number;
  /** The smallest and largest capacity handed out. */
  readonly #minCapacity: number;
  readonly #maxCapacity: number;
  readonly #idleLimit: number;
  /** Spare buffers by capacity. */
  readonly #spares = new Map<number, ArrayBuffer[]>();
  #idleBytes = 0;

  /** Pools chunks of `minBytes` to `maxBytes` bytes, keeping at most `idleLimit` bytes spare. */
  constructor(minBytes: number, maxBytes: number, idleLimit: number) {
    this.#minBytes = minBytes;
    this.#maxBytes = maxBytes;
    this.#minCapacity = capacityOf(minBytes);
    this.#maxCapacity = capacityOf(maxBytes);
    this.#idleLimit = idleLimit;
  }

  /** Bytes of spare buffers held. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /**
   * A buffer for `length` bytes that nobody else holds, whose ArrayBuffer may be moved to a
   * worker. Within the pooled range it starts at offset 0 of an ArrayBuffer with room for the
   * sealed entry; outside it, it is exactly `length` bytes of its own.
   */
  take(length: number): Buffer {
    const capacity = this.#capacityFor(length);
    if (capacity === undefined) return Buffer.allocUnsafeSlow(length);
    const spare = this.#spares.get(capacity)?.pop();
    if (spare) {
      this.#idleBytes -= capacity;
      return Buffer.from(spare, 0, length);
    }
    // allocUnsafeSlow: never a slice of Node's shared pool, so the buffer owns its ArrayBuffer.
    return Buffer.from(Buffer.allocUnsafeSlow(capacity).buffer, 0, length);
  }

  /**
   * Takes a buffer back. The caller must hold no view of it any more. One of another size, one
   * already here, or a detached one (byteLength 0 once moved to a worker) is not kept.
   */
  give(buffer: ArrayBuffer): void {
    const capacity = buffer.byteLength;
    if (capacity < this.#minCapacity || capacity > this.#maxCapacity || capacityOf(capacity - SEAL_OVERHEAD_BYTES) !== capacity || this.#idleBytes + capacity > this.#idleLimit) return;
    let list = this.#spares.get(capacity);
    if (!list) this.#spares.set(capacity, (list = []));
    if (list.includes(buffer)) return;
    list.push(buffer);
    this.#idleBytes += capacity;
  }

  /** Drops every spare buffer. */
  clear(): void {
    this.#spares.clear();
    this.#idleBytes = 0;
  }

  #capacityFor(length: number): number | undefined {
    return length < this.#minBytes || length > this.#maxBytes ? undefined : capacityOf(length);
  }
}

/** The next power of two at or above `length`, plus room for sealing. */
function capacityOf(length: number): number {
  return 2 ** Math.ceil(Math.log2(length)) + SEAL_OVERHEAD_BYTES;
}
