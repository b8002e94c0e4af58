/**
 * A small least-recently-used cache of object records, bounded by bytes: what a block cache is to
 * LevelDB. Records are immutable and named by their hash, so a cached one is never stale; the one
 * way it can become wrong to serve is a purge, which evicts the records it forgot (and a read or
 * put that raced with a purge does not insert: see `generation`).
 * Two ways in: a read inserts the record it decoded (`set`); a put inserts the canonical bytes of
 * the record it committed (`setEncoded`), decoded by the first read that asks for it, so a put
 * whose value is never read pays a copy and a Map insert, not a decode.
 * Plaintext of small values lives here while cached, as it does in any buffer the application
 * holds after a read or before a put; `recordCacheBytes: 0` turns it off.
 */
import { type ObjectRecord, decodeRecord } from './record.js';

/** Records larger than this are not cached (they are chunk lists of large values, cheap to reread). */
const MAX_CACHED_RECORD_BYTES = 64 * 1024;

export class RecordCache {
  readonly #max: number;
  /** `record` once decoded; until then `encoded`, the record's canonical bytes (a put's). */
  readonly #map = new Map<string, { record: ObjectRecord | undefined; encoded: Uint8Array | undefined; bytes: number }>();
  #bytes = 0;
  /** Bumped by every eviction for a purge; a read that started before it must not insert. */
  generation = 0;

  constructor(maxBytes: number) {
    this.#max = maxBytes;
  }

  /** Bytes of the records held (at most the bound given to the constructor). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether the record is held, without counting as a use (tests). */
  has(hex: string): boolean {
    return this.#map.has(hex);
  }

  get(hex: string): ObjectRecord | undefined {
    const hit = this.#map.get(hex);
    if (!hit) return undefined;
    this.#map.delete(hex);
    this.#map.set(hex, hit);
    if (!hit.record) {
      // Bytes this database encoded itself and kept in a copy of their own: they decode.
      hit.record = decodeRecord(hit.encoded!, hex);
      hit.encoded = undefined;
    }
    return hit.record;
  }

  set(hex: string, record: ObjectRecord, bytes: number, generation: number): void {
    this.#insert(hex, record, undefined, bytes, generation);
  }

  /**
   * Inserts a record by its canonical encoding (a put's, once committed). The bytes are copied
   * into a buffer of their own: the encoder's output is a slice of a larger buffer it shares,
   * which a cached slice would keep alive whole.
   */
  setEncoded(hex: string, encoded: Uint8Array, generation: number): void {
    const n = encoded.byteLength;
    if (generation !== this.generation || n > MAX_CACHED_RECORD_BYTES || n > this.#max || this.#map.has(hex)) return;
    const own = Buffer.allocUnsafeSlow(n);
    own.set(encoded);
    this.#insert(hex, undefined, own, n, generation);
  }

  #insert(hex: string, record: ObjectRecord | undefined, encoded: Uint8Array | undefined, bytes: number, generation: number): void {
    if (generation !== this.generation || bytes > MAX_CACHED_RECORD_BYTES || bytes > this.#max || this.#map.has(hex)) return;
    this.#map.set(hex, { record, encoded, bytes });
    this.#bytes += bytes;
    if (this.#bytes <= this.#max) return;
    // Evict the least recently used down to a low-water mark, in one pass: each get() leaves a
    // hole where its entry was, and iterating a Map from the start walks over the holes until
    // the Map is rehashed, so evicting one entry per insert cost a long scan each time (~230 ms
    // of self time in a CPU profile of 100,000 random getByKey reads, as much as creating their
    // deciphers).
    const target = this.#max - Math.max(bytes, this.#max / 16);
    for (const [k, v] of this.#map) {
      if (this.#bytes <= target) break;
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
