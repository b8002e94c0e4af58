/**
 * The WAL record: one per entry appended to an open block, stored in LevelDB under
 * 'w' + seq (u64 BE) + offset (u64 BE) (index/keys.ts). The entry's bytes themselves are in the
 * open block file `open/<seq>.open` at `offset`: LevelDB ingests large values at only ~30-70 MiB/s
 * here, so bulk bytes stay out of it and the WAL records where they are and what they hash to.
 * Part of the on-disk format; little-endian; 76 bytes:
 *
 *   0   1  record version (1)
 *   1   1  entry kind (1 = chunk, 2 = object record)
 *   2   1  entry flags (bit 0 = zstd)
 *   3   1  reserved, zero
 *   4   4  entry length (72-byte entry header + payload)
 *   8   4  plaintext length
 *   12  32 id (chunk id or object hash)
 *   44  32 SHA-256 of the entry's bytes
 *
 * Ordering invariant (the reason this design is safe): a record is written, in a synced LevelDB
 * batch, only after the entry's bytes were fdatasync'ed to the open block file. So every WAL
 * record points at durable bytes, and on recovery the open file is cut back to the end of its
 * last recorded entry: whatever lies beyond was never acknowledged. Records are deleted only in
 * the same batch that registers the sealed block holding their entries, after that block's file
 * was fsynced, renamed into place and its directory fsynced.
 */
import type { EntryKind, EntryRow } from '../blockstore/format.js';
import { CorruptionError, UnsupportedVersionError } from '../lib/errors.js';

export const WAL_RECORD_VERSION = 1;
export const WAL_RECORD_BYTES = 76;

export function encodeWalRecord(r: Omit<EntryRow, 'offset'>): Buffer {
  const b = Buffer.alloc(WAL_RECORD_BYTES);
  b[0] = WAL_RECORD_VERSION;
  b[1] = r.kind;
  b[2] = r.flags;
  b.writeUInt32LE(r.length, 4);
  b.writeUInt32LE(r.plainLength, 8);
  r.id.copy(b, 12);
  r.hash.copy(b, 44);
  return b;
}

export function decodeWalRecord(b: Buffer, offset: number): EntryRow {
  if (b[0] !== WAL_RECORD_VERSION) throw new UnsupportedVersionError(`WAL record version ${b[0]}`);
  if (b.length !== WAL_RECORD_BYTES) throw new CorruptionError(`WAL record has ${b.length} bytes, expected ${WAL_RECORD_BYTES}`);
  return {
    kind: b[1] as EntryKind,
    flags: b[2]!,
    length: b.readUInt32LE(4),
    plainLength: b.readUInt32LE(8),
    id: Buffer.from(b.subarray(12, 44)),
    hash: Buffer.from(b.subarray(44, 76)),
    offset,
  };
}
