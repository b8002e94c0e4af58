/**
 * The pack: several object records sealed as one block entry (entry kind 3, block format
 * version 2). Concurrent puts that reach the same group commit put their records in one pack, so
 * they share one compression frame, one encryption and one footer row instead of paying each
 * (72 + 16 + 84 bytes and a zstd frame per record). On a source tree backup that is most of what
 * a small file costs: the records of four date-fns versions took 3.18 MB stored one per entry
 * and 1.23 MB packed 64 KiB at a time (docs/performance.md). Reading one record of a compressed
 * pack opens the whole pack (so packs are kept to ~16 KiB, lib/db.ts PACK_MAX_BYTES); readers
 * keep the last packs they opened (PackCache), so neighbours come cheap. A record of an
 * uncompressed pack is read alone (lib/db.ts #readPackedSlice).
 *
 * Plaintext layout (what is compressed and encrypted like any entry's plaintext), little-endian:
 *
 *   0    4    pack version (1)
 *   4    4    record count n (at least 2: a lone record is an ordinary object entry)
 *   8    36n  per record, in order: its object hash (32 bytes), its length (u32)
 *   8+36n     the records' bytes back to back, in table order, nothing between them
 *
 * The entry's id (in its header, so in the associated data, and in its footer row) is the
 * SHA-256 of the table, bytes [0, 8 + 36n). Every record in a pack is distinct (records are
 * deduplicated before they are packed), so two packs never share an id. The table is inside the
 * authenticated plaintext: a record read from a pack is bound to its hash as firmly as an object
 * entry's is by its id in the associated data. Readers still check that the index's record range
 * is the one the table gives for the hash they asked for.
 */
import { sha256Native } from './crypto.js';
import { CorruptionError, UnsupportedVersionError } from './errors.js';

export const PACK_VERSION = 1;
const TABLE_ROW_BYTES = 36;
const HASH_BYTES = 32;

/** Where one record lies in its pack's plaintext. */
export interface PackSlot {
  offset: number;
  length: number;
}

export interface PackedRecord extends PackSlot {
  hash: Buffer;
}

/** The plaintext and id of a pack of `records` (at least 2), and where each record lands. */
export function encodePack(records: ReadonlyArray<{ hash: Buffer; bytes: Uint8Array }>): { plain: Buffer; id: Buffer; slots: PackSlot[] } {
  if (records.length < 2) throw new RangeError('a pack holds at least two records');
  const tableBytes = 8 + TABLE_ROW_BYTES * records.length;
  const total = records.reduce((n, r) => n + r.bytes.byteLength, tableBytes);
  const plain = Buffer.allocUnsafe(total);
  plain.writeUInt32LE(PACK_VERSION, 0);
  plain.writeUInt32LE(records.length, 4);
  const slots: PackSlot[] = [];
  let at = tableBytes;
  records.forEach((r, i) => {
    const row = 8 + TABLE_ROW_BYTES * i;
    r.hash.copy(plain, row);
    plain.writeUInt32LE(r.bytes.byteLength, row + HASH_BYTES);
    plain.set(r.bytes, at);
    slots.push({ offset: at, length: r.bytes.byteLength });
    at += r.bytes.byteLength;
  });
  return { plain, id: sha256Native(plain.subarray(0, tableBytes)), slots };
}

/** The records of an opened pack, checked to tile its plaintext exactly. `where` names it for errors. */
export function decodePack(plain: Buffer, where: string): PackedRecord[] {
  if (plain.length < 8) throw new CorruptionError(`pack ${where} is truncated`);
  const version = plain.readUInt32LE(0);
  if (version !== PACK_VERSION) throw new UnsupportedVersionError(`pack ${where} has version ${version}`);
  const n = plain.readUInt32LE(4);
  const tableBytes = 8 + TABLE_ROW_BYTES * n;
  if (n < 2 || tableBytes > plain.length) throw new CorruptionError(`pack ${where} has a malformed table`);
  const out: PackedRecord[] = [];
  let at = tableBytes;
  for (let i = 0; i < n; i++) {
    const row = 8 + TABLE_ROW_BYTES * i;
    const length = plain.readUInt32LE(row + HASH_BYTES);
    out.push({ hash: Buffer.from(plain.subarray(row, row + HASH_BYTES)), offset: at, length });
    at += length;
  }
  if (at !== plain.length) throw new CorruptionError(`pack ${where}: its records do not add up to its length`);
  return out;
}

/** The bytes of record `hash` at `slot` of an opened pack, after checking the table says so. */
export function recordInPack(plain: Buffer, records: readonly PackedRecord[], hash: Buffer, slot: PackSlot, where: string): Buffer {
  const r = records.find((p) => p.offset === slot.offset);
  if (!r || r.length !== slot.length || !r.hash.equals(hash)) throw new CorruptionError(`pack ${where} does not hold record ${hash.toString('hex')} where the index says`);
  return plain.subarray(r.offset, r.offset + r.length);
}

/** The last few packs opened, by file and offset (block files never change at an offset once written). */
/** A pack decrypted and decompressed, with its table decoded. */
export interface OpenedPack {
  plain: Buffer;
  records: PackedRecord[];
}

export class PackCache {
  readonly #max: number;
  readonly #packs = new Map<string, OpenedPack>();
  constructor(max = 32) {
    this.#max = max;
  }
  get(file: string, offset: number): OpenedPack | undefined {
    return this.#packs.get(`${file}@${offset}`);
  }
  set(file: string, offset: number, pack: OpenedPack): void {
    const key = `${file}@${offset}`;
    this.#packs.delete(key);
    this.#packs.set(key, pack);
    if (this.#packs.size > this.#max) this.#packs.delete(this.#packs.keys().next().value!);
  }
  clear(): void {
    this.#packs.clear();
  }
}
