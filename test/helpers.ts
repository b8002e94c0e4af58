import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import { NodeVfs, type VfsFile } from '../lib/vfs/index.js';

const dirs: string[] = [];

/** A fresh temporary directory, removed after the test. */
export function tempDir(prefix = 'ourodb-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** Deterministic pseudo-random bytes: ChaCha20 keystream of sha256(seed). */
export function pseudoRandom(seed: string, length: number): Buffer {
  const key = crypto.createHash('sha256').update(seed).digest();
  const cipher = crypto.createCipheriv('chacha20', key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(length));
}

/** Yields `total` bytes of pseudoRandom(seed) in pieces of `piece` bytes without holding them all. */
export async function* pseudoRandomStream(seed: string, total: number, piece = 1 << 20): AsyncGenerator<Uint8Array> {
  const key = crypto.createHash('sha256').update(seed).digest();
  const cipher = crypto.createCipheriv('chacha20', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(piece);
  for (let done = 0; done < total; done += piece) yield cipher.update(zeros.subarray(0, Math.min(piece, total - done)));
}

/** Lists every file under dir with its size and SHA-256, to prove something did not change. */
export function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

export function blockFiles(dir: string): string[] {
  const root = path.join(dir, 'blocks');
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((shard) => fs.readdirSync(path.join(root, shard)).map((f) => path.join(root, shard, f)));
}

/**
 * The real file system with every file's writev going through `writev` (given the real file), to
 * delay block writes or look at the buffers handed to them.
 */
export function vfsWithWritev(writev: (file: VfsFile, bufs: Buffer[], position: number) => Promise<number>): NodeVfs {
  const wrap = (file: VfsFile): VfsFile =>
    new Proxy(file, {
      get(target, prop) {
        if (prop === 'writev') return (bufs: Buffer[], position: number) => writev(target, bufs, position);
        const v = Reflect.get(target, prop) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  return new (class extends NodeVfs {
    override async open(p: string, flags: 'r' | 'r+') {
      return wrap(await super.open(p, flags));
    }
    override async create(p: string, options: { exclusive: boolean }) {
      return wrap(await super.create(p, options));
    }
  })();
}

/** The real file system, counting the bytes read from files (to prove what an operation read). */
export class CountingVfs extends NodeVfs {
  readBytes = 0;

  override async open(path: string, flags: 'r' | 'r+'): Promise<VfsFile> {
    return this.#counted(await super.open(path, flags));
  }

  override async create(path: string, options: { exclusive: boolean }): Promise<VfsFile> {
    return this.#counted(await super.create(path, options));
  }

  #counted(file: VfsFile): VfsFile {
    return {
      read: async (buf, offset, length, position) => {
        const n = await file.read(buf, offset, length, position);
        this.readBytes += n;
        return n;
      },
      readSync: (buf, offset, length, position) => {
        const n = file.readSync(buf, offset, length, position);
        this.readBytes += n;
        return n;
      },
      writev: (bufs, position) => file.writev(bufs, position),
      datasync: () => file.datasync(),
      sync: () => file.sync(),
      truncate: (length) => file.truncate(length),
      size: () => file.size(),
      close: () => file.close(),
    };
  }
}

export const FAST_KDF = { m: 256, t: 1, p: 1 };

export { fixture } from './paths.js';
