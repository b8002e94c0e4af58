/**
 * Values of the index keyspaces (keys in index/keys.ts). Fixed binary layouts, little-endian,
 * each starting with a version byte so a layout can change without ambiguity.
 *
 * Location (prefixes 'c' and 'o'): where an entry's bytes are, 28 bytes (version 1), or 36 for
 * a record inside a pack (version 2, kind 3: the first 28 bytes locate the pack entry):
 *   0   1  version (1, or 2 for a packed record)
 *   1   1  reserved, zero
 *   2   1  entry kind
 *   3   1  entry flags
 *   4   4  entry length (header + payload)
 *   8   4  plaintext length
 *   12  8  offset of the entry in the file
 *   20  8  seq of the block: open file `open/<seq>.open` until the key 's' + seq names the
 *          sealed block it became (the offset is the same in both)
 *   28  4  version 2 only: offset of the record in the pack's plaintext (lib/pack.ts)
 *   32  4  version 2 only: length of the record
 *
 * Block info (prefix 'b'):
 *   0   1  version (1)
 *   1   1  flags: bit 0 = adopted (sealed by another cluster member and received; its seq is
 *          this database's registration number, not the one in the file's header); other bits zero
 *   2   6  reserved
 *   8   8  seq
 *   16  8  file size
 *   24  4  entry count
 *   28  4  reserved
 *   32  8  live bytes (entry bytes still referenced)
 */
import type { EntryKind } from '../blockstore/format.js';
import type { PackSlot } from '../lib/pack.js';
import { CorruptionError, UnsupportedVersionError } from '../lib/errors.js';

export interface Location {
  kind: EntryKind;
  flags: number;
  length: number;
  plainLength: number;
  offset: number;
  seq: number;
  /** For a record in a pack (kind Pack): where it lies in the pack's plaintext. */
  slot?: PackSlot | undefined;
}

export const LOCATION_BYTES = 28;
const PACKED_LOCATION_BYTES = 36;

export function encodeLocation(l: Location): Buffer {
  const b = Buffer.alloc(l.slot ? PACKED_LOCATION_BYTES : LOCATION_BYTES);
  b[0] = l.slot ? 2 : 1;
  b[2] = l.kind;
  b[3] = l.flags;
  b.writeUInt32LE(l.length, 4);
  b.writeUInt32LE(l.plainLength, 8);
  b.writeBigUInt64LE(BigInt(l.offset), 12);
  b.writeBigUInt64LE(BigInt(l.seq), 20);
  if (l.slot) {
    b.writeUInt32LE(l.slot.offset, 28);
    b.writeUInt32LE(l.slot.length, 32);
  }
  return b;
}

export function decodeLocation(b: Buffer): Location {
  if (b[0] !== 1 && b[0] !== 2) throw new UnsupportedVersionError(`index location version ${b[0]}`);
  if (b.length !== (b[0] === 1 ? LOCATION_BYTES : PACKED_LOCATION_BYTES)) throw new CorruptionError('index location has the wrong length');
  const loc: Location = {
    kind: b[2] as EntryKind,
    flags: b[3]!,
    length: b.readUInt32LE(4),
    plainLength: b.readUInt32LE(8),
    offset: Number(b.readBigUInt64LE(12)),
    seq: Number(b.readBigUInt64LE(20)),
  };
  if (b[0] === 2) loc.slot = { offset: b.readUInt32LE(28), length: b.readUInt32LE(32) };
  return loc;
}

/**
 * The bytes an entry's death frees, for gc's dead-byte counts: the whole entry, or for a record
 * in a pack its share of the pack (in proportion to its plaintext), so that the shares of all of
 * a pack's records add up to about the pack's length.
 */
export function deadBytes(l: Location): number {
  return l.slot ? Math.max(1, Math.round((l.length * l.slot.length) / Math.max(1, l.plainLength))) : l.length;
}

export interface BlockInfo {
  seq: number;
  /** Received from another member (db.adoptBlock), not sealed here. */
  adopted?: boolean;
  size: number;
  entries: number;
  liveBytes: number;
}

export function encodeBlockInfo(i: BlockInfo): Buffer {
  const b = Buffer.alloc(40);
  b[0] = 1;
  b[1] = i.adopted ? 1 : 0;
  b.writeBigUInt64LE(BigInt(i.seq), 8);
  b.writeBigUInt64LE(BigInt(i.size), 16);
  b.writeUInt32LE(i.entries, 24);
  b.writeBigUInt64LE(BigInt(i.liveBytes), 32);
  return b;
}

export function decodeBlockInfo(b: Buffer): BlockInfo {
  if (b[0] !== 1 || b.length !== 40) throw new CorruptionError('block info is malformed');
  return { seq: Number(b.readBigUInt64LE(8)), adopted: (b[1]! & 1) === 1, size: Number(b.readBigUInt64LE(16)), entries: b.readUInt32LE(24), liveBytes: Number(b.readBigUInt64LE(32)) };
}

/**
 * Heads (prefix 'k'): the versions of a key that no later version names as its predecessor.
 * Usually one; two or more after concurrent writers on different members (a put naming them all
 * merges them back to one).
 *   0   1  version (1)
 *   1   1  head count H (1..255)
 *   then H x 41 bytes, sorted by hash: object hash (32), version number n (u64 LE), record
 *   type (1: 0 value, 1 tombstone), so that getByKey and list know a deleted key without
 *   reading its record
 * Version numbers start at 1; a version's n is one more than the largest n among its predecessors.
 */
export interface Head {
  hash: Buffer;
  n: number;
  tombstone: boolean;
}
export const HEAD_BYTES = 41;

export function encodeHeads(heads: readonly Head[]): Buffer {
  if (heads.length === 0 || heads.length > 255) throw new RangeError(`a key has 1..255 heads, not ${heads.length}`);
  const sorted = [...heads].sort((a, b) => Buffer.compare(a.hash, b.hash));
  const b = Buffer.alloc(2 + HEAD_BYTES * sorted.length);
  b[0] = 1;
  b[1] = sorted.length;
  sorted.forEach((h, i) => {
    const at = 2 + HEAD_BYTES * i;
    h.hash.copy(b, at);
    b.writeBigUInt64LE(BigInt(h.n), at + 32);
    b[at + 40] = h.tombstone ? 1 : 0;
  });
  return b;
}

export function decodeHeads(b: Buffer): Head[] {
  if (b[0] !== 1) throw new UnsupportedVersionError(`heads value version ${b[0]}`);
  if (b.length !== 2 + HEAD_BYTES * b[1]! || b[1] === 0) throw new CorruptionError('heads value is malformed');
  const heads: Head[] = [];
  for (let i = 0; i < b[1]!; i++) {
    const at = 2 + HEAD_BYTES * i;
    heads.push({ hash: Buffer.from(b.subarray(at, at + 32)), n: Number(b.readBigUInt64LE(at + 32)), tombstone: b[at + 40] === 1 });
  }
  return heads;
}

/** Reference counts ('r', u32 LE) and dead byte counters ('x', u64 LE). */
export function encodeCount(n: number, bytes: 4 | 8): Buffer {
  // From Node's pool (every byte is written below): Buffer.alloc makes an ArrayBuffer of its own
  // for each of the tens of thousands of counters one large put's batch can hold.
  const b = Buffer.allocUnsafe(bytes);
  if (bytes === 4) b.writeUInt32LE(n, 0);
  else b.writeBigUInt64LE(BigInt(n), 0);
  return b;
}

export function decodeCount(b: Buffer | undefined): number {
  if (b === undefined) return 0;
  if (b.length === 4) return b.readUInt32LE(0);
  if (b.length === 8) return Number(b.readBigUInt64LE(0));
  throw new CorruptionError(`counter value has ${b.length} bytes`);
}

/**
 * Key hint (prefix 'h', PutOptions.hint): not the hint, which the application keeps, but tags
 * that match it and the head it was given with. A hint is the application's data and the index
 * is not encrypted; a tag answers "the same?" and reveals nothing else.
 *   0   1  version (1)
 *   1  16  hint tag: DatabaseKeys.tag(TAG_HINT, user key, head hash, hint)
 *   17 16  content tag: DatabaseKeys.tag(TAG_CONTENT, user key, head hash, compared fields of
 *          the head's record under the put's ifChanged set; lib/record.ts comparedFields)
 * Both name the head hash, which binds them to the version they were written for: once the key
 * has another head (a put without a hint, a merge), neither matches. The content tag spares a
 * later `ifChanged` put reading the head's record: an equal tag means equal compared fields.
 */
const HINT_ROW_BYTES = 33;

export function encodeHintRow(hintTag: Uint8Array, contentTag: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(HINT_ROW_BYTES);
  b[0] = 1;
  b.set(hintTag, 1);
  b.set(contentTag, 17);
  return b;
}

/** The two tags of a hint row. */
export function decodeHintRow(b: Buffer): { hintTag: Buffer; contentTag: Buffer } {
  if (b[0] !== 1) throw new UnsupportedVersionError(`key hint version ${b[0]}`);
  if (b.length !== HINT_ROW_BYTES) throw new CorruptionError('a key hint has the wrong length');
  return { hintTag: b.subarray(1, 17), contentTag: b.subarray(17) };
}
