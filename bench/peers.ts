/**
 * What a JavaScript user would pick instead of OuroDB, on the ingest workload (issue 9): Helia's
 * UnixFS importer (`ipfs-unixfs-importer`, what `@helia/unixfs` runs) over `blockstore-fs`, and
 * Hypercore (10, on random-access-file), each fed the same kind of bytes (a ChaCha20 keystream)
 * and read back. Neither encrypts, and neither fsyncs what it wrote; OuroDB's figure beside them
 * is encrypted and durable. Each peer is loaded when the part runs: one that cannot be loaded is
 * skipped with the reason.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface PeerRun {
  name: string;
  ingestMiBs: number;
  readMiBs: number;
  note: string;
}

type Source = () => AsyncIterable<Buffer>;

const MiB = 1 << 20;
const secsSince = (t: number) => (performance.now() - t) / 1000;

/** A module by name, without TypeScript resolving it (the peers ship no types we rely on). */
async function load<T>(name: string): Promise<T> {
  return (await import(name)) as T;
}

export async function heliaUnixfs(work: string, total: number, source: Source): Promise<PeerRun> {
  const { importer } = await load<{ importer: (src: unknown, bs: unknown) => AsyncIterable<{ cid: { toString(): string } }> }>('ipfs-unixfs-importer');
  const { exporter } = await load<{ exporter: (cid: string, bs: unknown) => Promise<{ content(): AsyncIterable<Uint8Array> }> }>('ipfs-unixfs-exporter');
  const { FsBlockstore } = await load<{ FsBlockstore: new (dir: string) => { open(): Promise<void>; close(): Promise<void> } }>('blockstore-fs');
  const dir = path.join(work, 'helia');
  const bs = new FsBlockstore(dir);
  await bs.open();
  try {
    let t = performance.now();
    let root = '';
    for await (const e of importer([{ path: 'value', content: source() }], bs)) root = e.cid.toString();
    const ingestMiBs = total / MiB / secsSince(t);
    t = performance.now();
    let n = 0;
    for await (const piece of (await exporter(root, bs)).content()) n += piece.length;
    if (n !== total) throw new Error(`Helia read back ${n} bytes of ${total}`);
    return { name: 'Helia UnixFS + blockstore-fs', ingestMiBs, readMiBs: n / MiB / secsSince(t), note: 'not encrypted, not fsynced' };
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
    // Appended in 64 KiB blocks, a batch per MiB: Hypercore's blocks are its unit of reading and of proof.
    let t = performance.now();
    for await (const mib of source()) {
      const blocks: Buffer[] = [];
      for (let at = 0; at < mib.length; at += 64 * 1024) blocks.push(mib.subarray(at, at + 64 * 1024));
      await core.append(blocks);
    }
    const ingestMiBs = total / MiB / secsSince(t);
    t = performance.now();
    let n = 0;
    for (let i = 0; i < core.length; i++) n += (await core.get(i)).length;
    if (n !== total) throw new Error(`Hypercore read back ${n} bytes of ${total}`);
    return { name: 'Hypercore 10', ingestMiBs, readMiBs: n / MiB / secsSince(t), note: 'not encrypted, not fsynced' };
  } finally {
    await core.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
