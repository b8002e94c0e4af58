/**
 * The write-ahead side of opening a database (lib/db.ts runs the steps in order: retired
 * removals, then these, then adoption of received blocks, then BlockSet.sealRecovered).
 * Functions only: what they find goes to its owner (BlockSet).
 */
import type { EntryRow } from '../blockstore/format.js';
import { type BlockStore, assertBlockEntries } from '../blockstore/store.js';
import { keys } from '../index/keys.js';
import type { IndexStore } from '../index/store.js';
import { toHex } from '../lib/bytes.js';
import { CorruptionError } from '../lib/errors.js';
import { type BlockSet, sumLengths } from './blocks.js';
import { decodeWalRecords } from './record.js';

/** The WAL records of block `seq`, in offset order. */
export async function walRows(index: IndexStore, seq: number): Promise<EntryRow[]> {
  const rows: EntryRow[] = [];
  for await (const [k, v] of index.ldb.iterator(keys.walRange(seq))) rows.push(...decodeWalRecords(v, keys.decodeWal(k).offset));
  return rows;
}

/**
 * Steps 1 and 2 of recovery:
 * 1. sealed block files the index does not know (a crash between rename and registration) are
 *    verified entry by entry and registered, which also drops their WAL records; one whose WAL
 *    records are not its entries was received from another member (returned, for adoption);
 * 2. open block files are cut back to the end of their last WAL-recorded entry (bytes beyond it
 *    were never acknowledged) and handed to `blocks` to be sealed; files with no WAL record at
 *    all are removed. WAL records whose bytes are in neither place mean acknowledged data is
 *    missing: that is reported as corruption rather than silently dropped.
 * `retired`: hex ids of blocks gc retired (their files are being removed). Sets blocks.nextSeq.
 */
export async function recoverWal(index: IndexStore, store: BlockStore, blocks: BlockSet, retired: ReadonlySet<string>): Promise<string[]> {
  let maxSeq = blocks.nextSeq - 1;
  const received: string[] = [];
  for (const { idHex, path: file } of await store.listSealed()) {
    const id = Buffer.from(idHex, 'hex');
    // A released block (deleted across the cluster) stays unregistered until its holders drop it.
    if (retired.has(idHex) || index.get(keys.block(id)) !== undefined || index.get(keys.tombstone(id)) !== undefined) continue;
    const blockIndex = await store.readIndex(file);
    if (!blockIndex.id.equals(id)) throw new CorruptionError(`${file}: contents hash to ${toHex(blockIndex.id)}, not to its name`, { location: { file } });
    const rows = await walRows(index, blockIndex.seq);
    // Sealed here, its WAL records (deleted only by its registration) are exactly its entries;
    // otherwise it is a block received from another member whose adoption a crash cut short.
    if (!sameRows(rows, blockIndex.rows)) {
      received.push(file);
      continue;
    }
    await assertBlockEntries(store.vfs, file, blockIndex.rows);
    maxSeq = Math.max(maxSeq, blockIndex.seq);
    await blocks.register({ id, path: file, size: blockIndex.size, seq: blockIndex.seq, rows: blockIndex.rows }, rows.length, sumLengths(rows));
  }

  const walBySeq = new Map<number, EntryRow[]>();
  for await (const [k, v] of index.ldb.iterator(keys.walRange())) {
    const { seq, offset } = keys.decodeWal(k);
    let rows = walBySeq.get(seq);
    if (!rows) walBySeq.set(seq, (rows = []));
    rows.push(...decodeWalRecords(v, offset));
  }
  const openSeqs = new Set(await store.listOpen());
  for (const seq of walBySeq.keys()) {
    if (!openSeqs.has(seq)) throw new CorruptionError(`acknowledged entries of open block ${seq} are missing: ${store.openPath(seq)} is gone`, { location: { file: store.openPath(seq) } });
  }
  for (const seq of openSeqs) {
    maxSeq = Math.max(maxSeq, seq);
    const rows = walBySeq.get(seq) ?? [];
    if (rows.length === 0) {
      await store.removeOpen(seq);
      continue;
    }
    const block = await store.recoverOpen(seq, rows);
    blocks.recovered(seq, block);
  }
  blocks.nextSeq = maxSeq + 1;
  return received;
}

/** Whether two lists of entry rows name the same entries at the same offsets. */
function sameRows(a: readonly EntryRow[], b: readonly EntryRow[]): boolean {
  return a.length === b.length && a.every((r, i) => r.offset === b[i]!.offset && r.id.equals(b[i]!.id));
}
