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
import { readBlockIndex, verifyBlockFile } from '../blockstore/store.js';
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
  /** Makes what the shelf writes into ahead of the first block (Replicator.start, once). */
  prepare(): Promise<void>;
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
   * `bytes`: its whole contents, when the caller holds them (a small block received whole).
   */
  keep(staging: string, id: string, seen?: SeenEntries, bytes?: Uint8Array): Promise<boolean>;
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

/** A K+M coding of a block: which of its shard sets a ShardFiles call means. */
export interface Coding {
  k: number;
  m: number;
}

/**
 * Shards of erasure-coded blocks a node holds (docs/node.md, "Redundancy"), beside its whole
 * blocks: `<root>/shards/<2 hex>/<block id>.<index>.shd`, and the block's manifest, as received,
 * in `<block id>.manifest` next to them. A shard is kept only once it matches the manifest
 * (Shards.onPut verifies it before keep), and it is written like a block: to a staging file,
 * fsynced, renamed into place, the directory fsynced, so a shard acknowledged survives a crash.
 * The manifest is written before the shard, so a shard on disk always has its manifest.
 *
 * A block re-coded to another K+M (the cluster's policy changed) has both sets here for a while,
 * the old one kept until the new one is complete on its placement: the set first kept has the
 * plain names above (the primary), a set of another K+M `<block id>.<K>+<M>.manifest` and
 * `<block id>.<K>+<M>.<index>.shd` (docs/FORMAT.md). A call naming a `coding` means that set; one
 * naming none means the block's default set: the primary, or when only another is left, that one.
 */
export class ShardFiles {
  readonly #root: string;

  constructor(root: string) {
    this.#root = path.join(root, 'shards');
  }

  #dir(blockId: string): string {
    return path.join(this.#root, blockId.slice(0, 2));
  }

  /** The file-name stem of `coding`'s set of block `blockId` (see the class comment). */
  async #stem(blockId: string, coding: Coding | undefined): Promise<string> {
    const alt = (c: Coding) => `${blockId}.${c.k}+${c.m}`;
    if (coding) {
      if (await exists(this.#manifestFile(alt(coding)))) return alt(coding);
      const primary = await readOrUndefined(this.#manifestFile(blockId));
      return !primary || (primary[8] === coding.k && primary[9] === coding.m) ? blockId : alt(coding);
    }
    if (await exists(this.#manifestFile(blockId))) return blockId;
    const other = (await this.codings(blockId))[0];
    return other ? alt(other) : blockId;
  }

  #manifestFile(stem: string): string {
    return path.join(this.#dir(stem), `${stem}.manifest`);
  }

  /** The file of shard `index` of block `blockId` (present or not). */
  async path(blockId: string, index: number, coding?: Coding): Promise<string> {
    return path.join(this.#dir(blockId), `${await this.#stem(blockId, coding)}.${index}.shd`);
  }

  /**
   * The K+M codings of block `blockId` held here, the primary's first. The primary's is read
   * from its manifest (K at byte 8, M at 9: carrier/ec/manifest.ts); another's from its name.
   */
  async codings(blockId: string): Promise<Coding[]> {
    const out: Coding[] = [];
    const primary = await readOrUndefined(this.#manifestFile(blockId));
    if (primary && primary.length > 9) out.push({ k: primary[8]!, m: primary[9]! });
    for (const n of await nodeVfs.readdir(this.#dir(blockId)).catch(() => [] as string[])) {
      const c = /^[0-9a-f]{64}\.(\d+)\+(\d+)\.manifest$/.exec(n);
      if (c && n.startsWith(`${blockId}.`)) out.push({ k: Number(c[1]), m: Number(c[2]) });
    }
    return out;
  }

  /** The manifest bytes kept for block `blockId` (its `coding` set), or undefined. */
  async manifest(blockId: string, coding?: Coding): Promise<Uint8Array | undefined> {
    const bytes = await readOrUndefined(this.#manifestFile(await this.#stem(blockId, coding)));
    // The primary set may be of another coding than the one asked for.
    return bytes && coding && (bytes[8] !== coding.k || bytes[9] !== coding.m) ? undefined : bytes;
  }

  /** Shard `index` of block `blockId`, or undefined when not held here (unchecked: the reader verifies). */
  async read(blockId: string, index: number, coding?: Coding): Promise<Uint8Array | undefined> {
    if (coding && !(await this.manifest(blockId, coding))) return undefined;
    return readOrUndefined(await this.path(blockId, index, coding));
  }

  /** Indexes of the shards of block `blockId` (its `coding` set) held here. */
  async held(blockId: string, coding?: Coding): Promise<number[]> {
    if (coding && !(await this.manifest(blockId, coding))) return [];
    const stem = await this.#stem(blockId, coding);
    const names = await nodeVfs.readdir(this.#dir(blockId)).catch(() => [] as string[]);
    return names.flatMap((n) => (n.startsWith(`${stem}.`) && /^\d+\.shd$/.test(n.slice(stem.length + 1)) ? [Number(n.slice(stem.length + 1, -4))] : [])).sort((a, b) => a - b);
  }

  /** Ids of the blocks some shard of which is held here (those with a manifest of any coding), in id order. */
  async blocks(): Promise<string[]> {
    const out: string[] = [];
    for (const prefix of (await nodeVfs.readdir(this.#root).catch(() => [] as string[])).sort()) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      for (const name of (await nodeVfs.readdir(path.join(this.#root, prefix)).catch(() => [] as string[])).sort()) {
        const m = /^([0-9a-f]{64})(\.\d+\+\d+)?\.manifest$/.exec(name);
        if (m && out.at(-1) !== m[1]) out.push(m[1]!);
      }
    }
    return [...new Set(out)];
  }

  /** Moves shard `index` of block `blockId`, which failed verification, to `shards/quarantine/` (no longer held). */
  async quarantine(blockId: string, index: number, coding?: Coding): Promise<void> {
    return quarantineFile(await this.path(blockId, index, coding), path.join(this.#root, 'quarantine'));
  }

  /** Deletes shard `index` of block `blockId` held here (a duplicate: another member holds the same one); the manifest stays. */
  async remove(blockId: string, index: number, coding?: Coding): Promise<void> {
    const file = await this.path(blockId, index, coding);
    if (await exists(file)) await removeDurably(file);
  }

  /**
   * Deletes every shard of block `blockId` held here, then its manifest: of its `coding` set (an
   * old K+M, once the new set is complete), or with none of every set (deletion across the
   * cluster: the block is released everywhere). The number of shards removed.
   */
  async removeAll(blockId: string, coding?: Coding): Promise<number> {
    let removed = 0;
    for (const c of coding ? [coding] : await this.codings(blockId)) {
      if (!(await this.manifest(blockId, c))) continue;
      const stem = await this.#stem(blockId, c);
      for (const index of await this.held(blockId, c)) {
        await removeDurably(path.join(this.#dir(blockId), `${stem}.${index}.shd`));
        removed++;
      }
      await removeDurably(this.#manifestFile(stem));
    }
    return removed;
  }

  /**
   * Keeps shard `index` of block `blockId` (already verified against `manifest`) durably, with
   * the manifest if its set has none yet: the primary set when the block has none or one of the
   * manifest's K+M, else the set of that K+M beside it. False when the shard was held already.
   */
  async keep(blockId: string, index: number, manifest: Uint8Array, shard: Uint8Array): Promise<boolean> {
    const stem = await this.#stem(blockId, { k: manifest[8]!, m: manifest[9]! });
    const dest = path.join(this.#dir(blockId), `${stem}.${index}.shd`);
    if (await exists(dest)) return false;
    await ensureDir(nodeVfs, this.#dir(blockId));
    if (!(await exists(this.#manifestFile(stem)))) await writeDurably(path.join(this.#root, 'incoming'), this.#manifestFile(stem), manifest);
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

/**
 * Directories this process made sure of (ensureDir: created and synced if missing). ensureDir asks
 * the file system each time, ~0.3-1 ms on a busy replica, twice per received block (incoming/ and
 * the block's fan-out directory) on the path a replicated flush waits for. Nothing here removes a
 * directory; one removed from outside is made again when a rename into it fails (keepIn).
 */
const madeDirs = new Set<string>();

async function ensureDirOnce(dir: string): Promise<void> {
  if (madeDirs.has(dir)) return;
  await ensureDir(nodeVfs, dir);
  madeDirs.add(dir);
}

/** Directories makeFanOut asks for at once. */
const FAN_OUT_AT_ONCE = 64;

/**
 * Makes `parent` and its 256 fan-out directories `00`..`ff` (those missing), then fsyncs `parent`
 * once, as restic's `init` makes its data/ directories. Made one at a time as blocks arrived,
 * each new one cost the push that found it missing a mkdir and an fsync of `parent`: the rename
 * step of a received block took ~1.1-1.6 ms instead of ~0.2 at the median while a new member
 * received its first few hundred blocks (docs/performance.md, "Cost per byte, eighth round").
 */
async function makeFanOut(parent: string): Promise<void> {
  await ensureDirOnce(parent);
  const names = Array.from({ length: 256 }, (_, i) => path.join(parent, i.toString(16).padStart(2, '0')));
  let made = false;
  for (let i = 0; i < names.length; i += FAN_OUT_AT_ONCE) {
    await Promise.all(
      names.slice(i, i + FAN_OUT_AT_ONCE).map(async (dir) => {
        if (madeDirs.has(dir)) return;
        // mkdir with `recursive` answers the first directory it made, undefined when it was there.
        const created = await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
          throw ioError(`mkdir ${dir}`, err);
        });
        if (created !== undefined) made = true;
      }),
    );
  }
  if (made) {
    await fsyncDir(nodeVfs, parent).catch((err: unknown) => {
      throw syncFailure(`fsync ${parent}`, err);
    });
  }
  for (const dir of names) madeDirs.add(dir);
}

/** Renames `staging` to `dest` (its directory made if need be) and fsyncs that directory. */
async function keepIn(staging: string, dest: string): Promise<void> {
  const dir = path.dirname(dest);
  await ensureDirOnce(dir);
  await nodeVfs.rename(staging, dest).catch(async (err: unknown) => {
    if ((err as { code?: string }).code !== 'ENOENT') throw ioError(`rename ${staging} -> ${dest}`, err);
    madeDirs.delete(dir);
    await ensureDirOnce(dir);
    await nodeVfs.rename(staging, dest).catch((again: unknown) => {
      throw ioError(`rename ${staging} -> ${dest}`, again);
    });
  });
  await fsyncDir(nodeVfs, dir).catch((err: unknown) => {
    throw syncFailure(`fsync ${dir}`, err);
  });
}

async function stagingIn(dir: string, id: string): Promise<string> {
  await ensureDirOnce(dir);
  return path.join(dir, `${id}.${crypto.randomBytes(6).toString('hex')}.part`);
}

/**
 * A shelf's list asks the file system about this many blocks at once (a keyless shelf: the
 * blocks of one fan-out directory). Asked one at a time, each call waited its turn on libuv's
 * thread pool behind the fsyncs of pushes and seals, and on a loaded machine a block-list page
 * of a few hundred blocks outlived the 3 s a repair pass gives it (docs/performance.md, "Two
 * replication tests in clean-clone CI"): the keyed members then indexed nothing that member
 * held, pass after pass.
 */
const LIST_RUN = 64;

/** Blocks of a keyless node: `<dir>/replicas/blocks/<2 hex>/<id>.blk`. */
export class DirShelf implements Shelf {
  readonly root: string;

  readonly shards: ShardFiles;

  constructor(nodeDir: string) {
    this.root = path.join(nodeDir, 'replicas');
    this.shards = new ShardFiles(this.root);
  }

  async prepare(): Promise<void> {
    await ensureDirOnce(path.join(this.root, 'incoming'));
    await makeFanOut(path.join(this.root, 'blocks'));
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
      const ids: string[] = [];
      for (const name of (await nodeVfs.readdir(path.join(base, shard)).catch(() => [] as string[])).sort()) {
        const m = /^([0-9a-f]{64})\.blk$/.exec(name);
        if (m && m[1]! > after && !gone.has(m[1]!)) ids.push(m[1]!);
      }
      // One stat per block, a directory's asked at once (see LIST_RUN); a file gone meanwhile is skipped.
      const sizes = await Promise.all(ids.map((id) => fs.promises.stat(this.path(id)).then((st) => st.size, () => undefined)));
      for (let i = 0; i < ids.length; i++) if (sizes[i] !== undefined) yield { id: ids[i]!, size: sizes[i]! };
    }
  }

  staging(id: string): Promise<string> {
    return stagingIn(path.join(this.root, 'incoming'), id);
  }

  async keep(staging: string, id: string, seen?: SeenEntries, bytes?: Uint8Array): Promise<boolean> {
    // The tombstone, the check and whether the block is here already are asked at once: each
    // file-system call waits its turn on a busy replica, and the push waits for all of them.
    // Their verdicts are taken in the order they were asked in one at a time: a tombstoned block
    // is dropped unchecked, a bad one refused, one already here left.
    const dest = this.path(id);
    const [tombstoned, failed, present] = await Promise.all([this.tombstoned(id), verifyBlockFile(nodeVfs, staging, blockIdBytes(id), seen, bytes).then(() => undefined, (err: unknown) => ({ err })), exists(dest)]);
    if (tombstoned || failed || present) {
      await nodeVfs.remove(staging).catch(() => {});
      if (!tombstoned && failed) throw failed.err;
      return false;
    }
    await keepIn(staging, dest);
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

  /** Nothing: received blocks are adopted into the database, whose seal makes its own directories. */
  async prepare(): Promise<void> {}

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
    // Which registered blocks are kept here is asked LIST_RUN at a time (see LIST_RUN).
    const kept = async (run: HeldBlock[]) => {
      const here = await Promise.all(run.map((b) => exists(this.path(b.id))));
      return run.filter((_, i) => here[i]);
    };
    let run: HeldBlock[] = [];
    for await (const b of this.db.blocks()) {
      if (b.id <= after) continue;
      run.push({ id: b.id, size: b.size });
      if (run.length < LIST_RUN) continue;
      yield* await kept(run);
      run = [];
    }
    if (run.length > 0) yield* await kept(run);
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
