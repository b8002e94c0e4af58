/**
 * Replication benchmarks (`npm run bench -- --only replication`): two members in this process on
 * loopback QUIC (a writer with the database, a keyless replica), in one run:
 *   - one raw libp2p stream from the writer to the replica: MiB/s of 64 KiB writes to a sink;
 *   - replication of one sealed block of the same size: `flush({ replicas: 2 })` after the data
 *     was written (seal, push over block-put, the replica's fsync and full check, its ack);
 *   - put latency of a 1 KiB value made durable locally (`put` + `flush()`) against the same put
 *     held by two members (`put` + `flush({ replicas: 2 })`), p50 and p99.
 * Both ends share this process's CPU in every row, so the ratios compare like with like.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Stream } from '@libp2p/interface';
import { Node } from '../carrier/node.js';
import { OuroDB } from '../lib/index.js';
import { quantile, rawStreamThroughput } from './carrier.js';

const MiB = 1 << 20;
const FAST = { heartbeat: { intervalMs: 200, suspectAfterMs: 1000, deadAfterMs: 3000 } };

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300 && !check(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!check()) throw new Error(`timed out waiting for ${what}`);
}

async function rawThroughput(from: Node, to: Node, total: number): Promise<number> {
  await to.carrier.node.handle('/ouro-bench/replication-sink/1', async (stream: Stream) => {
    let n = 0;
    for await (const piece of stream) n += piece.byteLength;
    const answer = Buffer.alloc(8);
    answer.writeBigUInt64BE(BigInt(n));
    stream.send(answer);
    await stream.close();
  });
  return rawStreamThroughput(await from.carrier.node.dialProtocol(to.carrier.node.peerId, '/ouro-bench/replication-sink/1'), total);
}

export async function replicationBench(quick: boolean): Promise<Record<string, unknown>> {
  const total = (quick ? 64 : 256) * MiB;
  const trips = quick ? 50 : 200;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-repl-'));
  const [dirA, dirB] = [path.join(root, 'a'), path.join(root, 'b')];
  const config = { ...FAST, replication: { factor: 2, maxUnsealedMs: 3_600_000, deadGraceMs: 60_000, repairIntervalMs: 3_600_000, repairBytesPerSec: 1 << 30 } };
  await Node.init(dirA, { newCluster: true, config });
  // One block holds the whole value, so the flush below pushes one block of `total` bytes.
  const db = await OuroDB.open(path.join(dirA, 'db'), { key: crypto.randomBytes(32), blockSize: total + 16 * MiB, compression: false, maxUnsealedMs: 3_600_000 });
  const a = await Node.start({ dir: dirA, db, config });
  let b: Node | undefined;
  try {
    const { token } = await a.createToken(60_000);
    await Node.init(dirB, { config });
    await Node.requestJoin(dirB, a.carrier.addresses, token);
    b = await Node.start({ dir: dirB, config });
    const peer = b;
    await until(() => peer.role === 'member' && a.memberViews().some((m) => m.peerId === peer.peerId && m.state === 'alive'), 'the replica to join');

    console.log(`\nreplication over QUIC, loopback, both members in this process (${total / MiB} MiB)`);
    const raw = await rawThroughput(a, b, total);
    const stream = async function* () {
      const seed = crypto.randomBytes(32);
      const cipher = crypto.createCipheriv('chacha20', seed, Buffer.alloc(16));
      const zeros = Buffer.alloc(4 * MiB);
      for (let done = 0; done < total; done += zeros.length) yield cipher.update(zeros);
    };
    await db.put(stream(), { durability: 'relaxed' });
    // The push starts when the seal registers the block (onSealed): time the seal on its own,
    // then the push (transfer, the replica's fsync and full check, its ack) from there.
    const t0 = performance.now();
    await db.flush();
    const t1 = performance.now();
    await db.flush({ replicas: 2 });
    const t2 = performance.now();
    const stored = (await db.stats()).storedBytes;
    const replicated = stored / MiB / ((t2 - t1) / 1000);
    console.log('  raw stream MiB/s   push of one sealed block MiB/s   ratio   (seal before it: ms)');
    console.log(`  ${raw.toFixed(1).padStart(16)} ${replicated.toFixed(1).padStart(31)} ${(replicated / raw).toFixed(2).padStart(7)} ${(t1 - t0).toFixed(0).padStart(12)}`);

    const local: number[] = [];
    const both: number[] = [];
    for (let i = 0; i < trips; i++) {
      let t = performance.now();
      await db.put(crypto.randomBytes(1024));
      await db.flush();
      local.push(performance.now() - t);
      t = performance.now();
      await db.put(crypto.randomBytes(1024));
      await db.flush({ replicas: 2 });
      both.push(performance.now() - t);
    }
    local.sort((x, y) => x - y);
    both.sort((x, y) => x - y);
    const pair = (s: number[]) => `${quantile(s, 0.5).toFixed(2)}/${quantile(s, 0.99).toFixed(2)}`;
    console.log('  1 KiB put made durable, p50/p99 ms: local (put + flush)   two members (put + flush({ replicas: 2 }))   p50 ratio');
    console.log(`  ${pair(local).padStart(54)} ${pair(both).padStart(44)} ${(quantile(both, 0.5) / quantile(local, 0.5)).toFixed(2).padStart(11)}`);
    return { rawMiBs: raw, replicatedMiBs: replicated, ratio: replicated / raw, sealMs: t1 - t0, putLocalP50: quantile(local, 0.5), putLocalP99: quantile(local, 0.99), putReplicatedP50: quantile(both, 0.5), putReplicatedP99: quantile(both, 0.99) };
  } finally {
    await b?.stop();
    await a.stop();
    await db.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}
