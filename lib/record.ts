/**
 * The object record: what one stored value is. It is encrypted and stored in a block like a chunk
 * (entry kind OBJECT), which is what lets every index be rebuilt from the blocks alone.
 *
 * Encoding (record version 1): one MessagePack array, fields in this fixed order, no maps:
 *
 *   [ 1,                 record version (uint)
 *     type,              0 = value, 1 = tombstone (a deletion marker for a key),
 *                        2 = purge marker: `key` was purged and `prev` lists every version the
 *                        purge forgot (so an index rebuilt from the blocks forgets them too,
 *                        even while some of them still sit in blocks gc has not compacted)
 *     size,              total plaintext bytes (uint)
 *     chunkIds,          bin: the 32-byte chunk ids concatenated, in value order
 *     chunkSizes,        array of uint: plaintext size of each chunk, same order
 *     key,               str (UTF-8) or nil
 *     parent,            bin(32) object hash or nil
 *     prev,              array of bin(32): predecessor versions (0, 1, or 2+ when merging heads)
 *     created,           uint: milliseconds since the Unix epoch
 *     meta,              array of [str, str] pairs sorted by key (bytewise UTF-8), keys unique
 *     inline ]           bin: the whole value, or nil. Values of at most INLINE_MAX_BYTES are kept
 *                        in the record itself (no chunk list): a small put then costs one entry,
 *                        one encryption and one index location instead of two of each. The
 *                        price is that equal small values are not shared between objects.
 *
 * The object hash is HMAC-SHA256(objectIdKey, these exact bytes). The encoder is deterministic
 * (same fields, same bytes): integers below 2^32 are written in their shortest MessagePack form,
 * larger ones (`created` always: milliseconds since 1970 passed 2^32 in February 1970) as a
 * float64 (0xcb) holding the exact integer, which is what msgpackr writes for them; strings, bins
 * and arrays take their shortest headers; and there are no maps whose order could vary. Readers
 * accept any MessagePack number that is a non-negative safe integer, and check the hash over the
 * stored bytes, so no re-encoding is ever needed to verify a record.
 */
import { Packr } from 'msgpackr/pack';
import { ChunkList } from './chunk-list.js';
import { ID_BYTES } from './crypto.js';
import { CorruptionError, UnsupportedVersionError } from './errors.js';

export const RECORD_VERSION = 1;
const RECORD_FIELDS = 11;
/** Values up to this size live inside their object record (field 10) instead of in chunks. */
export const INLINE_MAX_BYTES = 4096;

export type ObjectType = 'value' | 'tombstone' | 'purge';
const TYPE_CODES: Record<ObjectType, number> = { value: 0, tombstone: 1, purge: 2 };
const TYPES: ObjectType[] = ['value', 'tombstone', 'purge'];

export interface ObjectRecord {
  type: ObjectType;
  size: number;
  chunks: ChunkList;
  key: string | null;
  parent: Buffer | null;
  prev: Buffer[];
  created: number;
  meta: Record<string, string>;
  /** The value itself when it is stored inline (then `chunks` is empty), else null. */
  inline: Uint8Array | null;
}

// int64AsType 'auto': a record written by another implementation may hold an integer as uint 64
// (FORMAT.md allows it); msgpackr would otherwise decode it as a BigInt, which the checks below
// would refuse as corrupt. Safe integers come back as numbers, larger ones stay BigInts (refused).
const packr = new Packr({ useRecords: false, moreTypes: false, encodeUndefinedAsNil: true, int64AsType: 'auto' });

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The chunk ids of a record back to back, as field 3 holds them. */
export function encodeRecord(r: ObjectRecord): Buffer {
  const meta = Object.keys(r.meta).sort(compareUtf8).map((k) => [k, r.meta[k]!]);
  return packr.pack([
    RECORD_VERSION,
    TYPE_CODES[r.type],
    r.size,
    r.chunks.ids(),
    r.chunks.sizes(),
    r.key,
    r.parent,
    r.prev,
    r.created,
    meta,
    r.inline,
  ]);
}

/**
 * What `ifChanged` compares of a record, canonically encoded: type, size, chunks (ids and sizes),
 * inline value, parent, and the metadata entries not named in `ignoreMeta`, with the names left
 * out (so that encodings under different sets never coincide). Not the key, time or predecessors.
 * Two records are the same content under a set exactly when these bytes are equal.
 */
export function comparedFields(r: ObjectRecord, ignoreMeta: ReadonlySet<string>): Buffer {
  const meta = Object.keys(r.meta).filter((k) => !ignoreMeta.has(k)).sort(compareUtf8).map((k) => [k, r.meta[k]!]);
  return packr.pack([TYPE_CODES[r.type], r.size, r.chunks.ids(), r.chunks.sizes(), r.inline, r.parent, meta, [...ignoreMeta].sort(compareUtf8)]);
}

/** A Buffer over the same memory (no copy: see decodeRecord). */
const view = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

export function decodeRecord(bytes: Uint8Array, where: string): ObjectRecord {
  // The record keeps views of its bytes (chunk ids, inline value, parent, prev), so they are made
  // a buffer of their own first when they are a slice of a larger one: a record read from a pack
  // (a copy of its slice, under 4 KiB so from Node's 8 KiB pool) and its parent and prev (copied
  // from the pool too) kept whole pool slabs alive for as long as the record cache held it, ~10
  // KiB of memory per record of a source tree: 46 MiB for the 16 MiB cache full of a date-fns
  // tree's records, 5 MiB now (docs/performance.md, "Cost per byte, third round").
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes);
  let a: unknown;
  try {
    a = packr.unpack(own);
  } catch (err) {
    throw new CorruptionError(`object record ${where} is not valid MessagePack`, { cause: err, location: { id: where } });
  }
  const bad = (why: string) => new CorruptionError(`object record ${where} is malformed: ${why}`, { location: { id: where } });
  if (!Array.isArray(a)) throw bad('not an array');
  if (a[0] !== RECORD_VERSION) throw new UnsupportedVersionError(`object record ${where} has version ${String(a[0])}`);
  if (a.length !== RECORD_FIELDS) throw bad(`${a.length} fields, not ${RECORD_FIELDS}`);
  const [, type, size, ids, sizes, key, parent, prev, created, meta, inline] = a as unknown[];
  if (type !== 0 && type !== 1 && type !== 2) throw bad('type');
  if (!Number.isSafeInteger(size) || (size as number) < 0) throw bad('size');
  if (!(ids instanceof Uint8Array) || ids.byteLength % ID_BYTES !== 0) throw bad('chunk ids');
  if (!Array.isArray(sizes) || sizes.length !== ids.byteLength / ID_BYTES || !sizes.every((s) => Number.isSafeInteger(s) && s >= 0)) throw bad('chunk sizes');
  if (key !== null && typeof key !== 'string') throw bad('key');
  if (parent !== null && !(parent instanceof Uint8Array && parent.byteLength === ID_BYTES)) throw bad('parent');
  if (!Array.isArray(prev) || !prev.every((p) => p instanceof Uint8Array && p.byteLength === ID_BYTES)) throw bad('prev');
  if (!Number.isSafeInteger(created)) throw bad('created');
  if (!Array.isArray(meta) || !meta.every((m) => Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string')) throw bad('meta');
  if (inline !== null && !(inline instanceof Uint8Array && inline.byteLength === size && ids.byteLength === 0)) throw bad('inline value');
  const idBuf = Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength);
  const chunks = new ChunkList(idBuf, sizes as number[]);
  if (inline === null && chunks.totalSize !== size) throw bad('chunk sizes do not add up to size');
  const metaObj: Record<string, string> = {};
  for (const [k, v] of meta as [string, string][]) metaObj[k] = v;
  return {
    type: TYPES[type]!,
    size: size as number,
    chunks,
    key: key as string | null,
    parent: parent === null ? null : view(parent as Uint8Array),
    prev: (prev as Uint8Array[]).map(view),
    created: created as number,
    meta: metaObj,
    inline: inline as Uint8Array | null,
  };
}
