/**
 * A small least-recently-used cache of decoded object records, bounded by bytes: what a block
 * cache is to LevelDB. Records are immutable and named by their hash, so a cached one is never
 * stale; the one way it can become wrong to serve is a purge, which evicts the records it forgot
 * (and a read that raced with a purge does not insert: see `generation`).
 * Plaintext of small values lives here while cached, as it does in any buffer the application
 * holds after a read; `recordCacheBytes: 0` turns it off.
 */
import type { ObjectRecord } from './record.js';

/** Records larger than this are not cached (they are chunk lists of large values, cheap to reread). */
const MAX_CACHED_RECORD_BYTES = 64 * 1024;

export class RecordCache {
  readonly #max: number;
  readonly #map = new Map<string, { record: ObjectRecord; bytes: number }>();
  #bytes = 0;
  /** Bumped by every eviction for a purge; a read that started before it must not insert. */
  generation = 0;

  constructor(maxBytes: number) {
    this.#max = maxBytes;
  }

  get(hex: string): ObjectRecord | undefined {
    const hit = this.#map.get(hex);
    if (!hit) return undefined;
    this.#map.delete(hex);
    this.#map.set(hex, hit);
    return hit.record;
  }

  set(hex: string, record: ObjectRecord, bytes: number, generation: number): void {
    if (generation !== this.generation || bytes > MAX_CACHED_RECORD_BYTES || bytes > this.#max || this.#map.has(hex)) return;
    this.#map.set(hex, { record, bytes });
    this.#bytes += bytes;
    for (const [k, v] of this.#map) {
      if (this.#bytes <= this.#max) break;
      this.#map.delete(k);
      this.#bytes -= v.bytes;
    }
  }

  evict(hexes: Iterable<string>): void {
    this.generation++;
    for (const hex of hexes) {
      const hit = this.#map.get(hex);
      if (!hit) continue;
      this.#map.delete(hex);
      this.#bytes -= hit.bytes;
    }
  }

  clear(): void {
    this.generation++;
    this.#map.clear();
    this.#bytes = 0;
  }
}
