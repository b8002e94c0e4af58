/**
 * Opening the index LevelDB: the handle, its layout version, and setting a damaged one aside.
 * Functions only; the handle, once open, belongs to IndexStore (index/store.ts).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { BlockStore } from '../blockstore/store.js';
import { keys } from './keys.js';
import { ClassicLevel } from './leveldb.js';
import type { Ldb } from './store.js';
import { encodeCount } from './values.js';
import { CorruptionError, LockedError, UnsupportedVersionError, ioError } from '../lib/errors.js';
import { fsyncDir } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';

/**
 * The index layout this release writes. Version 2 added locations of records inside packs
 * (index/values.ts); a version 1 index is read as it is and marked version 2 on open, after
 * which a release that reads only version 1 refuses it instead of misreading a packed record.
 */
export const INDEX_FORMAT_VERSION = 2;
const INDEX_FORMAT_VERSIONS_READ = [1, 2];

/**
 * Opens the index LevelDB. A corrupt one is moved aside (kept for inspection, never deleted) and
 * a fresh one created, which the caller then rebuilds from the blocks.
 */
export async function openIndex(root: string): Promise<{ ldb: Ldb; rebuild: boolean }> {
  const dir = path.join(root, 'index');
  // LevelDB creates only the last directory; with a Vfs other than the real one, `root` may
  // exist only there.
  await fs.mkdir(root, { recursive: true, mode: 0o700 });
  for (let attempt = 0; ; attempt++) {
    const ldb: Ldb = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    try {
      await ldb.open();
      return { ldb, rebuild: attempt > 0 };
    } catch (err) {
      const code = (err as { code?: string; cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code;
      if (code === 'LEVEL_LOCKED') throw new LockedError(`${root} is open in another process or handle`, { cause: err });
      // LevelDB reports a CURRENT file that names no manifest as an I/O error: that is damage too.
      const damaged = code === 'LEVEL_CORRUPTION' || (code === 'LEVEL_IO_ERROR' && !(await currentNamesManifest(dir)));
      if (damaged && attempt === 0) {
        await setIndexAside(root);
        continue;
      }
      if (damaged) throw new CorruptionError(`${dir} is corrupt`, { cause: err });
      throw ioError(`opening ${dir}`, err);
    }
  }
}

/**
 * Checks (and writes, for a fresh index, or marks current, for an older one) the layout version.
 * Returns whether the index must be rebuilt from the blocks: `rebuild` already, a fresh index
 * beside existing blocks (the index directory was lost), or a rebuild a crash interrupted.
 */
export async function checkIndexFormat(ldb: Ldb, root: string, store: BlockStore, rebuild: boolean): Promise<boolean> {
  const format = ldb.getSync(keys.meta('format'));
  if (format === undefined) {
    // A fresh index beside existing blocks: the index directory was lost. Rebuild it.
    rebuild ||= (await store.listSealed()).length > 0 || (await store.listOpen()).length > 0;
    await ldb.put(keys.meta('format'), encodeCount(INDEX_FORMAT_VERSION, 4), { sync: true });
  } else if (!INDEX_FORMAT_VERSIONS_READ.includes(format.readUInt32LE(0))) {
    throw new UnsupportedVersionError(`${root}/index has layout version ${format.readUInt32LE(0)}; this release reads ${INDEX_FORMAT_VERSIONS_READ.join(' and ')}`);
  } else if (format.readUInt32LE(0) !== INDEX_FORMAT_VERSION) {
    await ldb.put(keys.meta('format'), encodeCount(INDEX_FORMAT_VERSION, 4), { sync: true });
  }
  rebuild ||= ldb.getSync(keys.meta('rebuilding')) !== undefined;
  return rebuild;
}

/** Moves a damaged index directory aside (kept for inspection, never deleted). */
export async function setIndexAside(root: string): Promise<void> {
  const dir = path.join(root, 'index');
  const aside = `${dir}.corrupt-${Date.now()}`;
  await fs.rename(dir, aside).catch((e: unknown) => {
    throw ioError(`moving the corrupt index to ${aside}`, e);
  });
  await fsyncDir(nodeVfs, root);
}

/** Whether an error says LevelDB found its own files damaged (raw, or wrapped by IndexStore.get). */
export function indexDamage(err: unknown): boolean {
  const code = (e: unknown) => (e as { code?: string } | undefined)?.code;
  return code(err) === 'LEVEL_CORRUPTION' || (err instanceof CorruptionError && code(err.cause) === 'LEVEL_CORRUPTION');
}

/** Whether a path exists on the real disk (LevelDB's index directory lives there). */
export async function existsOnDisk(p: string): Promise<boolean> {
  return nodeVfs.exists(p);
}

/** Whether the index's CURRENT file names a manifest that exists (LevelDB's entry point). */
async function currentNamesManifest(dir: string): Promise<boolean> {
  try {
    const name = (await fs.readFile(path.join(dir, 'CURRENT'), 'latin1')).trim();
    return /^MANIFEST-[0-9]+$/.test(name) && (await existsOnDisk(path.join(dir, name)));
  } catch {
    return false;
  }
}
