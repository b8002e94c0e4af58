/**
 * `db.check()`: verifies the index against the blocks and reports every problem found, as data,
 * instead of stopping at the first. Reads the index from one snapshot, so writes may continue.
 *
 * Always: every registered block's header, footer and trailer (and that its contents hash to its
 * id), every location against the footer row it names, every head and version against the
 * object locations. With `readData`: every entry (or a `sample` share of them) is read, checked
 * against its footer hash and authenticated with the key, and every live object record is
 * decoded to check its chunks exist and the reference counts match.
 */
import crypto from 'node:crypto';
import type { ClassicLevel } from '../index/leveldb.js';
import { EntryKind, type EntryRow } from '../blockstore/format.js';
import type { BlockStore } from '../blockstore/store.js';
import { PREFIX_BLOCK, PREFIX_CHUNK, PREFIX_HEADS, PREFIX_OBJECT, PREFIX_REFCOUNT, PREFIX_VERSION, keys } from '../index/keys.js';
import { type Location, decodeBlockInfo, decodeCount, decodeHeads, decodeLocation } from '../index/values.js';
import { toHex } from './bytes.js';
import type { DatabaseKeys } from './crypto.js';
import { openEntry } from './entry.js';
import { OuroError } from './errors.js';
import { decodePack, recordInPack } from './pack.js';
import { decodeRecord } from './record.js';

type Ldb = ClassicLevel<Buffer, Buffer>;
type Snapshot = ReturnType<Ldb['snapshot']>;

export interface CheckProblem {
  kind: string;
  block?: string;
  id?: string;
  key?: string;
  message: string;
}

export interface CheckResult {
  ok: boolean;
  blocks: number;
  entries: number;
  entriesRead: number;
  problems: CheckProblem[];
}

export interface CheckSource {
  ldb: Ldb;
  snapshot: Snapshot;
  store: BlockStore;
  keys: DatabaseKeys;
  /** The file and entry rows of block `seq`, sealed or open, or undefined if there is none. */
  blockOf(seq: number): Promise<{ name: string; file: string; rows: EntryRow[] } | undefined>;
  /** Whether open block `seq` is being sealed now (its file may be renamed but not registered yet). */
  sealing(seq: number): boolean;
  /** Reads `length` bytes at `offset` of a block file. */
  read(name: string, file: string, offset: number, length: number): Promise<Buffer>;
}

export async function checkDatabase(src: CheckSource, options: { readData: boolean; sample: number; onProgress?: (entries: number, bytesRead: number) => void }): Promise<CheckResult> {
  let bytesRead = 0;
  const { ldb, snapshot } = src;
  const problems: CheckProblem[] = [];
  const result: CheckResult = { ok: true, blocks: 0, entries: 0, entriesRead: 0, problems };
  const iter = (prefix: number) => ldb.iterator({ ...keys.range(prefix), snapshot });
  const getSync = (k: Buffer) => ldb.getSync(k, { snapshot });

  // Blocks: structure and id. Registered files on disk and registered blocks agree.
  const registered = new Set<string>();
  for await (const [k, v] of iter(PREFIX_BLOCK)) {
    const id = toHex(k.subarray(1));
    registered.add(id);
    result.blocks++;
    const info = decodeBlockInfo(v);
    const named = getSync(keys.sealedSeq(info.seq));
    if (!named || toHex(named) !== id) problems.push({ kind: 'seq-mismatch', block: id, message: `block seq ${info.seq} does not map back to ${id}` });
    try {
      const index = await src.store.readIndex(src.store.blockPath(k.subarray(1)));
      if (toHex(index.id) !== id) problems.push({ kind: 'block-corrupt', block: id, message: `contents hash to ${toHex(index.id)}` });
    } catch (err) {
      const missing = (err as { cause?: { code?: string } }).cause?.code === 'ENOENT';
      // A block adopted from another member need not be kept here: reads fetch it from a holder.
      if (missing && info.adopted) continue;
      problems.push({ kind: missing ? 'block-missing' : 'block-corrupt', block: id, message: (err as Error).message });
    }
  }
  for (const { idHex, path: file } of await src.store.listSealed()) {
    const id = Buffer.from(idHex, 'hex');
    // A block deleted across the cluster ('t') stays until every member released it: not a problem.
    if (registered.has(idHex) || getSync(keys.retired(id)) !== undefined || getSync(keys.tombstone(id)) !== undefined) continue;
    // Sealed or retired after the snapshot was taken, or being sealed right now: not a problem.
    const seq = await src.store.readIndex(file).then((i) => i.seq, () => undefined);
    if (seq !== undefined && src.sealing(seq)) continue;
    // Checked after the await: a seal may have registered it meanwhile.
    if (ldb.getSync(keys.block(id)) !== undefined || ldb.getSync(keys.retired(id)) !== undefined) continue;
    problems.push({ kind: 'block-unregistered', block: idHex, message: 'a block file the index does not know' });
  }

  // Locations against the footer rows they name; with readData, the entries themselves.
  const rowsBySeq = new Map<number, Map<number, EntryRow> | null>();
  const rowAt = async (seq: number, offset: number) => {
    if (!rowsBySeq.has(seq)) {
      const b = await src.blockOf(seq).catch(() => undefined);
      rowsBySeq.set(seq, b ? new Map(b.rows.map((r) => [r.offset, r])) : null);
    }
    return rowsBySeq.get(seq)?.get(offset);
  };
  const liveObjects: Buffer[] = [];
  for (const prefix of [PREFIX_CHUNK, PREFIX_OBJECT]) {
    for await (const [k, v] of iter(prefix)) {
      const id = Buffer.from(k.subarray(1));
      const loc = decodeLocation(v);
      result.entries++;
      if (result.entries % 256 === 0) options.onProgress?.(result.entries, bytesRead);
      if (prefix === PREFIX_OBJECT) liveObjects.push(id);
      const row = await rowAt(loc.seq, loc.offset);
      // A record in a pack is at its pack's row (whose id is the pack's); the pack's table is
      // checked against the location when the data is read.
      const rowMatches = row && row.length === loc.length && (loc.slot ? row.kind === EntryKind.Pack : row.id.equals(id));
      if (!row || !rowMatches) {
        problems.push({ kind: 'location-dangling', id: toHex(id), message: `the index places it at block seq ${loc.seq} offset ${loc.offset}, where there is no such entry` });
        continue;
      }
      if (!options.readData || Math.random() >= options.sample) continue;
      const block = (await src.blockOf(loc.seq))!;
      try {
        const bytes = await src.read(block.name, block.file, loc.offset, loc.length);
        if (!crypto.createHash('sha256').update(bytes).digest().equals(row.hash)) throw new Error('entry bytes do not match the footer hash');
        if (loc.slot) packedRecord(openEntry(src.keys.data, bytes, { id: null, kind: EntryKind.Pack }, block.file, loc.offset), id, loc, block.file);
        else openEntry(src.keys.data, bytes, { id, kind: prefix === PREFIX_CHUNK ? EntryKind.Chunk : EntryKind.Object }, block.file, loc.offset);
        result.entriesRead++;
        bytesRead += bytes.length;
      } catch (err) {
        problems.push({ kind: 'entry-corrupt', block: block.name.replace(/^blk:/, ''), id: toHex(id), message: (err as Error).message });
      }
    }
  }

  // Keys: heads and versions name existing objects.
  for await (const [k, v] of iter(PREFIX_HEADS)) {
    const key = k.subarray(1);
    const name = key.toString('utf8');
    try {
      for (const h of decodeHeads(v)) {
        if (getSync(keys.version(key, h.n, h.hash)) === undefined) problems.push({ kind: 'head-dangling', key: name, id: toHex(h.hash), message: 'a head with no version entry' });
        if (getSync(keys.object(h.hash)) === undefined) problems.push({ kind: 'head-dangling', key: name, id: toHex(h.hash), message: 'a head whose object is not in the index' });
      }
    } catch (err) {
      problems.push({ kind: 'index-corrupt', key: name, message: (err as Error).message });
    }
  }
  for await (const k of ldb.keys({ ...keys.range(PREFIX_VERSION), snapshot })) {
    const v = keys.decodeVersion(k);
    if (getSync(keys.object(v.hash)) === undefined) problems.push({ kind: 'version-dangling', key: v.key.toString('utf8'), id: toHex(v.hash), message: 'a version whose object is not in the index' });
  }

  // Records: chunks exist and reference counts match (reads every live record).
  if (options.readData) {
    const counts = new Map<string, number>();
    for (const id of liveObjects) {
      try {
        const loc = decodeLocation(getSync(keys.object(id))!);
        const block = await src.blockOf(loc.seq);
        if (!block) continue;
        const bytes = await src.read(block.name, block.file, loc.offset, loc.length);
        const plain = loc.slot ? packedRecord(openEntry(src.keys.data, bytes, { id: null, kind: EntryKind.Pack }, block.file, loc.offset), id, loc, block.file) : openEntry(src.keys.data, bytes, { id, kind: EntryKind.Object }, block.file, loc.offset);
        if (!src.keys.objectId(plain).equals(id)) {
          problems.push({ kind: 'record-corrupt', id: toHex(id), message: 'the record does not hash to its id' });
          continue;
        }
        const r = decodeRecord(plain, toHex(id));
        if (r.type === 'purge') continue;
        for (const c of r.chunks) {
          const hex = toHex(c.id);
          counts.set(hex, (counts.get(hex) ?? 0) + 1);
          if (getSync(keys.chunk(c.id)) === undefined) problems.push({ kind: 'chunk-missing', id: hex, message: `object ${toHex(id)} names a chunk the index does not have` });
        }
      } catch (err) {
        if (!(err instanceof OuroError)) throw err;
        problems.push({ kind: 'record-corrupt', id: toHex(id), message: err.message });
      }
    }
    for await (const [k, v] of iter(PREFIX_REFCOUNT)) {
      const hex = toHex(k.subarray(1));
      const want = counts.get(hex) ?? 0;
      counts.delete(hex);
      if (decodeCount(v) !== want) problems.push({ kind: 'refcount-mismatch', id: hex, message: `stored ${decodeCount(v)}, counted ${want}` });
    }
    for (const [hex, want] of counts) problems.push({ kind: 'refcount-mismatch', id: hex, message: `stored 0, counted ${want}` });
  }
  options.onProgress?.(result.entries, bytesRead);
  result.ok = problems.length === 0;
  return result;
}

/** Record `id` from an opened pack, where its location says it is (CorruptionError otherwise). */
function packedRecord(plain: Buffer, id: Buffer, loc: Location, file: string): Buffer {
  const where = `${file}@${loc.offset}`;
  return recordInPack(plain, decodePack(plain, where), id, loc.slot!, where);
}
