/**
 * What adopting a block from another cluster member needs that does not touch the database's
 * state: reading and authenticating the block's object records, and recomputing a key's
 * versions once versions written elsewhere join it (db.adoptBlock does the indexing itself).
 *
 * A member adopts blocks in whatever order they reach it (a repair may bring an old block after
 * a new one), so a version may arrive after a version that names it. Recomputing the key's
 * numbers and heads from all of its versions (lib/versions.ts, as a rebuild does) gives the same
 * answer whatever the order; that costs one record read per version of each key the block
 * touches (the record cache serves most of them).
 */
import { EntryKind, type EntryRow } from '../blockstore/format.js';
import type { Head } from '../index/values.js';
import { toHex } from './bytes.js';
import type { DatabaseKeys } from './crypto.js';
import { openEntry } from './entry.js';
import { CorruptionError } from './errors.js';
import { type PackSlot, decodePack } from './pack.js';
import { type ObjectRecord, decodeRecord } from './record.js';
import { type VersionNode, rebuildVersions } from './versions.js';
import { type Vfs, type VfsFile, readFully } from './vfs/vfs.js';

/** An object record read from a block: in an entry of its own, or in a pack at `slot`. */
export interface BlockRecord {
  hash: Buffer;
  row: EntryRow;
  record: ObjectRecord;
  slot?: PackSlot;
}

/**
 * Every object record of a block file (packs opened), authenticated with the key and checked
 * against its id, by hash.
 */
export async function readBlockRecords(vfs: Vfs, file: string, rows: readonly EntryRow[], dbKeys: DatabaseKeys): Promise<Map<string, BlockRecord>> {
  const out = new Map<string, BlockRecord>();
  let handle: VfsFile | undefined;
  try {
    for (const row of rows) {
      if (row.kind !== EntryKind.Object && row.kind !== EntryKind.Pack) continue;
      handle ??= await vfs.open(file, 'r');
      const bytes = Buffer.allocUnsafe(row.length);
      await readFully(handle, bytes, 0, row.length, row.offset);
      const plain = openEntry(dbKeys.data, bytes, { id: row.id, kind: row.kind }, file, row.offset);
      const one = (hash: Buffer, recordBytes: Buffer, slot?: PackSlot) => {
        const hex = toHex(hash);
        if (!dbKeys.objectId(recordBytes).equals(hash)) throw new CorruptionError(`${file}: object record ${hex} does not hash to its id`, { location: { file, offset: row.offset, id: hex } });
        out.set(hex, { hash, row, record: decodeRecord(recordBytes, hex), ...(slot ? { slot } : {}) });
      };
      if (row.kind === EntryKind.Object) one(row.id, plain);
      else for (const r of decodePack(plain, `${file}@${row.offset}`)) one(r.hash, plain.subarray(r.offset, r.offset + r.length), { offset: r.offset, length: r.length });
    }
  } finally {
    await handle?.close().catch(() => {});
  }
  return out;
}

export interface VersionChange {
  /** Version keys' (number, hash) to delete: versions whose number changed. */
  drop: Array<{ n: number; hash: Buffer }>;
  /** Version keys to write: new versions, and changed ones under their new number. */
  write: Array<{ n: number; hash: Buffer }>;
  heads: Head[];
}

/**
 * The version index changes when `added` joins a key whose stored versions are `known` (with
 * their current numbers). Versions already known are not added twice.
 */
export function mergeVersions(known: ReadonlyArray<VersionNode & { n: number }>, added: readonly VersionNode[]): VersionChange {
  const have = new Set(known.map((v) => toHex(v.hash)));
  const fresh = added.filter((v) => !have.has(toHex(v.hash)));
  const { numbers, heads } = rebuildVersions([...known, ...fresh]);
  const change: VersionChange = { drop: [], write: [], heads };
  for (const v of known) {
    const n = numbers.get(toHex(v.hash))!;
    if (n === v.n) continue;
    change.drop.push({ n: v.n, hash: v.hash });
    change.write.push({ n, hash: v.hash });
  }
  for (const v of fresh) change.write.push({ n: numbers.get(toHex(v.hash))!, hash: v.hash });
  return change;
}
