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

export type MetaName = 'format' | 'stats' | 'nextSeq';

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
  range(prefix: number): { gte: Buffer; lt: Buffer } {
    return { gte: Buffer.from([prefix]), lt: Buffer.from([prefix + 1]) };
  },
};
