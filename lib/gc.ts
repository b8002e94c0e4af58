/**
 * Collector: gc and the release of blocks deleted across the cluster, one run at a time.
 *
 * Owns, and is the only code that changes: the run under way (`running`). A run starts after
 * the one before and outside the rebuild gate, and holds no lock across its steps: writers go
 * on. It changes the index only through IndexStore batches whose prepare steps decide against
 * the exact current index; a chunk it drops is marked dying (InFlight) from that decision until
 * the batch lands, and one a put holds (pinned or pending) is kept. Live entries are copied
 * through the ordinary group commit, each with a relocate() step that switches its location in
 * the copy's own batch, a slice at a time, resting between slices while puts are being written
 * (lib/gc-pace.ts).
 */
import crypto from 'node:crypto';
import { EntryKind, type EntryRow } from '../blockstore/format.js';
import type { BlockStore } from '../blockstore/store.js';
import type { BatchOp } from '../index/batch.js';
import { PREFIX_BLOCK, keys } from '../index/keys.js';
import { type PersistedStats, addStat } from '../index/stats.js';
import type { IndexStore } from '../index/store.js';
import { decodeBlockInfo, decodeCount, decodeLocation, deadBytes, encodeCount, encodeLocation } from '../index/values.js';
import { type BlockSet, blockName } from '../wal/blocks.js';
import type { CommitPipeline } from '../wal/commit.js';
import type { InFlight, PendingEntry } from '../wal/inflight.js';
import { toHex } from './bytes.js';
import type { DatabaseKeys } from './crypto.js';
import { openEntry } from './entry.js';
import { CorruptionError, NotFoundError, RefusedError } from './errors.js';
import { failpoint } from './failpoints.js';
import { DEFAULT_GC_PACE, GC_SLICE_BYTES, GcPacer } from './gc-pace.js';
import type { Lifecycle } from './lifecycle.js';
import { type PackSlot, decodePack } from './pack.js';
import type { Snapshots } from './snapshots.js';
import { type GcOptions, type GcReport, type ReleaseReport, type ReplicaSource, Tombstone } from './types.js';

/** Where gc's copy of a live entry came from: block `seq` at `offset`, and a pack's records. */
interface Moved {
  seq: number;
  offset: number;
  records?: ReadonlyArray<{ id: Buffer; slot: PackSlot }>;
}

export interface CollectorParts {
  life: Lifecycle;
  index: IndexStore;
  store: BlockStore;
  keys: DatabaseKeys;
  blocks: BlockSet;
  held: InFlight;
  commit: CommitPipeline;
  snapshots: Snapshots;
  /** The cluster node serving the database, if any (lib/db.ts, setReplicaSource). */
  cluster: () => ReplicaSource | undefined;
}

export class Collector {
  readonly #life: Lifecycle;
  readonly #index: IndexStore;
  readonly #store: BlockStore;
  readonly #keys: DatabaseKeys;
  readonly #blocks: BlockSet;
  readonly #held: InFlight;
  readonly #commit: CommitPipeline;
  readonly #snapshots: Snapshots;
  readonly #cluster: () => ReplicaSource | undefined;
  /** The gc or block release running (one at a time, never beside an exclusive task). */
  #gcRun: Promise<unknown> | undefined;

  constructor(parts: CollectorParts) {
    this.#life = parts.life;
    this.#index = parts.index;
    this.#store = parts.store;
    this.#keys = parts.keys;
    this.#blocks = parts.blocks;
    this.#held = parts.held;
    this.#commit = parts.commit;
    this.#snapshots = parts.snapshots;
    this.#cluster = parts.cluster;
  }

  /** The run under way, if any. */
  get running(): Promise<unknown> | undefined {
    return this.#gcRun;
  }

  /** gc(): compacts every sealed block whose live share is below `threshold` (see lib/db.ts). */
  collect(threshold: number, pace: number, onProgress?: GcOptions['onProgress']): Promise<GcReport> {
    return this.#asGcRun(() => this.#gc(threshold, this.#pacer(pace), onProgress));
  }

  /** A pacer for one run: it rests while entries other than gc's copies are being queued. */
  #pacer(pace: number): GcPacer {
    return new GcPacer(pace, () => this.#commit.foreground, () => this.#life.closing !== undefined);
  }

  /** releaseBlock(): lets go of adopted block `id` (see lib/db.ts). */
  release(id: Buffer): Promise<ReleaseReport> {
    return this.#asGcRun(() => this.#release(id));
  }

  /**
   * The index switch of an entry gc copied: its location moves to the copy only if it still
   * names the original (a purge may have dropped the object meanwhile). Otherwise, or if the
   * chunk died meanwhile, the copy is dead on arrival and counts as dead bytes of its block.
   */
  #switchMoved(e: PendingEntry, moved: Moved, loc: Buffer, ops: BatchOp[], _delta: Partial<PersistedStats>): void {
    if (moved.records) {
      // A pack: each record switches on its own; the pack's bytes that stay behind (records a
      // purge dropped meanwhile) count as dead in the new block.
      const at = decodeLocation(loc);
      for (const r of moved.records) {
        const indexKey = keys.object(r.id);
        const cur = this.#index.get(indexKey);
        const was = cur ? decodeLocation(cur) : undefined;
        const mine = { ...at, slot: r.slot };
        if (was && was.seq === moved.seq && was.offset === moved.offset) ops.push({ type: 'put', key: indexKey, value: encodeLocation(mine) });
        else this.#index.tx.addDead(keys.dead(e.block.seq), deadBytes(mine));
      }
      return;
    }
    const indexKey = e.kind === EntryKind.Chunk ? keys.chunk(e.id) : keys.object(e.id);
    const cur = this.#index.get(indexKey);
    const at = cur ? decodeLocation(cur) : undefined;
    if (at && at.seq === moved.seq && at.offset === moved.offset) {
      ops.push({ type: 'put', key: indexKey, value: loc });
      if (e.kind === EntryKind.Chunk) {
        const ref = this.#index.tx.get(keys.refcount(e.id), 4);
        if (ref.present && ref.value === 0) this.#index.tx.addDead(keys.dead(e.block.seq), e.row.length);
      }
      return;
    }
    this.#index.tx.addDead(keys.dead(e.block.seq), e.row.length);
  }

  /** Runs `work` as the gc run: after the one running (and any exclusive task), alone. */
  async #asGcRun<T>(work: () => Promise<T>): Promise<T> {
    while (this.#gcRun || this.#life.exclusive) await (this.#gcRun?.catch(() => {}) ?? this.#life.exclusive);
    const run = work();
    this.#gcRun = run;
    this.#life.track(run);
    try {
      return await run;
    } finally {
      this.#gcRun = undefined;
      this.#life.untrack(run);
    }
  }

  async #gc(threshold: number, pacer: GcPacer, onProgress?: GcOptions['onProgress']): Promise<GcReport> {
    const report: GcReport = { blocksRemoved: 0, entriesDropped: 0, bytesCopied: 0, bytesFreed: 0, restedMs: 0 };
    const candidates: Array<{ id: Buffer; seq: number; size: number }> = [];
    for await (const [k, v] of this.#index.ldb.iterator(keys.range(PREFIX_BLOCK))) {
      const info = decodeBlockInfo(v);
      // Another member's block: its holders keep it whole (deletion across the cluster is the
      // writer's to start), so its dead entries are not compacted here.
      if (info.adopted) continue;
      const dead = decodeCount(this.#index.get(keys.dead(info.seq)));
      if (dead === 0) continue;
      const entryBytes = Math.max(1, info.liveBytes);
      if (1 - dead / entryBytes < threshold) candidates.push({ id: Buffer.from(k.subarray(1)), seq: info.seq, size: info.size });
    }
    for (const c of candidates) {
      // Between blocks, gc gives way to close(): what it compacted so far stays compacted.
      if (this.#life.closing) break;
      this.#life.checkAlive();
      await this.#compact(c, report, pacer);
      report.restedMs = Math.round(pacer.restedMs);
      onProgress?.({ ...report }, candidates.length);
    }
    return report;
  }

  /**
   * Whether the index still names `row` in block `seq` (it may have moved or died since); a pack
   * while it names any of its records there (`packs`: their ids by the pack's offset, #packsIn).
   */
  #pointsInto(seq: number, packs: ReadonlyMap<number, ReadonlyArray<{ id: Buffer; slot: PackSlot }>>): (row: EntryRow) => boolean {
    const names = (indexKey: Buffer, offset: number) => {
      const cur = this.#index.get(indexKey);
      if (!cur) return false;
      const at = decodeLocation(cur);
      return at.seq === seq && at.offset === offset;
    };
    return (row) => {
      if (row.kind === EntryKind.Pack) return (packs.get(row.offset) ?? []).some((r) => names(keys.object(r.id), row.offset));
      return names(row.kind === EntryKind.Chunk ? keys.chunk(row.id) : keys.object(row.id), row.offset);
    };
  }

  /** The records of every pack among `rows` of a block file, by the pack's offset (read and authenticated). */
  async #packsIn(name: string, file: string, rows: readonly EntryRow[]): Promise<Map<number, Array<{ id: Buffer; slot: PackSlot }>>> {
    const packs = new Map<number, Array<{ id: Buffer; slot: PackSlot }>>();
    for (const row of rows) {
      if (row.kind !== EntryKind.Pack) continue;
      const bytes = await this.#blocks.files.read(name, file, row.offset, row.length);
      const plain = openEntry(this.#keys.data, bytes, { id: row.id, kind: EntryKind.Pack }, file, row.offset);
      packs.set(row.offset, decodePack(plain, `${file}@${row.offset}`).map((r) => ({ id: r.hash, slot: { offset: r.offset, length: r.length } })));
    }
    return packs;
  }

  /**
   * In one batch: drops from the index the chunks among `rows` that no live object names (and
   * nothing is writing), and when `repoint` is given, first lets it move an entry elsewhere.
   * Returns the rows still named here and live, and how many were dropped.
   */
  async #dropDeadRows(rows: EntryRow[], here: (row: EntryRow) => boolean, repoint?: (row: EntryRow, ops: BatchOp[]) => boolean): Promise<{ live: EntryRow[]; dropped: number }> {
    const live: EntryRow[] = [];
    const dropped: string[] = [];
    await this.#index.write([], {}, [
      (ops, delta) => {
        for (const row of rows) {
          if (!here(row) || repoint?.(row, ops)) continue;
          const hex = toHex(row.id);
          if (row.kind === EntryKind.Chunk && !this.#held.isHeld(hex) && this.#index.tx.get(keys.refcount(row.id), 4).value === 0) {
            ops.push({ type: 'del', key: keys.chunk(row.id) });
            this.#index.tx.set(keys.refcount(row.id), 4, 0, false);
            addStat(delta, 'chunks', -1);
            addStat(delta, 'uniqueBytes', -row.plainLength);
            addStat(delta, 'chunkStoredBytes', -row.length);
            this.#held.markDying(hex);
            dropped.push(hex);
          } else {
            live.push(row);
          }
        }
      },
    ]).finally(() => {
      for (const hex of dropped) this.#held.undying(hex);
    });
    return { live, dropped: dropped.length };
  }

  /**
   * Copies the `live` entries of a sealed block into the open block (each checked against its
   * footer hash), in slices of at most GC_SLICE_BYTES, each committed before the next is read
   * and followed by the pacer's rest; resolves with the bytes copied once all are committed.
   */
  async #copyLive(block: { id: Buffer; seq: number }, file: string, live: EntryRow[], here: (row: EntryRow) => boolean, packs: ReadonlyMap<number, ReadonlyArray<{ id: Buffer; slot: PackSlot }>>, pacer: GcPacer): Promise<number> {
    let bytesCopied = 0;
    for (let start = 0; start < live.length; ) {
      let end = start + 1;
      let bytes = live[start]!.length;
      while (end < live.length && bytes + live[end]!.length <= GC_SLICE_BYTES) bytes += live[end++]!.length;
      const slice = live.slice(start, end);
      start = end;
      bytesCopied += await pacer.slice(() => this.#copySlice(block, file, slice, here, packs));
    }
    return bytesCopied;
  }

  /** One slice of #copyLive: reads, checks and queues each entry; resolves once all are committed. */
  async #copySlice(block: { id: Buffer; seq: number }, file: string, live: EntryRow[], here: (row: EntryRow) => boolean, packs: ReadonlyMap<number, ReadonlyArray<{ id: Buffer; slot: PackSlot }>>): Promise<number> {
    const name = blockName(block.id);
    const copies: Promise<void>[] = [];
    let bytesCopied = 0;
    for (const row of live) {
      if (!here(row) || this.#held.isPending(toHex(row.id))) continue;
      const bytes = await this.#blocks.files.read(name, file, row.offset, row.length);
      if (bytes.length !== row.length || !crypto.createHash('sha256').update(bytes).digest().equals(row.hash)) {
        throw new CorruptionError(`${file}@${row.offset}: entry does not match its footer; the block was left in place`, { location: { file, offset: row.offset, id: toHex(row.id) } });
      }
      const { id, kind, flags, length, plainLength, hash } = row;
      const records = kind === EntryKind.Pack ? packs.get(row.offset) : undefined;
      const moved: Moved = { seq: block.seq, offset: row.offset, ...(records ? { records } : {}) };
      const entry = await this.#commit.enqueue(bytes, { id, kind, flags, length, plainLength, hash }, { objectSize: 0, inlineSize: 0, relocate: (e, loc, ops, delta) => this.#switchMoved(e, moved, loc, ops, delta) });
      copies.push(entry.committed);
      bytesCopied += row.length;
    }
    await Promise.all(copies);
    return bytesCopied;
  }

  async #compact(block: { id: Buffer; seq: number; size: number }, report: GcReport, pacer: GcPacer): Promise<void> {
    const file = this.#store.blockPath(block.id);
    const { rows } = await this.#store.readIndex(file);
    const packs = await this.#packsIn(blockName(block.id), file, rows);
    const here = this.#pointsInto(block.seq, packs);

    // 1. Drop dead chunks from the index.
    const { live, dropped } = await this.#dropDeadRows(rows, here);
    report.entriesDropped += dropped;
    failpoint('gc.after-drop');

    // 2. Copy live entries into the open block, a bounded amount of bytes at a time.
    report.bytesCopied += await this.#copyLive(block, file, live, here, packs, pacer);
    failpoint('gc.after-copy');

    // 3. Unregister and remove the block, unless something still points into it.
    let retired = false;
    await this.#index.write([], {}, [
      (ops, delta) => {
        if (rows.some(here)) return;
        retired = true;
        ops.push({ type: 'del', key: keys.block(block.id) }, { type: 'del', key: keys.sealedSeq(block.seq) }, { type: 'put', key: keys.retired(block.id), value: encodeCount(block.seq, 8) });
        // In a cluster, other members hold copies and may index them: ask them to let go (Tombstone.Retired).
        if (this.#cluster()) ops.push({ type: 'put', key: keys.tombstone(block.id), value: Buffer.from([Tombstone.Retired]) });
        this.#index.tx.set(keys.dead(block.seq), 8, 0, false);
        addStat(delta, 'blocks', -1);
        addStat(delta, 'storedBytes', -block.size);
      },
    ]);
    if (!retired) return;
    failpoint('gc.after-unregister');
    await this.#snapshots.retire(block.id, block.seq);
    report.blocksRemoved++;
    report.bytesFreed += block.size;
  }

  async #release(id: Buffer): Promise<ReleaseReport> {
    const report: ReleaseReport = { released: false, repointed: 0, copied: 0, dropped: 0 };
    const infoBytes = this.#index.get(keys.block(id));
    if (infoBytes === undefined) {
      if (this.#index.get(keys.tombstone(id)) === undefined) await this.#index.write([{ type: 'put', key: keys.tombstone(id), value: Buffer.from([Tombstone.Released]) }], {});
      report.released = true;
      return report;
    }
    const info = decodeBlockInfo(infoBytes);
    if (!info.adopted) throw new RefusedError(`block ${toHex(id)} was sealed by this database: only its own gc retires it`);
    const file = this.#store.blockPath(id);
    if (!(await this.#store.vfs.exists(file))) {
      const cluster = this.#cluster();
      if (!cluster) throw new NotFoundError(`block ${toHex(id)} is not kept here and no cluster node serves this database`);
      await cluster.fetchBlock(toHex(id), file);
    }
    const { rows } = await this.#store.readIndex(file);
    const packs = await this.#packsIn(blockName(id), file, rows);
    const here = this.#pointsInto(info.seq, packs);

    // A pack re-points when every record of it has its other copy in one same pack elsewhere (the
    // writer's gc copied the pack whole); otherwise it is copied here whole (below).
    const repointPack = (row: EntryRow, ops: BatchOp[]): boolean => {
      const records = (packs.get(row.offset) ?? []).filter((r) => {
        const cur = this.#index.get(keys.object(r.id));
        const at = cur ? decodeLocation(cur) : undefined;
        return at !== undefined && at.seq === info.seq && at.offset === row.offset;
      });
      const alts = records.map((r) => this.#index.get(keys.alt(keys.object(r.id))));
      if (records.length === 0 || alts.some((a) => a === undefined)) return false;
      const where = alts.map((a) => decodeLocation(a!));
      const first = where[0]!;
      if (first.seq === info.seq || !where.every((w) => w.seq === first.seq && w.offset === first.offset) || this.#index.get(keys.sealedSeq(first.seq)) === undefined) return false;
      records.forEach((r, i) => {
        const altKey = keys.alt(keys.object(r.id));
        ops.push({ type: 'del', key: altKey }, { type: 'put', key: altKey.subarray(1), value: alts[i]! });
      });
      this.#index.tx.addDead(keys.dead(info.seq), row.length);
      this.#index.tx.addDead(keys.dead(first.seq), -row.length);
      report.repointed++;
      return true;
    };

    // 1. Re-point what has another copy, drop dead chunks; an alternative inside this block is void.
    const repoint = (row: EntryRow, ops: BatchOp[]): boolean => {
      if (row.kind === EntryKind.Pack) return repointPack(row, ops);
      const altKey = keys.alt(row.kind === EntryKind.Chunk ? keys.chunk(row.id) : keys.object(row.id));
      const altBytes = this.#index.get(altKey);
      if (altBytes === undefined) return false;
      ops.push({ type: 'del', key: altKey });
      const alt = decodeLocation(altBytes);
      if (alt.seq === info.seq || this.#index.get(keys.sealedSeq(alt.seq)) === undefined) return false;
      ops.push({ type: 'put', key: altKey.subarray(1), value: altBytes });
      this.#index.tx.addDead(keys.dead(info.seq), row.length);
      this.#index.tx.addDead(keys.dead(alt.seq), -row.length);
      report.repointed++;
      return true;
    };
    const { live, dropped } = await this.#dropDeadRows(rows, here, repoint);
    report.dropped = dropped;
    failpoint('release.after-repoint');

    // 2. What this member still names and has nowhere else: copied into its own open block.
    await this.#copyLive({ id, seq: info.seq }, file, live, here, packs, this.#pacer(DEFAULT_GC_PACE));
    report.copied = live.filter((r) => !here(r)).length;
    failpoint('release.after-copy');

    // 3. Unregister and tombstone it, unless something still points into it.
    await this.#index.write([], {}, [
      (ops, delta) => {
        if (rows.some(here)) return;
        report.released = true;
        ops.push({ type: 'del', key: keys.block(id) }, { type: 'del', key: keys.sealedSeq(info.seq) }, { type: 'put', key: keys.tombstone(id), value: Buffer.from([Tombstone.Released]) });
        this.#index.tx.set(keys.dead(info.seq), 8, 0, false);
        addStat(delta, 'blocks', -1);
        addStat(delta, 'storedBytes', -info.size);
      },
    ]);
    return report;
  }
}
