/**
 * IndexStore: the one writer of the index LevelDB.
 *
 * Owns, and is the only code that changes:
 *   - the LevelDB handle `ldb`. Layers above read through `get` (typed errors) and open their own
 *     iterators, keys and snapshots on `ldb`; every write goes through `write`;
 *   - the batch chain: batches run strictly one after another, each after the last has landed,
 *     so a prepare step reads exactly the current index (getSync) and the stats written with each
 *     batch are exact and in order;
 *   - the persisted stats (`stats`), changed only by a landed batch's delta, or replaced by
 *     `resetStats` under the rebuild gate;
 *   - the ops that ride on the next batch (`ride`: kept heads' hint rows);
 *   - the counters of the batch being prepared (`tx`, set only inside a prepare step);
 *   - the failure latch (`failed`): set once by `fail` (or `latch`), never cleared; once set no
 *     later batch runs (a later group may depend on entries of the failed one).
 */
import { type BatchOp, writeOps } from './batch.js';
import { Counters } from './counters.js';
import { keys } from './keys.js';
import type { ClassicLevel } from './leveldb.js';
import { type PersistedStats, encodeStats } from './stats.js';
import { decodeLocation } from './values.js';
import { CorruptionError, FailedError, type OuroError, ioError } from '../lib/errors.js';

export type Ldb = ClassicLevel<Buffer, Buffer>;
export type Snapshot = ReturnType<Ldb['snapshot']>;

/** A step run inside the batch chain, right before its batch is written: adds ops and stats. */
export type Prepare = (ops: BatchOp[], delta: Partial<PersistedStats>) => void;

export class IndexStore {
  readonly ldb: Ldb;
  /** Guarded by the chain itself: each batch's step runs after the previous one settled. */
  #batchChain: Promise<void> = Promise.resolve();
  /** Changed only when a batch lands (its delta added), or by resetStats. */
  #stats: PersistedStats;
  /** Ops waiting for the next batch (hint rows of kept heads): appended by ride, taken by the next batch. */
  #riders: BatchOp[] = [];
  /** Counter changes of the batch being prepared (set only inside write's prepare step). */
  #counters: Counters | undefined;
  /** Set once, by fail or latch; never cleared. */
  #failed: OuroError | undefined;

  constructor(ldb: Ldb, stats: PersistedStats) {
    this.ldb = ldb;
    this.#stats = stats;
  }

  get failed(): OuroError | undefined {
    return this.#failed;
  }

  /** Fails the database: a write could not be made durable. The first failure wins. */
  fail(err: unknown): void {
    if (this.#failed) return;
    if (err instanceof FailedError) {
      this.#failed = err;
      return;
    }
    this.#failed = new FailedError(`a write could not be made durable; reopen the database to recover (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }

  /** Sets the failure latch to `err` unless it is set already. */
  latch(err: OuroError): void {
    this.#failed ??= err;
  }

  get stats(): PersistedStats {
    return this.#stats;
  }

  /** Replaces the stats (rebuildIndex, under its gate, once the chain is idle). */
  resetStats(stats: PersistedStats): void {
    this.#stats = { ...stats };
  }

  /**
   * One index read. LevelDB's own errors (a damaged table it notices, an I/O error) become typed
   * errors here, so no raw LevelDB error reaches a caller.
   */
  get(key: Buffer, options: { snapshot?: Snapshot } = {}): Buffer | undefined {
    try {
      return this.ldb.getSync(key, options);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'LEVEL_CORRUPTION') throw new CorruptionError(`the index is damaged (${(err as Error).message}); rebuildIndex() or 'ouro repair --rebuild-index' rebuilds it`, { cause: err });
      throw ioError('index read', err);
    }
  }

  /** The counters of the batch being prepared: only inside a prepare step. */
  get tx(): Counters {
    return this.#counters!;
  }

  /** Resolves once every batch asked for so far has landed or failed. */
  settled(): Promise<void> {
    return this.#batchChain;
  }

  /** Adds `op` to the next batch; returns how many ops now wait for one. */
  ride(op: BatchOp): number {
    return this.#riders.push(op);
  }

  /** How many ops wait for the next batch. */
  get riding(): number {
    return this.#riders.length;
  }

  /**
   * Serialises every index batch, so the stats written with each are exact and in order. Once a
   * batch has failed no later one runs: a later group may depend on entries of the failed one.
   */
  write(ops: BatchOp[], delta: Partial<PersistedStats>, prepares: ReadonlyArray<Prepare> = []): Promise<void> {
    const run = this.#batchChain.then(async () => {
      if (this.#failed) throw this.#failed;
      // Read-modify-write index changes (reference counts, dead bytes, gc's checks) are computed
      // here: every earlier batch has landed, so what getSync reads is exactly current.
      const counters = new Counters(this.ldb);
      this.#counters = counters;
      try {
        for (const prepare of prepares) prepare(ops, delta);
      } finally {
        this.#counters = undefined;
      }
      if (this.#riders.length > 0) ops.unshift(...this.#riders.splice(0));
      const next = { ...this.#stats };
      for (const [k, v] of Object.entries(delta) as [keyof PersistedStats, number][]) next[k] += v;
      try {
        // The counters after the ops, the stats last, as before: in the batch the later op on a key wins.
        await writeOps(this.ldb, ops, true, (sink) => {
          counters.emit(sink);
          sink.put(keys.meta('stats'), encodeStats(next));
        });
      } catch (err) {
        const failure = ioError('index batch', err);
        this.fail(failure);
        throw failure;
      }
      this.#stats = next;
    });
    this.#batchChain = run.catch(() => {});
    return run;
  }

  /**
   * Changes a chunk's reference count inside the batch chain (a prepare step). A count that
   * reaches zero stays stored as zero ("was referenced, now dead") and adds the chunk's bytes to
   * its block's dead bytes; a stored zero that rises again takes them back.
   */
  changeRef(id: Buffer, delta: number): void {
    const c = this.#counters!;
    const cell = c.touch(keys.refcount(id), 4);
    const { value, present } = cell;
    const next = Math.max(0, value + delta);
    Counters.assign(cell, next, next > 0 || present || value > 0);
    const died = value > 0 && next === 0;
    const revived = value === 0 && present && next > 0;
    if (died || revived) {
      const loc = this.get(keys.chunk(id));
      if (loc) {
        const l = decodeLocation(loc);
        c.addDead(keys.dead(l.seq), died ? l.length : -l.length);
      }
    }
  }

  /**
   * Compacts the index over the WAL's key range before closing. LevelDB turns its log into a
   * level-0 table at every open and merges level 0 only once four tables pile up, so a database
   * opened and closed often (every `ouro` command) kept up to three stale copies of its churn:
   * WAL values written and deleted, stats and heads overwritten. On the tree benchmark (4 versions
   * of date-fns, then one restore) that was 2.2 MB of index instead of 1.1 MB. Compacting a range
   * flushes the memtable and merges level 0 (whose tables span every key) into level 1; below
   * that only the tables overlapping the WAL range take part, so the cost is bounded by level 0
   * and level 1 (10 MiB in LevelDB), not by the size of the index.
   */
  async compactTail(): Promise<void> {
    const range = keys.walRange();
    await this.ldb.compactRange(range.gte, range.lt);
  }
}
