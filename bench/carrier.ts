/**
 * Carrier benchmarks (`npm run bench -- --only carrier`): over QUIC on loopback, between this
 * process and a peer process, in one run:
 *   - one raw libp2p stream: MiB/s of 64 KiB writes to a sink (the floor the carrier sits on);
 *   - the carrier: MiB/s of 1 MiB request frames, one stream per request;
 *   - round trips: a 1-byte echo on one open raw stream, and a small carrier request on a stream of
 *     its own and on the shared session stream (carrier/session.ts) (p50, p99);
 * each against a peer whose QUIC reads are 4 KiB pieces (the package's default) and one whose
 * reads are 64 KiB (our patch; patches/README.md).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { Carrier, protocolId } from '../carrier/index.js';
import { send } from '../carrier/send.js';

const MiB = 1 << 20;

async function startPeer(readBytes: number): Promise<{ child: ChildProcess; address: string }> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'carrier-peer.js');
  const child = spawn(process.execPath, [script, fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-peer-'))], { env: { ...process.env, OURO_QUIC_READ_BYTES: String(readBytes) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve) => readline.createInterface({ input: child.stdout! }).once('line', resolve));
  return { child, address: (JSON.parse(line) as { address: string }).address };
}

export function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function rawThroughput(c: Carrier, address: string, total: number): Promise<number> {
  return rawStreamThroughput(await c.node.dialProtocol(multiaddr(address), '/ouro-bench/raw-sink/1'), total);
}

/** The raw sink's side: counts every byte until the writer closes, then answers the count (u64 BE). */
export async function answerByteCount(stream: Stream): Promise<void> {
  let n = 0;
  for await (const piece of stream) n += piece.byteLength;
  await answer(stream, n);
}

/**
 * The same sink, but it SHA-256s every byte it receives, as a replica must before it may store a
 * block: the least any checked transfer costs beyond the raw stream (bench/replication.ts).
 */
export async function answerByteCountHashed(stream: Stream): Promise<void> {
  let n = 0;
  const hash = crypto.createHash('sha256');
  for await (const piece of stream) {
    n += piece.byteLength;
    hash.update(piece.subarray());
  }
  hash.digest();
  await answer(stream, n);
}

async function answer(stream: Stream, n: number): Promise<void> {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  stream.send(out);
  await stream.close();
}

/** MiB/s of `total` bytes in 64 KiB writes on a stream to a sink that answers the byte count (u64 BE). */
export async function rawStreamThroughput(stream: Stream, total: number): Promise<number> {
  const piece = new Uint8Array(64 * 1024).fill(7);
  // Listen from the start: libp2p 3 tells only readers already listening that the peer closed.
  const answered = Array.fromAsync(stream, (p) => p.subarray());
  const started = performance.now();
  for (let sent = 0; sent < total; sent += piece.length) await send(stream, piece);
  await stream.close();
  const answer = Buffer.concat(await answered);
  const seconds = (performance.now() - started) / 1000;
  if (Number(answer.readBigUInt64BE(0)) !== total) throw new Error('raw sink lost bytes');
  return total / MiB / seconds;
}

async function carrierThroughput(c: Carrier, address: string, total: number): Promise<number> {
  const frame = new Uint8Array(MiB).fill(3);
  const started = performance.now();
  for (let sent = 0; sent < total; sent += MiB) if ((await c.request(address, protocolId('bench-sink'), frame)) !== MiB) throw new Error('sink lost bytes');
  return total / MiB / ((performance.now() - started) / 1000);
}

async function rawRoundTrips(c: Carrier, address: string, n: number): Promise<number[]> {
  const stream = await c.node.dialProtocol(multiaddr(address), '/ouro-bench/raw-echo/1');
  const it = stream[Symbol.asyncIterator]();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    stream.send(new Uint8Array([i & 255]));
    await it.next();
    times.push(performance.now() - t);
  }
  await stream.close();
  return times.sort((a, b) => a - b);
}

async function carrierRoundTrips(c: Carrier, address: string, n: number, reuse: boolean): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await c.request(address, protocolId('bench-echo'), { i }, { reuse });
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b);
}

export async function carrierBench(quick: boolean): Promise<Record<string, unknown>> {
  const total = (quick ? 64 : 256) * MiB;
  const trips = quick ? 200 : 1000;
  const out: Record<string, unknown> = {};
  const client = await Carrier.start({ dir: fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-client-')), maxFrameBytes: 8 * MiB });
  console.log(`\ncarrier over QUIC, loopback, peer in another process (${total / MiB} MiB per throughput run)`);
  console.log('  peer QUIC read size   raw stream MiB/s   carrier 1 MiB requests MiB/s   ratio   raw RTT p50/p99 ms   request, own stream p50/p99 ms   request, session p50/p99 ms');
  try {
    for (const readBytes of [4096, 65536]) {
      const peer = await startPeer(readBytes);
      try {
        await c0(client, peer.address);
        const raw = await rawThroughput(client, peer.address, total);
        const framed = await carrierThroughput(client, peer.address, total);
        const rawRtt = await rawRoundTrips(client, peer.address, trips);
        const reqRtt = await carrierRoundTrips(client, peer.address, trips, false);
        const sesRtt = await carrierRoundTrips(client, peer.address, trips, true);
        const row = { rawMiBs: raw, carrierMiBs: framed, ratio: framed / raw, rawRttP50: quantile(rawRtt, 0.5), rawRttP99: quantile(rawRtt, 0.99), carrierRttP50: quantile(reqRtt, 0.5), carrierRttP99: quantile(reqRtt, 0.99), sessionRttP50: quantile(sesRtt, 0.5), sessionRttP99: quantile(sesRtt, 0.99) };
        out[`read${readBytes}`] = row;
        const pair = (a: number, b: number) => `${a.toFixed(2)}/${b.toFixed(2)}`;
        console.log(`  ${String(readBytes).padStart(8)} B ${raw.toFixed(1).padStart(20)} ${framed.toFixed(1).padStart(26)} ${row.ratio.toFixed(2).padStart(13)} ${pair(row.rawRttP50, row.rawRttP99).padStart(20)} ${pair(row.carrierRttP50, row.carrierRttP99).padStart(32)} ${pair(row.sessionRttP50, row.sessionRttP99).padStart(29)}`);
      } finally {
        peer.child.kill('SIGTERM');
        await client.node.hangUp(multiaddr(peer.address)).catch(() => {});
      }
    }
    const a = out['read4096'] as { rawMiBs: number }, b = out['read65536'] as { rawMiBs: number };
    console.log(`  64 KiB reads vs 4 KiB reads, raw stream: ${(b.rawMiBs / a.rawMiBs).toFixed(2)}x`);
    const c = out['read65536'] as { carrierRttP50: number; sessionRttP50: number; rawRttP50: number };
    console.log(`  small request p50, own stream vs shared session: ${(c.carrierRttP50 / c.sessionRttP50).toFixed(2)}x; session vs raw round trip: ${(c.sessionRttP50 / c.rawRttP50).toFixed(2)}x`);
  } finally {
    await client.stop();
  }
  return out;
}

/** Warms the connection (dial, TLS handshake) so that it is not timed. */
async function c0(c: Carrier, address: string): Promise<void> {
  await c.request(address, protocolId('bench-echo'), 0);
}
