/**
 * Entry hashes of a block file computed while its bytes arrive (block replication), so that a
 * replica checks a received block without reading it back from disk.
 *
 * The footer, which names every entry's offset, length and SHA-256, comes last in the file; but
 * entries are self-delimiting (each 72-byte header carries its CRC-32 and payload length, see
 * docs/FORMAT.md), so the bytes can be cut into entries and hashed as they pass. Once the whole
 * file is written, `matches(rows)` compares what was hashed with the footer rows read from the
 * file (whose own checks, the trailer CRC and the block id, the caller has done). The parse is
 * only a guess at the boundaries: a corrupt header, or a footer row that happens to read as an
 * entry header, stops it or yields rows that do not match, and the caller then reads the file
 * back and checks every entry the slow way. A match is as strong as that check: every byte of
 * [header end, footer) was hashed in the rows the footer names, from the very buffers written.
 */
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { ENTRY_HEADER_BYTES, type EntryRow, HEADER_BYTES, TRAILER_BYTES } from './format.js';

/** Entry hashes already computed over a file's bytes (see EntryHashStream). */
export interface SeenEntries {
  /** True if these entries are exactly `rows` (offset, length and SHA-256 of every one). */
  matches(rows: readonly EntryRow[]): boolean;
}

interface Seen {
  offset: number;
  length: number;
  hash: Buffer;
}

export class EntryHashStream implements SeenEntries {
  readonly #size: number;
  /** Bytes of the file consumed so far. */
  #at = 0;
  /** Set once the bytes stop parsing as entries (the footer, or corruption). */
  #stopped = false;
  readonly #head = Buffer.alloc(ENTRY_HEADER_BYTES);
  #headFill = 0;
  /** The entry being hashed (its header read), or null between entries. */
  #hash: crypto.Hash | null = null;
  #entryStart = 0;
  #payloadLeft = 0;
  readonly #seen: Seen[] = [];

  /** `size`: the whole file's length, as announced (an entry cannot run into the trailer). */
  constructor(size: number) {
    this.#size = size;
  }

  /** The next bytes of the file, in order. */
  update(bytes: Uint8Array): void {
    let i = 0;
    while (i < bytes.length && !this.#stopped) {
      const left = bytes.length - i;
      if (this.#at < HEADER_BYTES) {
        // The block header is checked from the file afterwards (it is in the id).
        const k = Math.min(HEADER_BYTES - this.#at, left);
        this.#at += k;
        i += k;
      } else if (this.#hash === null) {
        const k = Math.min(ENTRY_HEADER_BYTES - this.#headFill, left);
        this.#head.set(bytes.subarray(i, i + k), this.#headFill);
        this.#headFill += k;
        this.#at += k;
        i += k;
        if (this.#headFill === ENTRY_HEADER_BYTES) this.#startEntry();
      } else {
        const k = Math.min(this.#payloadLeft, left);
        this.#hash.update(bytes.subarray(i, i + k));
        this.#payloadLeft -= k;
        this.#at += k;
        i += k;
        if (this.#payloadLeft === 0) this.#endEntry();
      }
    }
  }

  #startEntry(): void {
    const start = this.#at - ENTRY_HEADER_BYTES;
    const payload = this.#head.readUInt32LE(4);
    this.#headFill = 0;
    if (this.#head.readUInt32LE(68) !== zlib.crc32(this.#head.subarray(0, 68)) || start + ENTRY_HEADER_BYTES + payload + TRAILER_BYTES > this.#size) {
      this.#stopped = true;
      return;
    }
    this.#hash = crypto.createHash('sha256').update(this.#head);
    this.#entryStart = start;
    this.#payloadLeft = payload;
    if (payload === 0) this.#endEntry();
  }

  #endEntry(): void {
    this.#seen.push({ offset: this.#entryStart, length: this.#at - this.#entryStart, hash: this.#hash!.digest() });
    this.#hash = null;
  }

  matches(rows: readonly EntryRow[]): boolean {
    // Entries parsed past the last row lie in the footer (rows read as headers): not entries.
    if (this.#seen.length < rows.length) return false;
    return rows.every((r, i) => {
      const s = this.#seen[i]!;
      return s.offset === r.offset && s.length === r.length && s.hash.equals(r.hash);
    });
  }
}
