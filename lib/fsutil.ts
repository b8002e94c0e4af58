/** File helpers whose durability ordering matters; every caller relies on the fsyncs here. */
import path from 'node:path';
import { ioError } from './errors.js';
import { type Vfs, writevAll } from './vfs/vfs.js';

/** fsync a directory so that entries created, renamed or removed in it survive a crash. */
export async function fsyncDir(vfs: Vfs, dir: string): Promise<void> {
  try {
    await vfs.syncDir(dir);
  } catch (err) {
    throw ioError(`fsync of directory ${dir}`, err);
  }
}

/**
 * Replaces `file` with `data` so that after a crash it holds either the old or the new
 * contents, never a mix: write a temp file, fsync it, rename over, fsync the directory.
 */
export async function writeFileAtomic(vfs: Vfs, file: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  try {
    const handle = await vfs.create(tmp, { exclusive: false });
    try {
      await writevAll(handle, [bytes], 0);
      await handle.sync();
    } finally {
      await handle.close().catch(() => {});
    }
    await vfs.rename(tmp, file);
  } catch (err) {
    await vfs.remove(tmp).catch(() => {});
    throw ioError(`atomic write of ${file}`, err);
  }
  await fsyncDir(vfs, path.dirname(file));
}

/**
 * mkdir -p where every directory it creates is durable: each new directory's parent is fsynced
 * after it (a directory whose parent was never synced can vanish in a crash, with all it holds).
 */
export async function ensureDir(vfs: Vfs, dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; !(await vfs.exists(d)); d = path.dirname(d)) {
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      await vfs.mkdirp(d);
    } catch (err) {
      throw ioError(`mkdir ${d}`, err);
    }
    await fsyncDir(vfs, path.dirname(d));
  }
}
