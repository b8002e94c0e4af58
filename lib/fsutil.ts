/** File helpers whose durability ordering matters; every caller relies on the fsyncs here. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ioError } from './errors.js';

/** fsync a directory so that entries created, renamed or removed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, 'r');
    await handle.sync();
  } catch (err) {
    throw ioError(`fsync of directory ${dir}`, err);
  } finally {
    await handle?.close().catch(() => {});
  }
}

/**
 * Replaces `file` with `data` so that after a crash it holds either the old or the new
 * contents, never a mix: write a temp file, fsync it, rename over, fsync the directory.
 */
export async function writeFileAtomic(file: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(tmp, 'w', 0o600);
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.rename(tmp, file);
  } catch (err) {
    await handle?.close().catch(() => {});
    await fs.rm(tmp, { force: true }).catch(() => {});
    throw ioError(`atomic write of ${file}`, err);
  }
  await fsyncDir(path.dirname(file));
}

/** mkdir -p, then fsync the parent so the new directory entry is durable. */
export async function ensureDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw ioError(`mkdir ${dir}`, err);
  }
  await fsyncDir(path.dirname(dir));
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}
