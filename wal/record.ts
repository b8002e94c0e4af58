/**
 * WAL records. A group commit writes, for each open block it appended to, one LevelDB value under
 * 'w' + seq (u64 BE) + offset (u64 BE) (index/keys.ts): the records of the entries it appended
 * there, which are contiguous in the file, the first at `offset`, each next one where the previous
 * entry ends. One key per group instead of one per entry keeps the batch (and the deletes when
 * the block is sealed) small: LevelDB costs several microseconds per key here.
 *
 * The entries' bytes themselves are in the open block file `open/<seq>.open`: LevelDB ingests
 * large values at only ~30-70 MiB/s here, so bulk bytes stay out of it and the WAL records where
 * they are and what they hash to. Part of the on-disk format; a value is N >= 1 records of 76
 * bytes each, little-endian:
 *
 *   0   1  record version (1)
 *   1   1  entry kind (1 = chunk, 2 = object record, 3 = pack)
 *   2   1  entry flags (bit 0 = zstd)
 *   3   1  reserved, zero
 *   4   4  entry length (72-byte entry header + payload)
 *   8   4  plaintext length
 *   12  32 id (chunk id or object hash)
 *   44  32 SHA-256 of the entry's bytes
 *
 * Ordering invariant (the reason this design is safe): records are written, in a synced LevelDB
 * batch, only after their entries' bytes were fdatasync'ed to the open block file. So every WAL
 * record points at durable bytes, and on recovery the open file is cut back to the end of its
 * last recorded entry: whatever lies beyond was never acknowledged. Records are deleted only in
 * the same batch that registers the sealed block holding their entries, after that block's file
 * was fsynced, renamed into place and its directory fsynced.
 */
import type { EntryKind, EntryRow } from '../blockstore/format.js';
import { CorruptionError, UnsupportedVersionError } from '../lib/errors.js';

export const WAL_RECORD_VERSION = 1;
export const WAL_RECORD_BYTES = 76;

/** The records of entries appended back to back, in file order. */
export function encodeWalRecords(rows: ReadonlyArray<Omit<EntryRow, 'offset'>>): Buffer {
  const b = Buffer.alloc(rows.length * WAL_RECORD_BYTES);
  rows.forEach((r, i) => {
    const at = i * WAL_RECORD_BYTES;
    b[at] = WAL_RECORD_VERSION;
    b[at + 1] = r.kind;
    b[at + 2] = r.flags;
    b.writeUInt32LE(r.length, at + 4);
    b.writeUInt32LE(r.plainLength, at + 8);
    r.id.copy(b, at + 12);
    r.hash.copy(b, at + 44);
  });
  return b;
}

/** Decodes one WAL value whose first entry is at `offset`. */
export function decodeWalRecords(b: Buffer, offset: number): EntryRow[] {
  if (b.length === 0 || b.length % WAL_RECORD_BYTES !== 0) throw new CorruptionError(`WAL value at offset ${offset} has ${b.length} bytes, not a multiple of ${WAL_RECORD_BYTES}`);
  const rows: EntryRow[] = [];
  for (let at = 0; at < b.length; at += WAL_RECORD_BYTES) {
    if (b[at] !== WAL_RECORD_VERSION) throw new UnsupportedVersionError(`WAL record version ${b[at]}`);
    const row: EntryRow = {
      kind: b[at + 1] as EntryKind,
      flags: b[at + 2]!,
      length: b.readUInt32LE(at + 4),
      plainLength: b.readUInt32LE(at + 8),
      id: Buffer.from(b.subarray(at + 12, at + 44)),
      hash: Buffer.from(b.subarray(at + 44, at + 76)),
      offset,
    };
    rows.push(row);
    offset += row.length;
  }
  return rows;
}
