/**
 * Read-modify-write of counter values (reference counts 'r', dead bytes 'x') within one index
 * batch. Reads go to LevelDB once per key (getSync: the batch chain guarantees every earlier batch
 * has landed), later changes in the same batch see the earlier ones, and emit() turns the final
 * values into batch operations.
 */
import type { ClassicLevel } from './leveldb.js';
import { decodeCount, encodeCount } from './values.js';

interface Cell {
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
    if (value < 0 || !Number.isSafeInteger(value)) throw new RangeError(`counter ${key.toString('hex')} would become ${value}`);
    const c = this.#cell(key, width);
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

  emit(ops: Array<{ type: 'put' | 'del'; key: Buffer; value?: Buffer }>): void {
    for (const c of this.#cells.values()) {
      if (!c.dirty) continue;
      ops.push(c.present ? { type: 'put', key: c.key, value: encodeCount(c.value, c.width) } : { type: 'del', key: c.key });
    }
  }
}
