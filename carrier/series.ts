/**
 * The figures behind the status page's charts (`GET /series`): sampled every `series.sampleMs`
 * and kept for `series.keepMs` in memory (a ring; nothing is written). Each sample holds running
 * totals; the page turns neighbouring samples into rates, so a missed sample loses nothing.
 *
 * Owns, and alone changes, the ring of samples (#sample adds and ages them; one sample at a time,
 * #sampling) and its timer (start, stop). It reads the SeriesSources it is given (carrier/node.ts
 * wires them to the metrics' totals, the replicator and the shelf) and imports none of them.
 */
import fs from 'node:fs/promises';

export interface Sample {
  /** ms since the epoch */
  t: number;
  /** The database's logical bytes (0 without one). It rises by what is written here and by what is adopted from other members. */
  logicalBytes: number;
  /** Logical bytes adopted from other members since start: the ingest rate is the rise of logicalBytes less the rise of this. */
  adoptedLogicalBytes: number;
  /** Running totals since the node started. */
  replicatedInBytes: number;
  replicatedOutBytes: number;
  proofsPassed: number;
  proofsFailed: number;
  proofsLate: number;
  /** State at the sample. */
  underReplicated: number;
  unsettled: number;
  repairPushed: number;
  heldBytes: number;
  diskFreeBytes: number;
  diskTotalBytes: number;
}

export interface DiskUse {
  /** The file system holding the node's directory. */
  totalBytes: number;
  freeBytes: number;
  /** Block bytes this node holds (its own and the cluster's). */
  heldBytes: number;
}

/** What the samples read (carrier/node.ts gives them). */
export interface SeriesSources {
  /** The node's directory: the file system measured is the one holding it. */
  readonly dir: string;
  /** Running totals since the node started (NodeMetrics.totals). */
  totals(): { replicatedIn: number; replicatedOut: number; proofs: { pass: number; fail: number; late: number } };
  /** Replication repair progress now. */
  repair(): { underReplicated: number; unsettled: number; pushed: number };
  /** The blocks this node holds now. */
  held(): Promise<ReadonlyArray<{ size: number }>>;
  /** The database's logical bytes, and the part of their rise since start adopted from other members, read together (zeros without a database). */
  logicalBytes(): Promise<{ logicalBytes: number; adoptedLogicalBytes: number }>;
}

export class Series {
  readonly #sources: SeriesSources;
  readonly #config: { sampleMs: number; keepMs: number };
  readonly #samples: Sample[] = [];
  #timer: NodeJS.Timeout | undefined;
  #sampling = false;

  constructor(sources: SeriesSources, config: { sampleMs: number; keepMs: number }) {
    this.#sources = sources;
    this.#config = config;
  }

  start(): void {
    this.#timer = setInterval(() => void this.#sample(), this.#config.sampleMs);
    this.#timer.unref();
    void this.#sample();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  samples(sinceMs = 0): Sample[] {
    return this.#samples.filter((s) => s.t > sinceMs);
  }

  async disk(): Promise<DiskUse> {
    const st = await fs.statfs(this.#sources.dir);
    const held = await this.#sources.held();
    return { totalBytes: st.blocks * st.bsize, freeBytes: st.bavail * st.bsize, heldBytes: held.reduce((n, b) => n + b.size, 0) };
  }

  async #sample(): Promise<void> {
    if (this.#sampling) return;
    this.#sampling = true;
    try {
      const sources = this.#sources;
      const m = sources.totals();
      const p = sources.repair();
      const d = await this.disk();
      const l = await sources.logicalBytes();
      this.#samples.push({
        t: Date.now(),
        logicalBytes: l.logicalBytes,
        adoptedLogicalBytes: l.adoptedLogicalBytes,
        replicatedInBytes: m.replicatedIn,
        replicatedOutBytes: m.replicatedOut,
        proofsPassed: m.proofs.pass,
        proofsFailed: m.proofs.fail,
        proofsLate: m.proofs.late,
        underReplicated: p.underReplicated,
        unsettled: p.unsettled,
        repairPushed: p.pushed,
        heldBytes: d.heldBytes,
        diskFreeBytes: d.freeBytes,
        diskTotalBytes: d.totalBytes,
      });
      const oldest = Date.now() - this.#config.keepMs;
      while (this.#samples.length > 0 && this.#samples[0]!.t < oldest) this.#samples.shift();
    } catch {
      // A sample missed (the node stopping, a file system hiccup): the next one covers it.
    } finally {
      this.#sampling = false;
    }
  }
}
