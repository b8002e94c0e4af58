/**
 * Rebuilding every index from the block files alone, for `db.rebuildIndex()` and for opening a
 * database whose index directory was lost or is corrupt. The blocks are the source of truth: each
 * object record names its key, predecessors, parent and chunks, and purge markers name the
 * versions a purge forgot, so the rebuilt index answers every query as the original did.
 *
 * Memory: one small entry per distinct chunk and object (tens of bytes) plus every object record
 * while it is being indexed; databases of a few million entries rebuild in a few hundred MiB.
 */
import type { ClassicLevel } from '../index/leveldb.js';
import { EntryKind, type EntryRow } from '../blockstore/format.js';
import type { BlockStore } from '../blockstore/store.js';
import { type BatchOp, writeOps } from '../index/batch.js';
import { keys } from '../index/keys.js';
import { type Location, deadBytes, encodeBlockInfo, encodeCount, encodeHeads, encodeLocation } from '../index/values.js';
import { toHex } from './bytes.js';
import type { DatabaseKeys } from './crypto.js';
import { openEntry } from './entry.js';
import { CorruptionError, OuroError } from './errors.js';
import { failpoint } from './failpoints.js';
import { type PackSlot, decodePack } from './pack.js';
import { type ObjectRecord, decodeRecord } from './record.js';
import { rebuildVersions } from './versions.js';
import { type VfsFile, readFully } from './vfs/vfs.js';

type Ldb = ClassicLevel<Buffer, Buffer>;

/**
 * The prefixes a rebuild clears and rewrites: everything but the format version and the cluster
 * tombstones ('t': blocks deleted across the cluster, whose files a rebuild leaves out). Other
 * locations ('a') are not rebuilt: releasing a block then copies what it would have re-pointed.
 * Key hints ('h') are cleared and not rebuilt: they are in no block (a caller that finds none
 * does the work the hint would have spared, as for a key never given one).
 */
const REBUILT_PREFIXES = 'cobskvprxzwah'.split('').map((c) => c.charCodeAt(0));

import type { PersistedStats } from '../index/stats.js';
export type { PersistedStats } from '../index/stats.js';

export interface RebuildReport {
  blocks: number;
  objects: number;
  chunks: number;
  keys: number;
  /** Block files left out because they failed their checks (their entries are not indexed). */
  skipped: Array<{ file: string; error: string }>;
  stats: PersistedStats;
  nextSeq: number;
}

interface Found {
  seq: number;
  row: EntryRow;
  /** A record in a pack: where in the pack, and its bytes (read with the pack). */
  slot?: PackSlot;
  plain?: Buffer;
}

/**
 * Clears the index and rebuilds it from the sealed blocks in `store` (open blocks must have been
 * sealed first). Marked in the index while it runs ('m' 'rebuilding'), so a crash part way makes
 * the next open start it over.
 */
export async function rebuildIndex(ldb: Ldb, store: BlockStore, dbKeys: DatabaseKeys, minNextSeq: number, encodeStats: (s: PersistedStats) => Buffer): Promise<RebuildReport> {
  await ldb.put(keys.meta('rebuilding'), Buffer.from([1]), { sync: true });
  for (const p of REBUILT_PREFIXES) await ldb.clear(keys.range(p));
  await ldb.del(keys.meta('stats'));
  failpoint('rebuild.after-clear');

  const report: RebuildReport = { blocks: 0, objects: 0, chunks: 0, keys: 0, skipped: [], nextSeq: minNextSeq, stats: { objects: 0, chunks: 0, logicalBytes: 0, uniqueBytes: 0, chunkStoredBytes: 0, storedBytes: 0, blocks: 0, walRecords: 0, walEntryBytes: 0 } };
  const stats = report.stats;
  const chunks = new Map<string, Found>();
  const objects = new Map<string, Found>();
  const packs: Found[] = [];
  const entryBytes = new Map<number, number>();
  let ops: BatchOp[] = [];
  const flush = async (sync = false) => {
    await writeOps(ldb, ops, sync);
    ops = [];
  };
  const put = async (key: Buffer, value: Buffer) => {
    ops.push({ type: 'put', key, value });
    if (ops.length >= 10_000) await flush();
  };

  // 1. Every sealed block: register it and pick one location per id (the newest copy). A block
  // keeps the seq in its header unless another block took it first: blocks adopted from other
  // cluster members carry their writers' seqs, which may collide with ours; those get fresh seqs
  // after all the others (and the adopted flag, so gc leaves them whole).
  const blockFiles = new Map<number, string>();
  const valid: Array<{ file: string; index: Awaited<ReturnType<BlockStore['readIndex']>> }> = [];
  for (const { idHex, path: file } of await store.listSealed()) {
    if ((await ldb.get(keys.tombstone(Buffer.from(idHex, 'hex')))) !== undefined) continue;
    try {
      const index = await store.readIndex(file);
      if (toHex(index.id) !== idHex) throw new CorruptionError(`${file}: contents hash to ${toHex(index.id)}, not to its name`);
      valid.push({ file, index });
    } catch (err) {
      if (!(err instanceof OuroError)) throw err;
      report.skipped.push({ file, error: err.message });
    }
  }
  valid.sort((a, b) => a.index.seq - b.index.seq || Buffer.compare(a.index.id, b.index.id));
  for (const { index } of valid) report.nextSeq = Math.max(report.nextSeq, index.seq + 1);
  for (const { file, index } of valid) {
    const adopted = blockFiles.has(index.seq);
    const seq = adopted ? report.nextSeq++ : index.seq;
    blockFiles.set(seq, file);
    report.blocks++;
    stats.blocks++;
    stats.storedBytes += index.size;
    const live = index.rows.reduce((n, r) => n + r.length, 0);
    entryBytes.set(seq, live);
    await put(keys.block(index.id), encodeBlockInfo({ seq, adopted, size: index.size, entries: index.rows.length, liveBytes: live }));
    await put(keys.sealedSeq(seq), index.id);
    for (const row of index.rows) {
      if (row.kind === EntryKind.Pack) {
        packs.push({ seq, row });
        continue;
      }
      const map = row.kind === EntryKind.Chunk ? chunks : objects;
      const hex = toHex(row.id);
      const prior = map.get(hex);
      if (!prior || prior.seq < seq) map.set(hex, { seq, row });
    }
  }

  // 2. Every object record, authenticated; purge markers say which versions are forgotten. The
  // records in packs are found where their pack is, the newest copy winning as above.
  const records = new Map<string, ObjectRecord>();
  const purged = new Set<string>();
  const handles = new Map<number, VfsFile>();
  const readEntry = async (f: Found) => {
    let h = handles.get(f.seq);
    if (!h) handles.set(f.seq, (h = await store.vfs.open(blockFiles.get(f.seq)!, 'r')));
    const bytes = Buffer.allocUnsafe(f.row.length);
    await readFully(h, bytes, 0, f.row.length, f.row.offset);
    return bytes;
  };
  try {
    for (const p of packs) {
      const file = blockFiles.get(p.seq)!;
      const plain = openEntry(dbKeys.data, await readEntry(p), { id: p.row.id, kind: EntryKind.Pack }, file, p.row.offset);
      for (const r of decodePack(plain, `${file}@${p.row.offset}`)) {
        const hex = toHex(r.hash);
        const prior = objects.get(hex);
        if (!prior || prior.seq < p.seq) objects.set(hex, { seq: p.seq, row: p.row, slot: { offset: r.offset, length: r.length }, plain: plain.subarray(r.offset, r.offset + r.length) });
      }
    }
    for (const [hex, f] of objects) {
      const id = Buffer.from(hex, 'hex');
      const plain = f.plain ?? openEntry(dbKeys.data, await readEntry(f), { id, kind: EntryKind.Object }, blockFiles.get(f.seq)!, f.row.offset);
      f.plain = undefined;
      if (!dbKeys.objectId(plain).equals(id)) throw new CorruptionError(`object record ${hex} does not hash to its id`, { location: { id: hex } });
      const r = decodeRecord(plain, hex);
      records.set(hex, r);
      if (r.type === 'purge') for (const p of r.prev) purged.add(toHex(p));
    }
  } finally {
    await Promise.all([...handles.values()].map((h) => h.close()));
  }

  // 3. Indexes of the live records: locations, keys and history, children, reference counts.
  const refs = new Map<string, number>();
  const byKey = new Map<string, Array<{ hash: Buffer; prev: Buffer[]; tombstone: boolean }>>();
  const liveBytes = new Map<number, number>();
  const locationOf = (f: Found): Location => ({ kind: f.row.kind, flags: f.row.flags, length: f.row.length, plainLength: f.row.plainLength, offset: f.row.offset, seq: f.seq, slot: f.slot });
  // A packed record's share of its pack counts as live (the shares add up to the pack).
  const addLive = (f: Found) => liveBytes.set(f.seq, (liveBytes.get(f.seq) ?? 0) + deadBytes(locationOf(f)));
  for (const [hex, r] of records) {
    if (purged.has(hex)) continue;
    const f = objects.get(hex)!;
    const id = Buffer.from(hex, 'hex');
    addLive(f);
    await put(keys.object(id), encodeLocation(locationOf(f)));
    if (r.type === 'purge') continue;
    stats.objects++;
    report.objects++;
    stats.logicalBytes += r.size;
    if (r.inline) {
      stats.uniqueBytes += r.inline.byteLength;
      stats.chunkStoredBytes += r.inline.byteLength;
    }
    for (const c of r.chunks) refs.set(toHex(c.id), (refs.get(toHex(c.id)) ?? 0) + 1);
    if (r.parent) await put(keys.child(r.parent, id), Buffer.alloc(0));
    if (r.key !== null) {
      let versions = byKey.get(r.key);
      if (!versions) byKey.set(r.key, (versions = []));
      versions.push({ hash: id, prev: r.prev, tombstone: r.type === 'tombstone' });
    }
  }
  for (const [name, versions] of byKey) {
    const key = Buffer.from(name, 'utf8');
    const { numbers, heads } = rebuildVersions(versions);
    await put(keys.heads(key), encodeHeads(heads));
    for (const v of versions) await put(keys.version(key, numbers.get(toHex(v.hash))!, v.hash), Buffer.alloc(0));
    report.keys++;
  }
  for (const [hex, f] of chunks) {
    stats.chunks++;
    report.chunks++;
    stats.uniqueBytes += f.row.plainLength;
    stats.chunkStoredBytes += f.row.length;
    await put(keys.chunk(f.row.id), encodeLocation({ kind: EntryKind.Chunk, flags: f.row.flags, length: f.row.length, plainLength: f.row.plainLength, offset: f.row.offset, seq: f.seq }));
    const n = refs.get(hex) ?? 0;
    if (n > 0) {
      addLive(f);
      await put(keys.refcount(f.row.id), encodeCount(n, 4));
    }
  }
  for (const [seq, total] of entryBytes) {
    const dead = total - (liveBytes.get(seq) ?? 0);
    if (dead > 0) await put(keys.dead(seq), encodeCount(dead, 8));
  }
  await flush();
  failpoint('rebuild.before-done');
  ops.push(
    { type: 'put', key: keys.meta('nextSeq'), value: u64(report.nextSeq) },
    { type: 'put', key: keys.meta('stats'), value: encodeStats(stats) },
    { type: 'del', key: keys.meta('rebuilding') },
  );
  await flush(true);
  return report;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
}
