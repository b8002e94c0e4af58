/**
 * Read-modify-write of counter values (reference counts 'r', dead bytes 'x') within one index
 * batch. Reads go to LevelDB once per key (getSync: the batch chain guarantees every earlier batch
 * has landed), later changes in the same batch see the earlier ones, and emit() writes the final
 * values into the batch being built.
 *
 * A put of a very large value changes one reference count per chunk in one batch (32,768 for
 * 8 GiB of 256 KiB chunks), in one synchronous stretch whose garbage V8's young generation holds
 * until it next collects: each change looks its cell up once (`touch`), and the final values go
 * into the batch with no operation object each (docs/performance.md, "Cost per byte, seventh
 * round").
 */
import type { OpSink } from './batch.js';
import type { ClassicLevel } from './leveldb.js';
import { decodeCount, encodeCount } from './values.js';

export interface Cell {
  key: Buffer;
  value: number;
  /** Whether the key exists: a reference count of 0 that exists means "was referenced, now dead". */
  present: boolean;
  width: 4 | 8;
  dirty: boolean;
}

export class Counters {
  readonly #ldb: ClassicLevel<Buffer, Buffer>;
  readonly #cells = new Map<string, Cell>();

  constructor(ldb: ClassicLevel<Buffer, Buffer>) {
    this.#ldb = ldb;
  }

  #cell(key: Buffer, width: 4 | 8): Cell {
    const id = key.toString('latin1');
    let c = this.#cells.get(id);
    if (!c) {
      const stored = this.#ldb.getSync(key);
      c = { key, value: decodeCount(stored), present: stored !== undefined, width, dirty: false };
      this.#cells.set(id, c);
    }
    return c;
  }

  get(key: Buffer, width: 4 | 8): { value: number; present: boolean } {
    const c = this.#cell(key, width);
    return { value: c.value, present: c.present };
  }

  set(key: Buffer, width: 4 | 8, value: number, present = true): void {
    Counters.assign(this.#cell(key, width), value, present);
  }

  /** The cell of `key`, read from LevelDB the first time: for a read-modify-write with one lookup (`assign`). */
  touch(key: Buffer, width: 4 | 8): Readonly<Cell> {
    return this.#cell(key, width);
  }

  /** Sets a cell `touch` gave. */
  static assign(cell: Readonly<Cell>, value: number, present = true): void {
    if (value < 0 || !Number.isSafeInteger(value)) throw new RangeError(`counter ${cell.key.toString('hex')} would become ${value}`);
    const c = cell as Cell;
    c.value = value;
    c.present = present;
    c.dirty = true;
  }

  /**
   * Adds to a dead-bytes counter, which exists only while positive. Dead bytes steer gc's choice
   * of blocks and never decide what is deleted, so a counter that would go below zero (an entry
   * whose death was never counted, such as a chunk orphaned by a crash) stops at zero.
   */
  addDead(key: Buffer, delta: number): void {
    const c = this.#cell(key, 8);
    const value = Math.max(0, c.value + delta);
    this.set(key, 8, value, value > 0);
  }

  /** Writes every changed counter into `sink` (the batch being built), in the order first touched. */
  emit(sink: OpSink): void {
    // forEach, not for-of: this loop runs once per batch, too rarely for V8 to optimise away
    // the iterator's result object for each of its cells.
    this.#cells.forEach((c) => {
      if (!c.dirty) return;
      if (c.present) sink.put(c.key, encodeCount(c.value, c.width));
      else sink.del(c.key);
    });
  }
}
