/**
 * The `blockstore` part of bench/run.ts: Helia's UnixFS importer and exporter
 * (ipfs-unixfs-importer/-exporter, what @helia/unixfs runs, default options) over OuroBlockstore
 * (lib/ipfs-blockstore.ts, `ourodb/blockstore`) against the same over blockstore-fs, on the same
 * input in the same run, in two workloads: one large incompressible file (a ChaCha20 keystream,
 * as the ingest part feeds), and a tree of many small files (512 B to 32 KiB, in nested
 * directories). For each store: import MiB/s, export MiB/s (every file read back through the
 * exporter, straight after the import, page cache warm for both) and bytes on disk (allocated
 * blocks of the store's directory once closed: for OuroDB its block files, index and WAL; for
 * blockstore-fs one file per block).
 *
 * OuroBlockstore is encrypted and durable (every put fsynced, concurrent puts sharing syncs);
 * blockstore-fs neither encrypts nor fsyncs. So OuroBlockstore is timed a second time with
 * `durability: 'relaxed'` and one `flush()` at the end (inside the timing), the way a bulk
 * import that only needs the whole to be durable would run. `sync` runs between stores so one
 * store's dirty pages are not written back during the next one's timing. Both imports of an
 * input must give the same root CID; the export must read back every byte.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { OuroDB } from '../lib/index.js';
import { OuroBlockstore } from '../lib/ipfs-blockstore.js';
import { type Helia, keystream, loadHelia } from './peers.js';

const MiB = 1 << 20;

interface Workload {
  name: string;
  bytes: number;
  files: number;
  /** A tree is imported wrapped in a directory; a single file is its own root. */
  tree: boolean;
  /** The importer's input, generated afresh (and identically) for each store. */
  candidates: () => Iterable<{ path: string; content: AsyncIterable<Uint8Array> | Uint8Array }>;
}

export interface StoreFigures {
  importMiBs: number;
  exportMiBs: number;
  diskBytes: number;
  root: string;
}

export interface BlockstoreBenchResult {
  workloads: Array<{ name: string; bytes: number; files: number; ouro: StoreFigures; ouroRelaxed: StoreFigures; fs: StoreFigures }>;
  /** Why nothing was measured: Helia's packages or blockstore-fs could not be loaded. */
  skipped?: string;
}

const secsSince = (t: number) => (performance.now() - t) / 1000;

/** Bytes the files under `dir` occupy on disk (allocated blocks, not apparent sizes). */
function allocated(dir: string): number {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .reduce((n, e) => n + fs.statSync(path.join(e.parentPath, e.name)).blocks * 512, 0);
}

/** `count` small files, 512 B to 32 KiB each, in 20 x 8 nested directories; each file's bytes a keystream of its own. */
function smallFiles(count: number, seed: Buffer): Workload {
  const size = (i: number) => 512 + (Math.imul(i + 1, 2654435761) >>> 0) % (32 * 1024 - 512);
  let bytes = 0;
  for (let i = 0; i < count; i++) bytes += size(i);
  return {
    name: `${count} small files (${(bytes / MiB).toFixed(0)} MiB)`,
    bytes,
    files: count,
    tree: true,
    *candidates() {
      for (let i = 0; i < count; i++) {
        const key = crypto.createHash('sha256').update(seed).update(String(i)).digest();
        const content = crypto.createCipheriv('chacha20', key, Buffer.alloc(16)).update(Buffer.alloc(size(i)));
        yield { path: `d${i % 20}/e${(i >> 5) % 8}/f${i}.bin`, content };
      }
    },
  };
}

function oneFile(total: number, seed: Buffer): Workload {
  return { name: `one ${(total / MiB).toFixed(0)} MiB file`, bytes: total, files: 1, tree: false, candidates: () => [{ path: 'file.bin', content: keystream(total, seed) }] };
}

/** Imports the workload into `bs`, then reads every file back through the exporter. */
async function roundTrip(helia: Helia, w: Workload, bs: unknown, afterImport?: () => Promise<void>): Promise<Omit<StoreFigures, 'diskBytes'>> {
  let root = '';
  let t = performance.now();
  for await (const entry of helia.importer(w.candidates(), bs, { wrapWithDirectory: w.tree })) root = entry.cid.toString();
  await afterImport?.();
  const importMiBs = w.bytes / MiB / secsSince(t);
  t = performance.now();
  let read = 0;
  let files = 0;
  const readFile = async (cid: unknown) => {
    const node = await helia.exporter(cid, bs);
    if (node.type !== 'file' && node.type !== 'raw') return;
    files++;
    for await (const piece of node.content()) read += piece.length;
  };
  if (w.tree) for await (const entry of helia.recursive(root, bs)) await readFile(entry.cid);
  else await readFile(root);
  const exportMiBs = read / MiB / secsSince(t);
  if (read !== w.bytes || files !== w.files) throw new Error(`${w.name}: exported ${files} files, ${read} bytes; imported ${w.files}, ${w.bytes}`);
  return { importMiBs, exportMiBs, root };
}

async function ouroRun(helia: Helia, w: Workload, dir: string, durability: 'durable' | 'relaxed'): Promise<StoreFigures> {
  const db = await OuroDB.open(dir, { key: crypto.randomBytes(32) });
  let figures: Omit<StoreFigures, 'diskBytes'>;
  try {
    const bs = new OuroBlockstore(db, { durability });
    figures = await roundTrip(helia, w, bs, durability === 'relaxed' ? () => db.flush() : undefined);
  } finally {
    await db.close();
  }
  return { ...figures, diskBytes: allocated(dir) };
}

async function fsRun(helia: Helia, w: Workload, dir: string): Promise<StoreFigures> {
  const bs = new helia.FsBlockstore(dir);
  await bs.open();
  let figures: Omit<StoreFigures, 'diskBytes'>;
  try {
    figures = await roundTrip(helia, w, bs);
  } finally {
    await bs.close();
  }
  return { ...figures, diskBytes: allocated(dir) };
}

/** Runs both workloads over each store in turn (nothing, with the reason, if Helia's packages cannot be loaded). */
export async function blockstoreBench(work: string, options: { fileMiB: number; files: number }): Promise<BlockstoreBenchResult> {
  let helia: Helia;
  try {
    helia = await loadHelia();
  } catch (err) {
    return { workloads: [], skipped: `Helia UnixFS + blockstore-fs: ${err instanceof Error ? err.message : String(err)}` };
  }
  const seed = crypto.randomBytes(32);
  const workloads = [oneFile(options.fileMiB * MiB, seed), smallFiles(options.files, seed)];
  const result: BlockstoreBenchResult = { workloads: [] };
  for (const w of workloads) {
    const run = async <T>(name: string, f: (dir: string) => Promise<T>): Promise<T> => {
      const dir = path.join(work, `blockstore-${name}`);
      spawnSync('sync');
      try {
        return await f(dir);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    };
    const ouro = await run('ouro', (dir) => ouroRun(helia, w, dir, 'durable'));
    const ouroRelaxed = await run('ouro-relaxed', (dir) => ouroRun(helia, w, dir, 'relaxed'));
    const fsFigures = await run('fs', (dir) => fsRun(helia, w, dir));
    if (ouro.root !== fsFigures.root || ouroRelaxed.root !== fsFigures.root) throw new Error(`${w.name}: root CIDs differ (${ouro.root}, ${ouroRelaxed.root}, blockstore-fs ${fsFigures.root})`);
    result.workloads.push({ name: w.name, bytes: w.bytes, files: w.files, ouro, ouroRelaxed, fs: fsFigures });
  }
  return result;
}
