/**
 * GcPacer: how gc's copying gives way to puts (docs/design.md, "gc gives way to writers").
 *
 * gc copies a block's live entries through the same group commit as the puts, so the bytes it
 * copies are written and fdatasynced in the writers' groups, and the disk serves them before
 * the writers' next index batch. Copied in one burst (a whole block's live bytes at once), they
 * took the writers' groups from ~0.8-2 ms to ~7.5 ms of fdatasync and their index batches from
 * ~0.9-1.9 to ~4.6-5.8 ms, and a 16-writer put loop fell to 0.2-0.5x of its rate for as long as
 * gc ran; neither the CPU (~0.4 of a core) nor the event loop was the limit (docs/performance.md,
 * "Cost per byte, third round").
 *
 * So gc copies in slices of at most GC_SLICE_BYTES, each committed before the next is read,
 * and, when puts were committed while a slice was on its way (writers are active), it rests
 * after the slice for long enough that copying takes at most `share` of the time:
 * rest = took * (1 - share) / share. With no writers it does not rest: an idle database is
 * compacted at full speed. The rest is capped (MAX_REST_MS), and skipped once the database is
 * closing, so that close() never waits long for a resting gc.
 */

/** The bytes of live entries gc copies before it checks whether to rest (at least one entry). */
export const GC_SLICE_BYTES = 1024 * 1024;
/**
 * The share of time gc's copying may take while puts are being written (GcOptions.pace): a
 * third kept the 16-writer loop at a median ~1.0x in A/B runs (0.5 at ~0.7x, with runs down to
 * 0.36), for a gc ~3-4x slower while writers are busy.
 */
export const DEFAULT_GC_PACE = 1 / 3;
/** The longest rest after one slice. */
const MAX_REST_MS = 250;

export class GcPacer {
  readonly #share: number;
  /** A count that changes whenever a put's entry is queued (CommitPipeline.foreground). */
  readonly #writes: () => number;
  /** Whether to skip the rests from now on: the database is closing (close() waits for gc). */
  readonly #hurry: () => boolean;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #now: () => number;
  /** Total time rested, for the report (GcReport.restedMs). */
  restedMs = 0;

  constructor(share: number, writes: () => number, hurry: () => boolean, sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)), now: () => number = () => performance.now()) {
    this.#share = share;
    this.#writes = writes;
    this.#hurry = hurry;
    this.#sleep = sleep;
    this.#now = now;
  }

  /** Runs one slice of gc's copying, then rests if puts were written meanwhile (see above). */
  async slice<T>(work: () => Promise<T>): Promise<T> {
    const seen = this.#writes();
    const started = this.#now();
    const result = await work();
    if (this.#share < 1 && this.#writes() !== seen && !this.#hurry()) {
      const took = this.#now() - started;
      const rest = Math.min(MAX_REST_MS, (took * (1 - this.#share)) / this.#share);
      this.restedMs += rest;
      await this.#sleep(rest);
    }
    return result;
  }
}
