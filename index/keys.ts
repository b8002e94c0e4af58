/**
 * Every LevelDB key OuroDB writes, in one place, with one encoder per kind. No key is built
 * anywhere else. Part of the on-disk format (docs/FORMAT.md): prefixes are never reused.
 *
 * The WAL and the indexes share one LevelDB (the `index/` directory) so that an entry's WAL record
 * and its index entries commit in one atomic, synced batch.
 *
 *   prefix  key layout                          value (see index/values.ts, wal/record.ts)
 *   'm'     'm' + name (ASCII)                  metadata: index format version, stats, next seq
 *   'w'     'w' + seq u64 BE + offset u64 BE    WAL records of the entries one group commit appended
 *                                               to open block `seq`, the first at `offset`
 *   'c'     'c' + chunk id (32)                 location of the chunk's entry (seq + offset)
 *   'o'     'o' + object hash (32)              location of the object record's entry
 *   'b'     'b' + block id (32)                 sealed block: seq, size, entry count, live bytes
 *   's'     's' + seq u64 BE                    id of the sealed block written as open block `seq`
 *   'k'     'k' + user key (UTF-8)              the key's heads: object hash + version number each
 *   'v'     'v' + user key + 0x00               empty; one per version of the key. The version
 *             + (2^64-1 - n) u64 BE + hash (32)  number n is inverted so that a forward scan
 *                                               yields the newest version first
 *   'p'     'p' + parent hash (32)              empty; one per object put with that parent
 *             + child hash (32)
 *   'r'     'r' + chunk id (32)                 reference count: live object records naming the
 *                                               chunk (u32 LE; absent means zero)
 *   'x'     'x' + seq u64 BE                    dead bytes in block seq (u64 LE): entries no longer
 *                                               referenced, which gc reclaims by compaction
 *   'z'     'z' + block id (32)                 a block gc has unregistered and is removing; its
 *                                               file is deleted on the next open if a crash
 *                                               interrupted the removal (value: seq u64 LE)
 *   'a'     'a' + 'c' or 'o' key (33)           another location of the same chunk or object
 *                                               record, in a block adopted after the one the
 *                                               index names (value: location); used when that
 *                                               one is released (cluster deletion)
 *   't'     't' + block id (32)                 a block deleted across the cluster (one byte:
 *                                               0 released, never adopted again; 1 retired here,
 *                                               members are asked to release it; 2 released by
 *                                               every member, their copies are being deleted).
 *                                               Kept by a rebuild
 *   'h'     'h' + user key (UTF-8)              a keyed tag of the key's hint (PutOptions.hint:
 *                                               matched, never read back; index/values.ts).
 *                                               A cache: a rebuild clears it
 *
 * User keys are UTF-8 with no NUL (lib/keyname.ts), which is what lets 0x00 end the key inside
 * 'v' keys: every 'v' key of "a" sorts before every 'v' key of "a" + anything.
 *
 * Locations name the block by its seq, not its id: sealing then registers one 's' key instead of
 * rewriting the location of every entry in the block (half the index writes of a small put).
 *
 * Integers in keys are big-endian so that LevelDB's bytewise order is numeric order.
 */
export const PREFIX_META = 0x6d; // 'm'
export const PREFIX_WAL = 0x77; // 'w'
export const PREFIX_CHUNK = 0x63; // 'c'
export const PREFIX_OBJECT = 0x6f; // 'o'
export const PREFIX_BLOCK = 0x62; // 'b'
export const PREFIX_SEALED_SEQ = 0x73; // 's'
export const PREFIX_HEADS = 0x6b; // 'k'
export const PREFIX_VERSION = 0x76; // 'v'
export const PREFIX_CHILD = 0x70; // 'p'
export const PREFIX_REFCOUNT = 0x72; // 'r'
export const PREFIX_DEAD = 0x78; // 'x'
export const PREFIX_RETIRED = 0x7a; // 'z'
export const PREFIX_ALT = 0x61; // 'a'
export const PREFIX_TOMBSTONE = 0x74; // 't'
export const PREFIX_HINT = 0x68; // 'h'
const MAX_U64 = (1n << 64n) - 1n;

/** 'rebuilding' exists only while rebuildIndex runs: found on open, the rebuild starts over. */
export type MetaName = 'format' | 'stats' | 'nextSeq' | 'rebuilding';

function withPrefix(prefix: number, body: Uint8Array): Buffer {
  const k = Buffer.allocUnsafe(1 + body.length);
  k[0] = prefix;
  k.set(body, 1);
  return k;
}

export const keys = {
  meta(name: MetaName): Buffer {
    return withPrefix(PREFIX_META, Buffer.from(name, 'ascii'));
  },
  wal(seq: number, offset: number): Buffer {
    const k = Buffer.allocUnsafe(17);
    k[0] = PREFIX_WAL;
    k.writeBigUInt64BE(BigInt(seq), 1);
    k.writeBigUInt64BE(BigInt(offset), 9);
    return k;
  },
  decodeWal(k: Buffer): { seq: number; offset: number } {
    return { seq: Number(k.readBigUInt64BE(1)), offset: Number(k.readBigUInt64BE(9)) };
  },
  /** All WAL records of open block `seq`, or of every block when seq is omitted. */
  walRange(seq?: number): { gte: Buffer; lt: Buffer } {
    if (seq === undefined) return { gte: Buffer.from([PREFIX_WAL]), lt: Buffer.from([PREFIX_WAL + 1]) };
    return { gte: keys.wal(seq, 0), lt: keys.wal(seq + 1, 0) };
  },
  chunk(id: Uint8Array): Buffer {
    return withPrefix(PREFIX_CHUNK, id);
  },
  object(hash: Uint8Array): Buffer {
    return withPrefix(PREFIX_OBJECT, hash);
  },
  block(id: Uint8Array): Buffer {
    return withPrefix(PREFIX_BLOCK, id);
  },
  sealedSeq(seq: number): Buffer {
    const k = Buffer.allocUnsafe(9);
    k[0] = PREFIX_SEALED_SEQ;
    k.writeBigUInt64BE(BigInt(seq), 1);
    return k;
  },
  heads(key: Buffer): Buffer {
    return withPrefix(PREFIX_HEADS, key);
  },
  hint(key: Buffer): Buffer {
    return withPrefix(PREFIX_HINT, key);
  },
  version(key: Buffer, n: number, hash: Uint8Array): Buffer {
    const k = Buffer.allocUnsafe(1 + key.length + 1 + 8 + 32);
    k[0] = PREFIX_VERSION;
    key.copy(k, 1);
    k[1 + key.length] = 0;
    k.writeBigUInt64BE(MAX_U64 - BigInt(n), 2 + key.length);
    k.set(hash, 10 + key.length);
    return k;
  },
  decodeVersion(k: Buffer): { key: Buffer; n: number; hash: Buffer } {
    const end = k.length - 41;
    return { key: k.subarray(1, end), n: Number(MAX_U64 - k.readBigUInt64BE(end + 1)), hash: k.subarray(end + 9) };
  },
  /** Every version of one key, newest first. */
  versionRange(key: Buffer): { gte: Buffer; lt: Buffer } {
    const gte = Buffer.allocUnsafe(key.length + 2);
    gte[0] = PREFIX_VERSION;
    key.copy(gte, 1);
    gte[key.length + 1] = 0;
    const lt = Buffer.from(gte);
    lt[key.length + 1] = 1;
    return { gte, lt };
  },
  child(parent: Uint8Array, child: Uint8Array): Buffer {
    const k = Buffer.allocUnsafe(65);
    k[0] = PREFIX_CHILD;
    k.set(parent, 1);
    k.set(child, 33);
    return k;
  },
  childRange(parent: Uint8Array): { gte: Buffer; lt: Buffer } {
    const gte = withPrefix(PREFIX_CHILD, parent);
    return { gte, lt: Buffer.concat([gte, Buffer.alloc(32, 0xff), Buffer.from([0xff])]) };
  },
  refcount(chunkId: Uint8Array): Buffer {
    return withPrefix(PREFIX_REFCOUNT, chunkId);
  },
  dead(seq: number): Buffer {
    const k = Buffer.allocUnsafe(9);
    k[0] = PREFIX_DEAD;
    k.writeBigUInt64BE(BigInt(seq), 1);
    return k;
  },
  decodeSeqKey(k: Buffer): number {
    return Number(k.readBigUInt64BE(1));
  },
  retired(blockId: Uint8Array): Buffer {
    return withPrefix(PREFIX_RETIRED, blockId);
  },
  /** The other location of the entry whose index key ('c' or 'o' key) is `indexKey`. */
  alt(indexKey: Buffer): Buffer {
    return withPrefix(PREFIX_ALT, indexKey);
  },
  tombstone(blockId: Uint8Array): Buffer {
    return withPrefix(PREFIX_TOMBSTONE, blockId);
  },
  range(prefix: number): { gte: Buffer; lt: Buffer } {
    return { gte: Buffer.from([prefix]), lt: Buffer.from([prefix + 1]) };
  },
};
