/**
 * Lifecycle: the handle's state of life and the work it must wait for.
 *
 * Owns, and is the only code that changes:
 *   - closed / closing: `closing` is set once, by close(), to its one run; `closed` is set once
 *     the handle stops (end of close, abandon after a failed open, or a lost file system);
 *   - the exclusive gate: set while rebuildIndex runs (`beginExclusive`/`endExclusive`, only
 *     lib/db.ts's rebuildIndex); writes wait for it to open, reads wait for the index to settle;
 *   - the operations in flight (`track`/`untrack`/`tracked`): puts, deletes, purges, adoptions,
 *     gc runs. flush() and close() wait for them; the write path reads their count to choose
 *     between sealing here and on the pool.
 * The failure latch is the index's (IndexStore.failed); this reads it.
 */
import type { IndexStore } from '../index/store.js';
import type { Liveness } from '../wal/blocks.js';
import { ClosedError } from './errors.js';

export class Lifecycle implements Liveness {
  readonly #index: IndexStore;
  /** Set once, by markClosed (end of close, abandon, a lost file system); never cleared. */
  #closed = false;
  /** Set once, by closeOnce (close()), to its one run. */
  #closing: Promise<void> | undefined;
  /** Set while rebuildIndex runs (beginExclusive/endExclusive, rebuildIndex only): writes wait for it. */
  #exclusive: Promise<void> | undefined;
  /** Operations in flight: added and removed by their own starters (track/untrack, tracked). */
  readonly #inflight = new Set<Promise<unknown>>();

  constructor(index: IndexStore) {
    this.#index = index;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The handle stops: nothing more is read or written through it. */
  markClosed(): void {
    this.#closed = true;
  }

  get closing(): Promise<void> | undefined {
    return this.#closing;
  }

  /** close()'s one run: started by the first call, returned to every call. */
  closeOnce(run: () => Promise<void>): Promise<void> {
    this.#closing ??= run();
    return this.#closing;
  }

  get exclusive(): Promise<void> | undefined {
    return this.#exclusive;
  }

  beginExclusive(gate: Promise<void>): void {
    this.#exclusive = gate;
  }

  endExclusive(): void {
    this.#exclusive = undefined;
  }

  /** How many operations are in flight. */
  get inFlightCount(): number {
    return this.#inflight.size;
  }

  /** The operations in flight. */
  inFlight(): Promise<unknown>[] {
    return [...this.#inflight];
  }

  track(op: Promise<unknown>): void {
    this.#inflight.add(op);
  }

  untrack(op: Promise<unknown>): void {
    this.#inflight.delete(op);
  }

  /** Counts `op` among the operations in flight while it runs. */
  async tracked<T>(op: Promise<T>): Promise<T> {
    this.#inflight.add(op);
    try {
      return await op;
    } finally {
      this.#inflight.delete(op);
    }
  }

  /** Reads wait while rebuildIndex runs: the index is incomplete until it ends. */
  async settledIndex(): Promise<void> {
    while (this.#exclusive) await this.#exclusive;
  }

  checkOpen(): void {
    if (this.#closed || this.#closing) throw new ClosedError();
  }

  /**
   * For work already under way (a put that started before close() was called): close() waits for
   * it, so only a closed or failed handle stops it. New operations check checkWritable.
   */
  checkAlive(): void {
    if (this.#closed) throw new ClosedError();
    if (this.#index.failed) throw this.#index.failed;
  }

  checkWritable(): void {
    this.checkOpen();
    if (this.#index.failed) throw this.#index.failed;
  }
}
