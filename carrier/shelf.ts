/**
 * Where a node keeps the sealed blocks it holds for the cluster. Two kinds, one interface:
 * - a node with the database keeps them among the database's own blocks (`DbShelf`): a block
 *   received is adopted (checked against the key and indexed), so it serves reads;
 * - a node without the key keeps them in `<dir>/replicas/` (`DirShelf`), the same file layout
 *   as a database's `blocks/`, checked only against their ids: it never sees plaintext.
 * Either way a block is written to `incoming/`, fsynced, checked, and renamed into place with
 * the directory fsynced before it is acknowledged, so an acknowledged block survives a crash.
 *
 * A block deleted across the cluster is tombstoned on every shelf (released, then dropped: see
 * carrier/replication.ts): from its tombstone on it is never listed, kept or pushed again, and
 * its file is deleted once every member has released it.
 *
 * A shelf owns the block files it holds (DbShelf through the database, which owns its blocks).
 * The replicator's parts change them, each its own way: Transfers keeps what it receives or
 * fetches (staging, keep), Repair removes surplus copies and quarantines corrupt ones (remove,
 * quarantine), Deletion releases and drops deleted blocks (release, drop); the prover only reads.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { SeenEntries } from '../blockstore/entry-hashes.js';
import { type BlockIndex, readBlockIndex, verifyBlockFile } from '../blockstore/store.js';
import { fromHex, toHex } from '../lib/bytes.js';
import type { OuroDB, ReleaseReport } from '../lib/db.js';
import { BadArgumentError, CorruptionError, OuroError, ioError, syncFailure } from '../lib/errors.js';
import { ensureDir, fsyncDir } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';

export interface HeldBlock {
  id: string;
  size: number;
}

export interface Shelf {
  /** The file of block `id` (present or not). */
  path(id: string): string;
  /** Whether this node keeps block `id`'s file now. */
  has(id: string): Promise<boolean>;
  /**
   * Every block whose file this node keeps, in id order; with `after`, only those whose id sorts
   * after it (a page of block-list), found without touching the files before it.
   */
  list(after?: string): AsyncIterable<HeldBlock>;
  /** A fresh staging file for a block being received (same file system as the shelf). */
  staging(id: string): Promise<string>;
  /**
   * Takes a fully written, fsynced staging file: checks it is block `id` and keeps it durably.
   * Throws CorruptionError (and removes the file) when it is not. False if it was held already.
   * `seen`: its entry hashes, taken as it was written (spares reading it back when they match).
   */
  keep(staging: string, id: string, seen?: SeenEntries): Promise<boolean>;
  /** Whether block `id` may be dropped here once the cluster holds enough copies elsewhere. */
  removable(id: string): Promise<boolean>;
  /** Deletes this node's copy of block `id` (durably). */
  remove(id: string): Promise<void>;
  /** Moves a copy that failed verification to `quarantine/` beside the blocks (no longer held). */
  quarantine(id: string): Promise<void>;
  /** Whether block `id` was deleted across the cluster (tombstoned here). */
  tombstoned(id: string): Promise<boolean>;
  /**
   * Tombstones block `id` here; `released` once nothing here names it any more (a keyed shelf
   * first releases it from the database's index, which may copy entries: OuroDB.releaseBlock).
   */
  release(id: string): Promise<ReleaseReport>;
  /** Deletes this node's copy of a tombstoned, released block; false if it is not released here. */
  drop(id: string): Promise<boolean>;
  /**
   * The file where a keyless node keeps its copy of the cluster's database descriptor
   * (`replicas/OURODB.json`); undefined on a keyed node, whose database holds the original.
   */
  descriptorCopy(): string | undefined;
  /** The erasure-coded shards this node holds, beside the whole blocks (see ShardFiles). */
  readonly shards: ShardFiles;
}

/**
 * Shards of erasure-coded blocks a node holds (docs/node.md, "Redundancy"), beside its whole
 * blocks: `<root>/shards/<2 hex>/<block id>.<index>.shd`, and the block's manifest, as received,
 * in `<block id>.manifest` next to them. A shard is kept only once it matches the manifest
 * (Shards.onPut verifies it before keep), and it is written like a block: to a staging file,
 * fsynced, renamed into place, the directory fsynced, so a shard acknowledged survives a crash.
 * The manifest is written before the shard, so a shard on disk always has its manifest.
 */
export class ShardFiles {
  readonly #root: string;

  constructor(root: string) {
    this.#root = path.join(root, 'shards');
  }

  #dir(blockId: string): string {
    return path.join(this.#root, blockId.slice(0, 2));
  }

  /** The file of shard `index` of block `blockId` (present or not). */
  path(blockId: string, index: number): string {
    return path.join(this.#dir(blockId), `${blockId}.${index}.shd`);
  }

  manifestPath(blockId: string): string {
    return path.join(this.#dir(blockId), `${blockId}.manifest`);
  }

  /** The manifest bytes kept for block `blockId`, or undefined. */
  manifest(blockId: string): Promise<Uint8Array | undefined> {
    return readOrUndefined(this.manifestPath(blockId));
  }

  /** Shard `index` of block `blockId`, or undefined when not held here (unchecked: the reader verifies). */
  read(blockId: string, index: number): Promise<Uint8Array | undefined> {
    return readOrUndefined(this.path(blockId, index));
  }

  /** Indexes of the shards of block `blockId` held here. */
  async held(blockId: string): Promise<number[]> {
    const names = await nodeVfs.readdir(this.#dir(blockId)).catch(() => [] as string[]);
    return names.flatMap((n) => (n.startsWith(`${blockId}.`) && n.endsWith('.shd') ? [Number(n.slice(65, -4))] : [])).sort((a, b) => a - b);
  }

  /** Ids of the blocks some shard of which is held here (those with a manifest), in id order. */
  async blocks(): Promise<string[]> {
    const out: string[] = [];
    for (const prefix of (await nodeVfs.readdir(this.#root).catch(() => [] as string[])).sort()) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      for (const name of (await nodeVfs.readdir(path.join(this.#root, prefix)).catch(() => [] as string[])).sort()) {
        const m = /^([0-9a-f]{64})\.manifest$/.exec(name);
        if (m) out.push(m[1]!);
      }
    }
    return out;
  }

  /** Moves shard `index` of block `blockId`, which failed verification, to `shards/quarantine/` (no longer held). */
  quarantine(blockId: string, index: number): Promise<void> {
    return quarantineFile(this.path(blockId, index), path.join(this.#root, 'quarantine'));
  }

  /** Deletes shard `index` of block `blockId` held here (a duplicate: another member holds the same one); the manifest stays. */
  async remove(blockId: string, index: number): Promise<void> {
    if (await exists(this.path(blockId, index))) await removeDurably(this.path(blockId, index));
  }

  /**
   * Deletes every shard of block `blockId` held here, then its manifest (deletion across the
   * cluster: the block is released everywhere). The number of shards removed.
   */
  async removeAll(blockId: string): Promise<number> {
    const held = await this.held(blockId);
    for (const index of held) await removeDurably(this.path(blockId, index));
    if (await exists(this.manifestPath(blockId))) await removeDurably(this.manifestPath(blockId));
    return held.length;
  }

  /**
   * Keeps shard `index` of block `blockId` (already verified against `manifest`) durably, with
   * the manifest if it has none yet. False when the shard was held already.
   */
  async keep(blockId: string, index: number, manifest: Uint8Array, shard: Uint8Array): Promise<boolean> {
    const dest = this.path(blockId, index);
    if (await exists(dest)) return false;
    const dir = this.#dir(blockId);
    await ensureDir(nodeVfs, dir);
    if (!(await exists(this.manifestPath(blockId)))) await writeDurably(path.join(this.#root, 'incoming'), this.manifestPath(blockId), manifest);
    await writeDurably(path.join(this.#root, 'incoming'), dest, shard);
    return true;
  }
}

async function readOrUndefined(file: string): Promise<Uint8Array | undefined> {
  return fs.promises.readFile(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw ioError(`read ${file}`, err);
  });
}

/** Writes `bytes` to a staging file in `incoming`, fsyncs it, renames it to `dest` and fsyncs its directory. */
async function writeDurably(incoming: string, dest: string, bytes: Uint8Array): Promise<void> {
  const staging = await stagingIn(incoming, path.basename(dest));
  try {
    const handle = await fs.promises.open(staging, 'wx', 0o600);
    try {
      await handle.writeFile(bytes);
      await handle.sync().catch((err: unknown) => {
        throw syncFailure(`fsync ${staging}`, err);
      });
    } finally {
      await handle.close();
    }
    await nodeVfs.rename(staging, dest);
  } catch (err) {
    await nodeVfs.remove(staging).catch(() => {});
    throw err instanceof OuroError ? err : ioError(`write ${dest}`, err);
  }
  await fsyncDir(nodeVfs, path.dirname(dest)).catch((err: unknown) => {
    throw syncFailure(`fsync ${path.dirname(dest)}`, err);
  });
}

async function quarantineFile(file: string, dir: string): Promise<void> {
  await ensureDir(nodeVfs, dir);
  const dest = path.join(dir, `${path.basename(file)}.${Date.now()}`);
  await nodeVfs.rename(file, dest).catch((err: unknown) => {
    if ((err as { code?: string }).code !== 'ENOENT') throw ioError(`rename ${file} -> ${dest}`, err);
  });
  await fsyncDir(nodeVfs, path.dirname(file));
}

/** A block id as hex, checked. */
export function blockIdBytes(id: unknown): Buffer {
  const b = typeof id === 'string' ? fromHex(id, 32) : undefined;
  if (!b) throw new BadArgumentError('a block id is 64 lowercase hex characters');
  return b;
}

async function exists(file: string): Promise<boolean> {
  return nodeVfs.exists(file);
}

async function removeDurably(file: string): Promise<void> {
  await nodeVfs.remove(file).catch((err: unknown) => {
    if ((err as { code?: string }).code !== 'ENOENT') throw ioError(`remove ${file}`, err);
  });
  await fsyncDir(nodeVfs, path.dirname(file)).catch((err: unknown) => {
    throw syncFailure(`fsync ${path.dirname(file)}`, err);
  });
}

async function stagingIn(dir: string, id: string): Promise<string> {
  await ensureDir(nodeVfs, dir);
  return path.join(dir, `${id}.${crypto.randomBytes(6).toString('hex')}.part`);
}

/** Blocks of a keyless node: `<dir>/replicas/blocks/<2 hex>/<id>.blk`. */
export class DirShelf implements Shelf {
  readonly root: string;

  readonly shards: ShardFiles;

  constructor(nodeDir: string) {
    this.root = path.join(nodeDir, 'replicas');
    this.shards = new ShardFiles(this.root);
  }

  path(id: string): string {
    return path.join(this.root, 'blocks', id.slice(0, 2), `${id}.blk`);
  }

  descriptorCopy(): string {
    return path.join(this.root, 'OURODB.json');
  }

  has(id: string): Promise<boolean> {
    return exists(this.path(id));
  }

  #tombstone(id: string): string {
    return path.join(this.root, 'tombstones', id);
  }

  tombstoned(id: string): Promise<boolean> {
    return exists(this.#tombstone(id));
  }

  async release(id: string): Promise<ReleaseReport> {
    const marker = this.#tombstone(id);
    const done = { released: true, repointed: 0, copied: 0, dropped: 0 };
    if (await exists(marker)) return done;
    await ensureDir(nodeVfs, path.dirname(marker));
    const handle = await nodeVfs.create(marker, { exclusive: false }).catch((err: unknown) => {
      throw ioError(`create ${marker}`, err);
    });
    await handle.close();
    await fsyncDir(nodeVfs, path.dirname(marker)).catch((err: unknown) => {
      throw syncFailure(`fsync ${path.dirname(marker)}`, err);
    });
    return done;
  }

  async drop(id: string): Promise<boolean> {
    if (!(await this.tombstoned(id))) return false;
    // A member may hold only shards of the block, and no directory its whole copy would be in.
    if (await exists(this.path(id))) await removeDurably(this.path(id));
    return true;
  }

  async *list(after = ''): AsyncIterable<HeldBlock> {
    const gone = new Set(await nodeVfs.readdir(path.join(this.root, 'tombstones')).catch(() => [] as string[]));
    const base = path.join(this.root, 'blocks');
    const shards = await nodeVfs.readdir(base).catch(() => [] as string[]);
    for (const shard of shards.sort()) {
      if (!/^[0-9a-f]{2}$/.test(shard) || shard < after.slice(0, 2)) continue;
      for (const name of (await nodeVfs.readdir(path.join(base, shard)).catch(() => [] as string[])).sort()) {
        const m = /^([0-9a-f]{64})\.blk$/.exec(name);
        if (!m || m[1]! <= after || gone.has(m[1]!)) continue;
        const handle = await nodeVfs.open(path.join(base, shard, name), 'r').catch(() => undefined);
        if (!handle) continue;
        try {
          yield { id: m[1]!, size: await handle.size() };
        } finally {
          await handle.close().catch(() => {});
        }
      }
    }
  }

  staging(id: string): Promise<string> {
    return stagingIn(path.join(this.root, 'incoming'), id);
  }

  async keep(staging: string, id: string, seen?: SeenEntries): Promise<boolean> {
    if (await this.tombstoned(id)) {
      await nodeVfs.remove(staging).catch(() => {});
      return false;
    }
    let index: BlockIndex;
    try {
      index = await verifyBlockFile(nodeVfs, staging, blockIdBytes(id), seen);
    } catch (err) {
      await nodeVfs.remove(staging).catch(() => {});
      throw err;
    }
    const dest = this.path(toHex(index.id));
    if (await exists(dest)) {
      await nodeVfs.remove(staging).catch(() => {});
      return false;
    }
    await ensureDir(nodeVfs, path.dirname(dest));
    await nodeVfs.rename(staging, dest).catch((err: unknown) => {
      throw ioError(`rename ${staging} -> ${dest}`, err);
    });
    await fsyncDir(nodeVfs, path.dirname(dest)).catch((err: unknown) => {
      throw syncFailure(`fsync ${path.dirname(dest)}`, err);
    });
    return true;
  }

  async removable(): Promise<boolean> {
    return true;
  }

  remove(id: string): Promise<void> {
    return removeDurably(this.path(id));
  }

  quarantine(id: string): Promise<void> {
    return quarantineFile(this.path(id), path.join(this.root, 'quarantine'));
  }
}

/**
 * Blocks of a node with the database: the database's `blocks/`. Received blocks are adopted
 * (db.adoptBlock). The node may drop its copy of an adopted block it is not placed on (the
 * database keeps the block registered and fetches it from a holder when a read needs it); the
 * blocks this database sealed itself stay.
 */
export class DbShelf implements Shelf {
  readonly db: OuroDB;
  /** Logical bytes of the objects in blocks adopted since start: the database's logicalBytes rises by them without anything written here. */
  #adoptedLogicalBytes = 0;
  /** Adoptions and logicalBytes() run one at a time (the database adopts one at a time anyway). */
  #adopting: Promise<unknown> = Promise.resolve();

  readonly shards: ShardFiles;

  constructor(db: OuroDB) {
    this.db = db;
    // In the database directory, under cluster/: the cluster's shards, which the database never reads.
    this.shards = new ShardFiles(path.join(db.dir, 'cluster'));
  }

  path(id: string): string {
    return this.db.blockPath(id);
  }

  descriptorCopy(): undefined {
    return undefined;
  }

  has(id: string): Promise<boolean> {
    return exists(this.path(id));
  }

  async *list(after = ''): AsyncIterable<HeldBlock> {
    for await (const b of this.db.blocks()) if (b.id > after && (await exists(this.path(b.id)))) yield { id: b.id, size: b.size };
  }

  staging(id: string): Promise<string> {
    return stagingIn(path.join(this.db.dir, 'incoming'), id);
  }

  async keep(staging: string, id: string, seen?: SeenEntries): Promise<boolean> {
    try {
      if ((await exists(this.path(id))) || (await this.tombstoned(id))) {
        await nodeVfs.remove(staging).catch(() => {});
        return false;
      }
      if (!this.db.block(id)) {
        // The header and footer name the block (a cheap read); adoptBlock checks every byte.
        const index = await readBlockIndex(nodeVfs, staging);
        if (toHex(index.id) !== id) throw new CorruptionError(`${staging}: contents hash to ${toHex(index.id)}, not to ${id}`, { location: { file: staging } });
        return await this.#oneAtATime(async () => {
          const r = await this.db.adoptBlock(staging, seen);
          this.#adoptedLogicalBytes += r.logicalBytes;
          return r.adopted;
        });
      }
      // Registered but not kept here (dropped earlier, fetched back now): check it, put it back.
      await verifyBlockFile(nodeVfs, staging, blockIdBytes(id), seen);
      const dest = this.path(id);
      await nodeVfs.rename(staging, dest).catch((err: unknown) => {
        throw ioError(`rename ${staging} -> ${dest}`, err);
      });
      await fsyncDir(nodeVfs, path.dirname(dest));
      return true;
    } catch (err) {
      await nodeVfs.remove(staging).catch(() => {});
      throw err;
    }
  }

  /**
   * The database's logical bytes, and of their rise since start what adoptions brought (the rest
   * was written here: the status page's ingest). Read between adoptions, so that the two figures
   * agree: read apart, an adoption landing between them would show as ingest.
   */
  logicalBytes(): Promise<{ logicalBytes: number; adoptedLogicalBytes: number }> {
    return this.#oneAtATime(async () => ({ logicalBytes: (await this.db.stats()).logicalBytes, adoptedLogicalBytes: this.#adoptedLogicalBytes }));
  }

  #oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#adopting.then(fn, fn);
    this.#adopting = run.catch(() => {});
    return run;
  }

  async removable(id: string): Promise<boolean> {
    return this.db.block(id)?.adopted === true;
  }

  remove(id: string): Promise<void> {
    return removeDurably(this.path(id));
  }

  quarantine(id: string): Promise<void> {
    return quarantineFile(this.path(id), path.join(this.db.dir, 'quarantine'));
  }

  async tombstoned(id: string): Promise<boolean> {
    return this.db.tombstone(id) !== undefined;
  }

  release(id: string): Promise<ReleaseReport> {
    return this.db.releaseBlock(id);
  }

  async drop(id: string): Promise<boolean> {
    if (this.db.block(id) || this.db.tombstone(id) === undefined) return false;
    if (await exists(this.path(id))) await removeDurably(this.path(id));
    return true;
  }
}
