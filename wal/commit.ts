/**
 * CommitPipeline: the queue of appended entries and group commit.
 *
 *   store/enqueue/joinPack -> append to the open block (BlockSet) and queue
 *     -> stage one (#commitLoop): a queue of chunks alone first gathers (GATHER_BYTES); wait
 *        for the group's bytes, fdatasync its block files
 *     -> stage two (#indexLoop): one synced index batch (IndexStore) with the WAL records and
 *        locations of every group synced meanwhile -> resolve, a cohort per event-loop turn.
 *
 * Owns, and is the only code that changes: the queue, the synced groups waiting for stage two,
 * the two loops' promises, and the disk-full epoch (bumped by #rejectFrom). Entries are taken
 * and released in queue order. Contract with the heads overlay (lib/db.ts): when entries fail,
 * they are rejected newest first, so that each key's heads unwind version by version.
 *
 * No await may be added here: the measured timing (the release cohorts, `store` telling a stored
 * chunk before its first await, `enqueue` re-checking after its only await) depends on where
 * they are. (The gathering wait in #commitLoop was added with its own measurements: it only
 * delays groups of chunks that nobody waits on.) The two stages move as one unit.
 */
import { EntryKind, type EntryRow } from '../blockstore/format.js';
import type { OpenBlock } from '../blockstore/store.js';
import { deferred } from '../blockstore/store.js';
import type { BatchOp } from '../index/batch.js';
import { keys } from '../index/keys.js';
import { type PersistedStats, addStat } from '../index/stats.js';
import type { IndexStore, Prepare } from '../index/store.js';
import { encodeCount, encodeLocation } from '../index/values.js';
import { toHex } from '../lib/bytes.js';
import type { SealedEntry } from '../lib/entry.js';
import { DiskFullError, ioError, isDiskFull } from '../lib/errors.js';
import { failpoint } from '../lib/failpoints.js';
import type { BlockSet, Liveness } from './blocks.js';
import type { InFlight, PendingEntry, RecordExtra } from './inflight.js';
import type { OpenPack, Packer } from './packer.js';
import { encodeWalRecords } from './record.js';

/** How many bytes may wait to be written before put() waits: bounds memory while streaming. */
const WRITE_BACKLOG_LIMIT = 32 * 1024 * 1024;
/**
 * Committed puts are released (their promises resolved) this many per event-loop turn, and the
 * commit loop starts one turn after the entry that woke it. Writers that put again as soon as
 * their put resolves (64 of them on the small-put benchmark) then come back a cohort at a time:
 * while one cohort's next puts are being built on this thread, the group before is being
 * written and synced, so the CPU and the disk overlap. Released all at once, they came back in
 * lockstep: the first of them started the commit loop alone, as a group of one, the other 63
 * waited a whole write-and-fsync cycle for the next group, and the main thread idled in between.
 * Measured with 40,000 1 KiB puts from 64 writers: 1,805 groups (1,186 of one entry) and 1.3-1.4 s
 * of the event loop idle against 1,256 groups of ~32 and 0.69-0.74 s idle; cohorts of 8 or 32,
 * or either change alone, idled more. A put alone starts its group one turn later (a setImmediate
 * on an idle loop: p50 2.5 us, p99 34 us, 2,000 measured) and is released at once.
 */
const RELEASE_COHORT = 16;
/**
 * A group holding nothing but chunks (a streamed put's, ahead of its record) is not synced at
 * once: nobody waits for a chunk to be durable (its put waits for its record, which commits no
 * earlier than it), so the commit loop lets more gather, up to this many bytes ...
 */
const GATHER_BYTES = 8 * 1024 * 1024;
/** ... or until nothing new was queued for this long, or a record, a copy or a flush arrives. */
const GATHER_IDLE_MS = 20;

/** What an entry queued with `enqueue` brings besides its bytes and row. */
export type EntryExtra = Pick<PendingEntry, 'objectSize' | 'inlineSize' | 'ops' | 'prepare' | 'relocate' | 'marker'>;

export class CommitPipeline {
  readonly #index: IndexStore;
  readonly #blocks: BlockSet;
  readonly #inflight: InFlight;
  readonly #packer: Packer;
  readonly #live: Liveness;
  /** Entries appended and waiting for stage one: pushed by enqueue and #appendPack, taken whole by #commitLoop. */
  #queue: PendingEntry[] = [];
  /** Stage one's run: started by the first entry queued while none runs; it restarts itself while work remains. */
  #committer: Promise<void> | undefined;
  /** Entries whose block bytes are synced, waiting for the next index batch (#indexLoop). */
  #synced: PendingEntry[] = [];
  /** Stage two's run: started by stage one when it hands a group over; restarts itself while groups wait. */
  #indexer: Promise<void> | undefined;
  /** Counts disk-full write failures: a put that sees it change may have lost a chunk to one. */
  #diskFullEpoch = 0;
  /** Counts the entries queued that are not gc's copies: gc rests while it moves (lib/gc-pace.ts). */
  #foreground = 0;
  /** Wakes stage one while it lets chunks gather (#gather): set only then. */
  #wakeGather: (() => void) | undefined;
  /** Set by hurry(): stage one takes its groups at once until it next has nothing to do. */
  #hurried = false;

  constructor(index: IndexStore, blocks: BlockSet, inflight: InFlight, packer: Packer, live: Liveness) {
    this.#index = index;
    this.#blocks = blocks;
    this.#inflight = inflight;
    this.#packer = packer;
    this.#live = live;
  }

  get diskFullEpoch(): number {
    return this.#diskFullEpoch;
  }

  /** A count of the entries queued other than gc's copies (those with `relocate`): puts, records, markers. */
  get foreground(): number {
    return this.#foreground;
  }

  /** Whether a group commit is under way (stage one). */
  get committing(): boolean {
    return this.#committer !== undefined;
  }

  /**
   * Commits what is queued without letting chunks gather first (#gather): for whoever waits on
   * every queued entry (flush, close, stats).
   */
  hurry(): void {
    if (this.#committer === undefined) return;
    this.#hurried = true;
    this.#wakeGather?.();
  }

  /** The stage running now (stage one first), if any: flush waits on it until there is none. */
  running(): Promise<void> | undefined {
    return this.#committer ?? this.#indexer;
  }

  /**
   * Stores one entry unless an identical one is stored or on its way. Returns the pending entry
   * (this put's or the one it deduplicated against) or undefined when it is already committed.
   * Correctness of dedup against an in-flight entry: that entry was queued before this call
   * returns, commits go in queue order, so it commits no later than anything queued after it.
   * A chunk gc is dropping (InFlight.markDying) counts as absent: a fresh copy is written, whose
   * location lands after gc's delete (batches run in order).
   */
  async store(kind: EntryKind, id: Buffer, seal: () => SealedEntry | Promise<SealedEntry>, objectSize: number, inlineSize: number, skip?: () => void, extra?: RecordExtra): Promise<PendingEntry | undefined> {
    const idHex = toHex(id);
    const inflight = this.#inflight.pending(idHex);
    const indexKey = kind === EntryKind.Chunk ? keys.chunk(id) : keys.object(id);
    if (inflight || this.#inflight.isStored(indexKey, idHex)) {
      skip?.();
      return inflight;
    }
    const sealing = seal();
    const sealed = sealing instanceof Promise ? await sealing : sealing;
    // The open block may have filled (and been replaced) while we waited, and another put may have
    // queued (or, while a worker sealed, even committed) the same entry: re-checked after the last await.
    const again = this.#inflight.pending(idHex);
    if (again || (sealing instanceof Promise && this.#inflight.isStored(indexKey, idHex))) {
      sealed.release?.();
      return again;
    }
    const row = { id, kind, flags: sealed.flags, length: sealed.bytes.length, plainLength: sealed.plainLength, hash: sealed.hash };
    return this.enqueue(sealed.bytes, row, { objectSize, inlineSize, ops: extra?.ops, prepare: extra?.prepare, marker: extra?.marker }, sealed.release, extra?.epoch);
  }

  /**
   * Puts a record into the open pack, unless an equal one is stored or on its way (then returns
   * that one's entry, or undefined when it is committed). The entry is pending from now on, so
   * equal records deduplicate against it; its block, row and slot come when the commit loop seals
   * the pack (#appendPack), which also queues it for that group.
   */
  joinPack(hash: Buffer, bytes: Uint8Array, objectSize: number, inlineSize: number, extra: RecordExtra): PendingEntry | undefined {
    const idHex = toHex(hash);
    const inflight = this.#inflight.pending(idHex);
    if (inflight || this.#inflight.isStored(keys.object(hash), idHex)) return inflight;
    this.#live.checkAlive();
    this.#foreground++;
    const entry = this.#packer.add(idHex, bytes, (written) => {
      const committed = deferred();
      // block and row are set by #appendPack, before anything reads them: only the commit
      // pipeline does, and the entry reaches it through the queue, which #appendPack fills.
      return { kind: EntryKind.Object, id: hash, block: undefined!, row: undefined!, written, committed: committed.promise, resolve: committed.resolve, reject: committed.reject, objectSize, inlineSize, ops: extra.ops, prepare: extra.prepare, marker: extra.marker };
    });
    this.#committer ??= this.#commitLoop();
    this.#wakeGather?.();
    return entry;
  }

  /** Seals the packs gathered so far and appends them (run by the commit loop, before it takes a group). */
  async #flushPacks(): Promise<void> {
    for (const pack of this.#packer.take()) {
      try {
        await this.#appendPack(pack);
      } catch (err) {
        this.#packer.reject(pack, err);
      }
    }
  }

  /**
   * Seals one pack and appends it to the open block; its records join the queue, in order, right
   * behind it (queue order stays block order).
   */
  async #appendPack(pack: OpenPack): Promise<void> {
    const sealed = this.#packer.seal(pack);
    let block = this.#blocks.current ?? (await this.#blocks.openBlock());
    if (this.#blocks.current !== block || block.broken) block = this.#blocks.current ?? (await this.#blocks.openBlock());
    this.#live.checkAlive();
    const { written } = block.append(sealed.bytes, { id: sealed.id, kind: sealed.kind, flags: sealed.flags, length: sealed.bytes.length, plainLength: sealed.plainLength, hash: sealed.hash });
    written.then(pack.written.resolve, pack.written.reject);
    const appended = block.rows[block.rows.length - 1]!;
    for (const m of pack.members) {
      m.block = block;
      m.row = appended;
      this.#blocks.appended(block.seq);
      this.#queue.push(m);
    }
    this.#blocks.afterAppend(block);
  }

  /**
   * Appends an entry's bytes to the open block and queues it for the next group commit.
   * `release` (SealedEntry.release) runs once nothing reads `bytes` any more: when its write has
   * finished or failed, or at once when the entry turns out to be queued already.
   */
  async enqueue(bytes: Buffer, row: Omit<EntryRow, 'offset'>, extra: EntryExtra, release?: () => void, epoch?: number): Promise<PendingEntry> {
    let block = this.#blocks.current ?? (await this.#blocks.openBlock());
    const again = this.#inflight.pending(toHex(row.id));
    if (again && !extra.relocate) {
      release?.();
      return again;
    }
    if (this.#blocks.current !== block || block.broken) block = this.#blocks.current ?? (await this.#blocks.openBlock());
    this.#live.checkAlive();
    // A record whose put began before a disk-full failure may name chunks it cut: a failure
    // while this waited for a block (the only await since its put's last check) fails it too.
    if (epoch !== undefined && epoch !== this.#diskFullEpoch) {
      release?.();
      throw new DiskFullError('the disk filled up while this value was written; nothing of it was kept');
    }
    const { written } = block.append(bytes, row);
    if (!extra.relocate) this.#foreground++;
    if (release) written.then(release, release);
    const appended = block.rows[block.rows.length - 1]!;
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const committed = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    committed.catch(() => {});
    const entry: PendingEntry = { kind: row.kind, id: row.id, block, row: appended, written, committed, resolve, reject, ...extra };
    this.#inflight.setPending(toHex(row.id), entry);
    this.#blocks.appended(block.seq);
    this.#queue.push(entry);
    this.#blocks.afterAppend(block);
    this.#committer ??= this.#commitLoop();
    this.#wakeGather?.();
    if (block.backlog > WRITE_BACKLOG_LIMIT) await block.drain();
    return entry;
  }

  /**
   * Group commit, in two stages so that neither the block files' fsyncs nor LevelDB's wait on
   * the other.
   *
   * Stage one (#commitLoop) takes everything queued so far, waits for its bytes to reach the OS
   * and fdatasyncs each block file involved, then hands the group to stage two and takes the next.
   * Stage two (#indexLoop) writes the WAL records and locations of every group handed over since
   * its last batch in one synced LevelDB batch: while one batch is being synced, the groups
   * synced meanwhile gather into the next. So N concurrent puts cost a block fdatasync per group
   * and a LevelDB sync per batch instead of two fsyncs each, and the batches grow with the load.
   *
   * Safe because a group reaches stage two only after its own blocks are synced, and stage two
   * takes groups in queue order and runs its batches strictly in order (IndexStore.write), so an
   * entry never becomes durable before the entries queued ahead of it (which its dedup hits may
   * point into).
   */
  async #commitLoop(): Promise<void> {
    try {
      // One turn after the work that started it: see RELEASE_COHORT.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.#commitWork() && !this.#index.failed) {
        // Records gathered while the last group committed are sealed into a pack now: they
        // form the front of this group's work with whatever else was queued.
        if (this.#packer.waiting) await this.#flushPacks();
        if (this.#queue.length === 0) continue;
        if (this.#mayGather()) {
          failpoint('commit.gathering');
          if (await this.#gather()) continue;
        }
        let group = this.#queue;
        this.#queue = [];
        try {
          const writes = await Promise.allSettled(group.map((e) => e.written));
          const bad = writes.findIndex((w) => w.status === 'rejected');
          if (bad >= 0) {
            const reason = (writes[bad] as PromiseRejectedResult).reason;
            if (!isDiskFull(reason)) throw reason;
            // Out of space: what was queued before the failed entry commits; it and everything
            // queued after it (which may share its chunks) fail, and the handle goes on. That
            // includes the records waiting in packs: they joined after this group was taken, and
            // a put's record may name chunks cut here (its put checked the disk-full epoch before
            // joining, not after). They go first, newest first, as #rejectFrom unwinds.
            const failure = ioError('write', reason);
            const waiting = this.#packer.take();
            for (const pack of waiting.reverse()) this.#packer.reject(pack, failure);
            const rejected = [...group.slice(bad), ...this.#queue];
            this.#queue = [];
            group = group.slice(0, bad);
            this.#rejectFrom(rejected, reason);
            if (group.length === 0) continue;
          }
          failpoint('commit.after-write');
          const blocks = new Set(group.map((e) => e.block));
          await Promise.all([...blocks].map((b) => b.sync()));
          failpoint('commit.after-datasync');
        } catch (err) {
          this.#index.fail(err);
          for (const e of group) e.reject(this.#index.failed);
          break;
        }
        for (const e of group) this.#synced.push(e);
        this.#indexer ??= this.#indexLoop();
      }
    } finally {
      this.#committer = undefined;
      this.#hurried = false;
      if (this.#index.failed) {
        for (const e of this.#queue) e.reject(this.#index.failed);
        this.#queue = [];
        for (const pack of this.#packer.take()) this.#packer.reject(pack, this.#index.failed);
      } else if (this.#commitWork()) {
        this.#committer = this.#commitLoop();
      }
    }
  }

  /**
   * Whether the queue may wait for more before it is synced: it holds chunks only (no record, no
   * gc copy: those have waiters), fewer than GATHER_BYTES of them, and nobody hurried.
   */
  #mayGather(): boolean {
    if (this.#hurried || this.#packer.waiting) return false;
    let bytes = 0;
    for (const e of this.#queue) {
      if (e.kind !== EntryKind.Chunk || e.relocate) return false;
      bytes += e.row.length;
    }
    return bytes < GATHER_BYTES;
  }

  /**
   * Waits until something is queued or hurry() is called (true), or GATHER_IDLE_MS pass with
   * neither (false: then the group is taken as it is).
   */
  #gather(): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.#wakeGather = undefined;
        resolve(false);
      }, GATHER_IDLE_MS);
      this.#wakeGather = () => {
        this.#wakeGather = undefined;
        clearTimeout(timer);
        resolve(true);
      };
    });
  }

  /** Whether the commit loop has anything to do: queued entries or records waiting in a pack. */
  #commitWork(): boolean {
    return this.#queue.length > 0 || this.#packer.waiting;
  }

  /** Stage two of group commit (see #commitLoop): one synced index batch for all synced groups. */
  async #indexLoop(): Promise<void> {
    try {
      while (this.#synced.length > 0 && !this.#index.failed) {
        const entries = this.#synced;
        this.#synced = [];
        try {
          const [ops, delta, prepares] = this.#walOps(entries);
          await this.#index.write(ops, delta, prepares);
          failpoint('commit.after-wal');
        } catch (err) {
          this.#index.fail(err);
          for (const e of entries) e.reject(this.#index.failed);
          break;
        }
        this.#committed(entries);
      }
    } finally {
      this.#indexer = undefined;
      if (this.#index.failed) {
        for (const e of this.#synced) e.reject(this.#index.failed);
        this.#synced = [];
      } else if (this.#synced.length > 0) {
        this.#indexer = this.#indexLoop();
      }
    }
  }

  /**
   * The index batch that commits a group: a WAL value per block run, a location per entry, stats.
   * The records of one pack are consecutive entries sharing one row: the row goes into the WAL,
   * and counts in the stats, once.
   */
  #walOps(group: PendingEntry[]): [BatchOp[], Partial<PersistedStats>, Prepare[]] {
    const ops: BatchOp[] = [];
    const prepares: Prepare[] = [];
    const delta: Partial<PersistedStats> = {};
    // A group's entries in one block are contiguous (append and queue happen together, in order):
    // each run of them gets one WAL value.
    for (let start = 0; start < group.length; ) {
      let end = start + 1;
      while (end < group.length && group[end]!.block === group[start]!.block) end++;
      const rows: EntryRow[] = [];
      for (let i = start; i < end; i++) if (rows[rows.length - 1] !== group[i]!.row) rows.push(group[i]!.row);
      ops.push({ type: 'put', key: keys.wal(group[start]!.block.seq, rows[0]!.offset), value: encodeWalRecords(rows) });
      addStat(delta, 'walRecords', rows.length);
      start = end;
    }
    let lastRow: EntryRow | undefined;
    for (const e of group) {
      const loc = encodeLocation({ kind: e.slot ? EntryKind.Pack : e.kind, flags: e.row.flags, length: e.row.length, plainLength: e.row.plainLength, offset: e.row.offset, seq: e.block.seq, slot: e.slot });
      if (e.row !== lastRow) {
        addStat(delta, 'walEntryBytes', e.row.length);
        addStat(delta, 'storedBytes', e.row.length);
        lastRow = e.row;
      }
      if (e.ops) ops.push(...e.ops);
      if (e.prepare) prepares.push(e.prepare);
      if (e.relocate) {
        const relocate = e.relocate;
        prepares.push((more, d) => relocate(e, loc, more, d));
        continue;
      }
      ops.push({ type: 'put', key: e.kind === EntryKind.Chunk ? keys.chunk(e.id) : keys.object(e.id), value: loc });
      if (e.kind === EntryKind.Chunk) {
        addStat(delta, 'chunks', 1);
        addStat(delta, 'uniqueBytes', e.row.plainLength);
        addStat(delta, 'chunkStoredBytes', e.row.length);
      } else {
        if (!e.marker) addStat(delta, 'objects', 1);
        addStat(delta, 'logicalBytes', e.objectSize);
        // An inline value is stored once per object, so it counts fully as unique bytes. It counts
        // one to one in the compression ratio too: when zstd shrinks its record, the ratio does not
        // credit it (storedBytes, the real size on disk, does).
        addStat(delta, 'uniqueBytes', e.inlineSize);
        addStat(delta, 'chunkStoredBytes', e.inlineSize);
      }
    }
    ops.push({ type: 'put', key: keys.meta('nextSeq'), value: encodeCount(this.#blocks.nextSeq, 8) });
    return [ops, delta, prepares];
  }

  #committed(group: PendingEntry[]): void {
    for (const e of group) {
      this.#inflight.committed(toHex(e.id));
      this.#blocks.committed(e.block.seq);
    }
    // The puts are released in cohorts, one per event-loop turn (see RELEASE_COHORT).
    const release = (from: number): void => {
      const end = Math.min(group.length, from + RELEASE_COHORT);
      for (let i = from; i < end; i++) group[i]!.resolve();
      if (end < group.length) setImmediate(() => release(end));
    };
    release(0);
  }

  /**
   * A write failed for lack of space: fails `entries` (the failed one and everything queued
   * after it, in queue order) with a DiskFullError. Each block they were in ends before the
   * first of them (OpenBlock.cut) and takes no more entries: its committed entries are sealed
   * as usual and new writes go to a new block. Nothing is fatal; what committed before stays.
   */
  #rejectFrom(entries: PendingEntry[], reason: unknown): void {
    const failure = ioError('write', reason);
    this.#diskFullEpoch++;
    const cuts = new Map<OpenBlock, number>();
    for (const e of entries) if (!cuts.has(e.block)) cuts.set(e.block, e.row.offset);
    for (const [block, offset] of cuts) this.#blocks.cut(block, offset, failure);
    // Newest first, so that each key's heads overlay unwinds version by version (lib/heads.ts, Heads.overlay).
    for (const e of [...entries].reverse()) {
      this.#inflight.rejected(toHex(e.id), e);
      this.#blocks.dropped(e.block.seq);
      e.reject(failure);
    }
    for (const block of cuts.keys()) this.#blocks.sealIfSettled(block.seq);
  }
}
