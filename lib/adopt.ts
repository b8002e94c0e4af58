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
 *
 * Adopter, below, does the indexing.
 */
import path from 'node:path';
import { EntryKind, type EntryRow } from '../blockstore/format.js';
import type { SeenEntries } from '../blockstore/entry-hashes.js';
import { type BlockStore, assertBlockEntries } from '../blockstore/store.js';
import type { BatchOp } from '../index/batch.js';
import { keys } from '../index/keys.js';
import { type PersistedStats, addStat } from '../index/stats.js';
import type { IndexStore } from '../index/store.js';
import { type Head, type Location, deadBytes, encodeBlockInfo, encodeCount, encodeHeads, encodeLocation } from '../index/values.js';
import { type BlockSet, sumLengths } from '../wal/blocks.js';
import type { InFlight } from '../wal/inflight.js';
import { ensureDir, fsyncDir } from './fsutil.js';
import { failpoint } from './failpoints.js';
import type { Heads } from './heads.js';
import type { Lifecycle } from './lifecycle.js';
import type { Reader } from './read.js';
import { toHex } from './bytes.js';
import type { DatabaseKeys } from './crypto.js';
import { openEntry } from './entry.js';
import { CorruptionError, ioError } from './errors.js';
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

const EMPTY = Buffer.alloc(0);

/** What an adoption did: `logicalBytes` is what it added to stats().logicalBytes (0 when the block was registered already). */
export interface AdoptResult {
  id: string;
  adopted: boolean;
  logicalBytes: number;
}

export interface AdopterParts {
  life: Lifecycle;
  index: IndexStore;
  store: BlockStore;
  keys: DatabaseKeys;
  blocks: BlockSet;
  held: InFlight;
  heads: Heads;
  reader: Reader;
}

/**
 * Adopter: indexing blocks received from other cluster members.
 *
 * Owns, and is the only code that changes: the adoption chain (adoptions run one at a time) and
 * the received files an open could not adopt without the cluster (`defer`, `retryDeferred`).
 * An adoption goes through the same chokepoints as a seal: the file's rename and directory
 * sync, the locks of the keys it touches (Heads), then one index batch whose prepare step takes
 * the block's seq (BlockSet.allocateSeq) and registers it.
 */
export class Adopter {
  readonly #life: Lifecycle;
  readonly #index: IndexStore;
  readonly #store: BlockStore;
  readonly #keys: DatabaseKeys;
  readonly #blocks: BlockSet;
  readonly #held: InFlight;
  readonly #heads: Heads;
  readonly #reader: Reader;
  /** Received block files the open could not adopt without the cluster (Engine.recover, lib/open.ts). */
  readonly #deferredAdoptions: string[] = [];
  /** Block adoptions run one at a time. */
  #adoptChain: Promise<unknown> = Promise.resolve();

  constructor(parts: AdopterParts) {
    this.#life = parts.life;
    this.#index = parts.index;
    this.#store = parts.store;
    this.#keys = parts.keys;
    this.#blocks = parts.blocks;
    this.#held = parts.held;
    this.#heads = parts.heads;
    this.#reader = parts.reader;
  }

  /** adoptBlock(): adopts `file` after the adoptions before it, counted among the operations in flight. */
  adopt(file: string, seen?: SeenEntries): Promise<AdoptResult> {
    const run = this.#adoptChain.then(() => this.adoptNow(path.resolve(file), seen));
    this.#adoptChain = run.catch(() => {});
    this.#life.track(run);
    void run.finally(() => this.#life.untrack(run)).catch(() => {});
    return run;
  }

  /** A received file to adopt once a cluster node serves the database. */
  defer(file: string): void {
    this.#deferredAdoptions.push(file);
  }

  /** Adopts the deferred files with `adopt`; one that fails again waits for the next call. */
  retryDeferred(adopt: (file: string) => Promise<unknown>): void {
    for (const file of this.#deferredAdoptions.splice(0)) {
      adopt(file).catch(() => this.#deferredAdoptions.push(file));
    }
  }

  async adoptNow(file: string, seen?: SeenEntries): Promise<AdoptResult> {
    while (this.#life.exclusive) await this.#life.exclusive;
    const store = this.#store;
    const index = await store.readIndex(file);
    const idHex = toHex(index.id);
    const dest = store.blockPath(index.id);
    if (this.#index.get(keys.block(index.id)) !== undefined || this.#index.get(keys.tombstone(index.id)) !== undefined) {
      if (file !== dest) await store.vfs.remove(file).catch(() => {});
      return { id: idHex, adopted: false, logicalBytes: 0 };
    }
    await assertBlockEntries(store.vfs, file, index.rows, seen);
    const records = await readBlockRecords(store.vfs, file, index.rows, this.#keys);
    if (file !== dest) {
      await ensureDir(store.vfs, path.dirname(dest));
      await store.vfs.rename(file, dest).catch((err: unknown) => {
        throw ioError(`rename ${file} -> ${dest}`, err);
      });
      await fsyncDir(store.vfs, path.dirname(dest));
    }
    failpoint('adopt.after-rename');

    const byKey = new Map<string, VersionNode[]>();
    for (const { hash, record } of records.values()) {
      if (record.key === null || record.type === 'purge') continue;
      let list = byKey.get(record.key);
      if (!list) byKey.set(record.key, (list = []));
      list.push({ hash, prev: record.prev, tombstone: record.type === 'tombstone' });
    }
    const names = [...byKey.keys()].sort();
    return this.#heads.withKeys(names, async () => {
      const changes = new Map<string, VersionChange>();
      for (const name of names) {
        await this.#heads.keySettled(name);
        const known: Array<VersionNode & { n: number }> = [];
        for await (const k of this.#index.ldb.keys(keys.versionRange(Buffer.from(name, 'utf8')))) {
          const v = keys.decodeVersion(k);
          const hash = Buffer.from(v.hash);
          const r = await this.#reader.record(hash);
          known.push({ hash, n: v.n, prev: r.prev, tombstone: r.type === 'tombstone' });
        }
        changes.set(name, mergeVersions(known, byKey.get(name)!));
      }
      let seq = 0;
      const delta: Partial<PersistedStats> = {};
      await this.#index.write([], delta, [
        (ops, delta) => {
          seq = this.#blocks.allocateSeq();
          ops.push(
            { type: 'put', key: keys.block(index.id), value: encodeBlockInfo({ seq, adopted: true, size: index.size, entries: index.rows.length, liveBytes: sumLengths(index.rows) }) },
            { type: 'put', key: keys.sealedSeq(seq), value: index.id },
            { type: 'put', key: keys.meta('nextSeq'), value: encodeCount(this.#blocks.nextSeq, 8) },
          );
          addStat(delta, 'blocks', 1);
          addStat(delta, 'storedBytes', index.size);
          for (const row of index.rows) {
            if (row.kind !== EntryKind.Pack) this.#indexAdopted(row.id, row, undefined, seq, records.get(toHex(row.id))?.record, ops, delta);
          }
          for (const r of records.values()) if (r.slot) this.#indexAdopted(r.hash, r.row, r.slot, seq, r.record, ops, delta);
          for (const [name, change] of changes) {
            const kb = Buffer.from(name, 'utf8');
            for (const d of change.drop) ops.push({ type: 'del', key: keys.version(kb, d.n, d.hash) });
            for (const w of change.write) ops.push({ type: 'put', key: keys.version(kb, w.n, w.hash), value: EMPTY });
            ops.push({ type: 'put', key: keys.heads(kb), value: encodeHeads(change.heads) });
          }
        },
      ]);
      this.#blocks.noteSealed(seq, index.id);
      failpoint('adopt.after-register');
      return { id: idHex, adopted: true, logicalBytes: delta.logicalBytes ?? 0 };
    });
  }

  /**
   * The index entries of one entry of an adopted block, or of one record of a pack in it (`slot`
   * set, `id` the record's hash), inside its batch's prepare step.
   */
  #indexAdopted(id: Buffer, row: EntryRow, slot: PackSlot | undefined, seq: number, record: ObjectRecord | undefined, ops: BatchOp[], delta: Partial<PersistedStats>): void {
    const hex = toHex(id);
    const chunk = row.kind === EntryKind.Chunk;
    const indexKey = chunk ? keys.chunk(id) : keys.object(id);
    const loc: Location = { kind: row.kind, flags: row.flags, length: row.length, plainLength: row.plainLength, offset: row.offset, seq, slot };
    if (this.#index.get(indexKey) !== undefined || this.#held.isPending(hex)) {
      // Known already: this copy is dead here, but remembered, so that releasing the block the
      // index names (a writer compacted it into this one) re-points instead of copying.
      this.#index.tx.addDead(keys.dead(seq), deadBytes(loc));
      ops.push({ type: 'put', key: keys.alt(indexKey), value: encodeLocation(loc) });
      return;
    }
    ops.push({ type: 'put', key: indexKey, value: encodeLocation(loc) });
    if (chunk) {
      addStat(delta, 'chunks', 1);
      addStat(delta, 'uniqueBytes', row.plainLength);
      addStat(delta, 'chunkStoredBytes', row.length);
      return;
    }
    if (!record || record.type === 'purge') return;
    addStat(delta, 'objects', 1);
    addStat(delta, 'logicalBytes', record.size);
    if (record.inline) {
      addStat(delta, 'uniqueBytes', record.inline.byteLength);
      addStat(delta, 'chunkStoredBytes', record.inline.byteLength);
    }
    for (let i = 0; i < record.chunks.length; i++) this.#index.changeRef(record.chunks.id(i), 1);
    if (record.parent) ops.push({ type: 'put', key: keys.child(record.parent, id), value: EMPTY });
  }
}
