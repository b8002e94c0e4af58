/**
 * Snapshots: readers holding a LevelDB snapshot, and the block files gc retired while some of
 * them may still read those files.
 *
 * Owns, and is the only code that changes: the open readers (`open`/`close`), the gc epoch
 * (advanced by `retire`), and the retired files waiting for older readers (removed by
 * `removeDeferred`, or by `removeRetired` when recovery finds a 'z' mark).
 */
import path from 'node:path';
import type { BlockStore } from '../blockstore/store.js';
import { keys } from '../index/keys.js';
import type { IndexStore, Snapshot } from '../index/store.js';
import type { BlockSet } from '../wal/blocks.js';
import { ioError } from './errors.js';
import { failpoint } from './failpoints.js';
import { fsyncDir } from './fsutil.js';

export interface SnapshotReader {
  snapshot: Snapshot;
  epoch: number;
  open: boolean;
}

export class Snapshots {
  readonly #index: IndexStore;
  readonly #store: BlockStore;
  readonly #blocks: BlockSet;
  /** Readers holding a LevelDB snapshot, with the gc epoch they started in. */
  readonly #readers = new Set<SnapshotReader>();
  #epoch = 0;
  /** Blocks gc unregistered whose files wait for older readers to finish (removeDeferred). */
  readonly #retiredFiles = new Set<{ id: Buffer; seq: number; epoch: number }>();

  constructor(index: IndexStore, store: BlockStore, blocks: BlockSet) {
    this.#index = index;
    this.#store = store;
    this.#blocks = blocks;
  }

  open(): SnapshotReader {
    const reader = { snapshot: this.#index.ldb.snapshot(), epoch: this.#epoch, open: true };
    this.#readers.add(reader);
    return reader;
  }

  async close(reader: SnapshotReader): Promise<void> {
    reader.open = false;
    this.#readers.delete(reader);
    await reader.snapshot.close();
    await this.removeDeferred();
  }

  /** The readers open now (close() closes them). */
  readers(): SnapshotReader[] {
    return [...this.#readers];
  }

  /** gc unregistered block `id` (seq `seq`): its file goes once no older reader can name it. */
  retire(id: Buffer, seq: number): Promise<void> {
    this.#retiredFiles.add({ id, seq, epoch: ++this.#epoch });
    return this.removeDeferred();
  }

  /**
   * Removes retired block files no open reader can still name. A reader that started before a
   * block was retired may read it through its snapshot, so the file waits for that reader; gc
   * itself never waits (a paused iteration would stall it), and the 'z' mark makes the next open
   * remove the file if this process ends first.
   */
  async removeDeferred(force = false): Promise<void> {
    for (const r of [...this.#retiredFiles]) {
      if (!force && [...this.#readers].some((reader) => reader.epoch < r.epoch)) continue;
      this.#retiredFiles.delete(r);
      await this.removeRetired(r.id, r.seq);
    }
  }

  /** Deletes a retired block's file (if still there), makes that durable, then drops the mark. */
  async removeRetired(id: Buffer, seq: number): Promise<void> {
    const file = this.#store.blockPath(id);
    this.#blocks.forget(id, seq);
    await this.#store.vfs.remove(file).catch((err: unknown) => {
      throw ioError(`remove ${file}`, err);
    });
    await fsyncDir(this.#store.vfs, path.dirname(file));
    failpoint('gc.after-remove');
    await this.#index.write([{ type: 'del', key: keys.retired(id) }], {});
  }
}
