/**
 * Entry headers of uncompressed packs kept by the Reader (lib/read.ts), so that a cold read of a
 * record whose pack was read before is one pread of the record's own bytes instead of two (or
 * one of the header, the bytes between and the record).
 *
 * What is kept of a header is what a slice read needs: its kind, flags, payload and plaintext
 * lengths (checked against the index's location) and its 24-byte nonce (to decrypt). They live in
 * one ring of fixed-size slots, first in first out, with a Map from `seq@offset` to the slot:
 * ~36 bytes of slab plus a Map entry and its key (~100 bytes in all) per header, where an
 * EntryHeader object with two Buffers of its own held ~300. A header stands for every record of
 * its pack (about fourteen 1 KiB records in a 16 KiB pack), so 8,192 of them, under 1 MiB, cover
 * ~115,000 small records: the record cache (16 MiB by default) holds ~14,000 of the same records
 * whole. The 1,024 headers kept before covered ~14,000, so a database of 40,000 small values read
 * at random missed the header on most cold reads (docs/performance.md, branch get-sync).
 *
 * An entry at a block seq and offset named by the index never changes (sealing renames the file,
 * gc writes new seqs, a rebuild clears this). A header that were wrong anyway would only make the
 * record fail its HMAC, on which the reader drops it and reads the header afresh, so only the
 * bytes on disk decide an error.
 *
 *   slot layout (36 bytes)
 *   0   24  nonce
 *   24  1   kind
 *   25  1   flags
 *   28  4   payload length (u32 LE)
 *   32  4   plaintext length (u32 LE)
 */
import type { EntryHeader } from '../blockstore/format.js';

const SLOT_BYTES = 36;

/** What a kept header gives back: an EntryHeader without its id, which a slice read does not use. */
export type KeptHeader = Pick<EntryHeader, 'kind' | 'flags' | 'payloadLength' | 'plainLength' | 'nonce'>;

export class PackHeaders {
  readonly #max: number;
  readonly #bySlot: Array<string | undefined>;
  readonly #slots = new Map<string, number>();
  /** Allocated at the first header kept: a database that never reads a pack slice pays nothing. */
  #ring: Buffer | undefined;
  #next = 0;

  constructor(max: number) {
    this.#max = max;
    this.#bySlot = new Array<string | undefined>(max);
  }

  get size(): number {
    return this.#slots.size;
  }

  /**
   * The header kept under `key`. Its nonce is a view into the ring: valid until `max` more
   * headers are kept. A caller that awaits before using it may find it overwritten, which fails
   * the record's HMAC and makes the reader read the header afresh.
   */
  get(key: string): KeptHeader | undefined {
    const slot = this.#slots.get(key);
    if (slot === undefined) return undefined;
    const ring = this.#ring!;
    const at = slot * SLOT_BYTES;
    return { nonce: ring.subarray(at, at + 24), kind: ring[at + 24]!, flags: ring[at + 25]!, payloadLength: ring.readUInt32LE(at + 28), plainLength: ring.readUInt32LE(at + 32) };
  }

  set(key: string, h: KeptHeader): void {
    if (this.#max === 0 || this.#slots.has(key)) return;
    this.#ring ??= Buffer.alloc(this.#max * SLOT_BYTES);
    const slot = this.#next;
    this.#next = (slot + 1) % this.#max;
    const old = this.#bySlot[slot];
    if (old !== undefined) this.#slots.delete(old);
    this.#bySlot[slot] = key;
    this.#slots.set(key, slot);
    const at = slot * SLOT_BYTES;
    this.#ring.set(h.nonce.subarray(0, 24), at);
    this.#ring[at + 24] = h.kind;
    this.#ring[at + 25] = h.flags;
    this.#ring.writeUInt32LE(h.payloadLength, at + 28);
    this.#ring.writeUInt32LE(h.plainLength, at + 32);
  }

  delete(key: string): void {
    const slot = this.#slots.get(key);
    if (slot === undefined) return;
    this.#slots.delete(key);
    this.#bySlot[slot] = undefined;
  }

  clear(): void {
    this.#slots.clear();
    this.#bySlot.fill(undefined);
  }
}
