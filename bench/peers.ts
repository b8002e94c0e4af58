/**
 * What a JavaScript user would pick instead of OuroDB, on the ingest workload (issue 9): Helia's
 * UnixFS importer (`ipfs-unixfs-importer`, what `@helia/unixfs` runs) over `blockstore-fs`, and
 * Hypercore (10, on random-access-file), each fed the same kind of bytes (a ChaCha20 keystream)
 * and read back. Neither encrypts, and neither fsyncs what it wrote; OuroDB's figure beside them
 * is encrypted and durable. Each peer, and OuroDB itself (`ouroIngest`), runs in a process of its
 * own (bench/peer-run.ts), so its peak RSS is its own; a peer that cannot be loaded is skipped
 * with the reason.
 */
import fs from 'node:fs';
import path from 'node:path';

import crypto from 'node:crypto';
import { OuroDB } from '../lib/index.js';

export interface PeerRun extends IngestTimes {
  name: string;
  note: string;
}

type Source = () => AsyncIterable<Buffer>;

const MiB = 1 << 20;
const secsSince = (t: number) => (performance.now() - t) / 1000;

/** `total` bytes of a ChaCha20 keystream (incompressible, never repeating) in 1 MiB pieces. */
export function keystream(total: number, seed: Buffer): AsyncGenerator<Buffer> {
  const cipher = crypto.createCipheriv('chacha20', seed, Buffer.alloc(16));
  const zeros = Buffer.alloc(MiB);
  return (async function* () {
    for (let done = 0; done < total; done += MiB) yield cipher.update(zeros);
  })();
}

/** Samples this process's RSS every 25 ms until `stop()`, which returns the peak in bytes. */
export function peakRss(): { stop: () => number } {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 25);
  return { stop: () => (clearInterval(t), peak) };
}

/** What one ingest-and-read-back run measured (bench/run.ts times OuroDB with it too). */
export interface IngestTimes {
  ingestMiBs: number;
  readMiBs: number;
  /** Peak RSS of the process while ingesting. */
  ingestRssMiB: number;
}

/**
 * Times an ingest of `total` bytes and their read-back, the same way for OuroDB and for each
 * peer: MiB/s both ways and the peak RSS while ingesting. `readBack` resolves to the bytes it
 * read; any other count than `total` is an error.
 */
export async function timeIngestAndRead(what: string, total: number, ingest: () => Promise<void>, readBack: () => Promise<number>): Promise<IngestTimes> {
  const rss = peakRss();
  let t = performance.now();
  await ingest();
  const ingestMiBs = total / MiB / secsSince(t);
  const ingestRssMiB = rss.stop() / MiB;
  t = performance.now();
  const n = await readBack();
  if (n !== total) throw new Error(`${what} read back ${n} bytes of ${total}`);
  return { ingestMiBs, readMiBs: n / MiB / secsSince(t), ingestRssMiB };
}

/** A module by name, without TypeScript resolving it (the peers ship no types we rely on). */
async function load<T>(name: string): Promise<T> {
  return (await import(name)) as T;
}

/** Helia's UnixFS importer and exporter and blockstore-fs, as far as the benchmarks use them (also bench/blockstore.ts). */
export interface Helia {
  importer: (src: unknown, bs: unknown, options?: Record<string, unknown>) => AsyncIterable<{ cid: { toString(): string } }>;
  /** `cid`: a CID, or a path under one as a string. */
  exporter: (cid: unknown, bs: unknown) => Promise<{ type: string; content(): AsyncIterable<Uint8Array> }>;
  recursive: (cid: unknown, bs: unknown) => AsyncIterable<{ cid: unknown; path: string }>;
  FsBlockstore: new (dir: string) => { open(): Promise<void>; close(): Promise<void> };
}

export async function loadHelia(): Promise<Helia> {
  const { importer } = await load<Pick<Helia, 'importer'>>('ipfs-unixfs-importer');
  const { exporter, recursive } = await load<Pick<Helia, 'exporter' | 'recursive'>>('ipfs-unixfs-exporter');
  const { FsBlockstore } = await load<Pick<Helia, 'FsBlockstore'>>('blockstore-fs');
  return { importer, exporter, recursive, FsBlockstore };
}

export async function heliaUnixfs(work: string, total: number, source: Source): Promise<PeerRun> {
  const { importer, exporter, FsBlockstore } = await loadHelia();
  const dir = path.join(work, 'helia');
  const bs = new FsBlockstore(dir);
  await bs.open();
  try {
    let root = '';
    const times = await timeIngestAndRead(
      'Helia',
      total,
      async () => {
        for await (const e of importer([{ path: 'value', content: source() }], bs)) root = e.cid.toString();
      },
      async () => {
        let n = 0;
        for await (const piece of (await exporter(root, bs)).content()) n += piece.length;
        return n;
      },
    );
    return { name: 'Helia UnixFS + blockstore-fs', ...times, note: 'not encrypted, not fsynced' };
  } finally {
    await bs.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface HypercoreLike {
  ready(): Promise<void>;
  append(blocks: Buffer[]): Promise<unknown>;
  get(i: number): Promise<Buffer>;
  length: number;
  close(): Promise<void>;
}

export async function hypercore(work: string, total: number, source: Source): Promise<PeerRun> {
  const { default: Hypercore } = await load<{ default: new (dir: string) => HypercoreLike }>('hypercore');
  const dir = path.join(work, 'hypercore');
  const core = new Hypercore(dir);
  await core.ready();
  try {
    const times = await timeIngestAndRead(
      'Hypercore',
      total,
      async () => {
        // Appended in 64 KiB blocks, a batch per MiB: Hypercore's blocks are its unit of reading and of proof.
        for await (const mib of source()) {
          const blocks: Buffer[] = [];
          for (let at = 0; at < mib.length; at += 64 * 1024) blocks.push(mib.subarray(at, at + 64 * 1024));
          await core.append(blocks);
        }
      },
      async () => {
        let n = 0;
        for (let i = 0; i < core.length; i++) n += (await core.get(i)).length;
        return n;
      },
    );
    return { name: 'Hypercore 10', ...times, note: 'not encrypted, not fsynced' };
  } finally {
    await core.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** OuroDB's own ingest: one streamed put, durable, encrypted, then a streamed read back. */
export async function ouroIngest(work: string, total: number, source: Source): Promise<PeerRun> {
  const dir = path.join(work, 'ingest');
  const db = await OuroDB.open(dir, { key: crypto.randomBytes(32) });
  try {
    let hash = '';
    const times = await timeIngestAndRead(
      'OuroDB',
      total,
      async () => {
        hash = (await db.put(source())).hash;
      },
      async () => {
        let n = 0;
        for await (const p of db.stream(hash)) n += p.length;
        return n;
      },
    );
    return { name: 'OuroDB', ...times, note: 'encrypted, durable' };
  } finally {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export const PEERS: Record<string, (work: string, total: number, source: Source) => Promise<PeerRun>> = {
  'Helia UnixFS + blockstore-fs': heliaUnixfs,
  'Hypercore 10': hypercore,
};
