/**
 * The writing member of bench/net.ts, run inside a lab namespace (test/netns.ts): `node
 * dist/bench/net-writer.js DIR JSON` with JSON = { listen, replica: { argv, dir, listen }, trips,
 * blockMiB }. It starts a member with the database listening on `listen`, starts the keyless
 * replica (bench/replica-peer.js) through `replica.argv` (the prefix that runs it inside the other
 * namespace), joins it, and measures across the link between them, in one run:
 *   - one raw libp2p stream to the replica: MiB/s of `blockMiB` MiB in 64 KiB writes to a sink;
 *   - the push of one sealed block of the same size: `flush({ replicas: 2 })` after the seal;
 *   - round trips of 1 KiB on one open raw stream (echo), p50/p99;
 *   - a 1 KiB put made durable on both members (`put` + `flush({ replicas: 2 })`), p50/p99.
 * Prints the figures as one JSON line, then stops the replica and itself.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { peerIdFromString } from '@libp2p/peer-id';
import { Node } from '../carrier/node.js';
import { OuroDB } from '../lib/index.js';
import { quantile, rawStreamThroughput } from './carrier.js';

const MiB = 1 << 20;
const started = performance.now();
/** Progress on stderr (the figures go to stdout): a slow link makes each step long. */
const progress = (what: string) => process.stderr.write(`net-writer ${((performance.now() - started) / 1000).toFixed(1)} s: ${what}\n`);
const [dir, json] = process.argv.slice(2);
if (!dir || !json) throw new Error('usage: net-writer.js DIR JSON');
const opts = JSON.parse(json) as { listen: string; replica: { argv: string[]; dir: string; listen: string }; trips: number; blockMiB: number };
// Defaults otherwise (heartbeats, request time limit): the link is what is measured, as deployed.
const config = { listen: [opts.listen], replication: { factor: 2, maxUnsealedMs: 3_600_000, repairIntervalMs: 3_600_000 } };
await Node.init(dir, { newCluster: true, config });
const key = crypto.randomBytes(32);
let db = await OuroDB.open(path.join(dir, 'db'), { key, blockSize: (opts.blockMiB + 4) * MiB, compression: false, maxUnsealedMs: 3_600_000 });
let node = await Node.start({ dir, db, config });
const { token } = await node.createToken(60_000);
const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'replica-peer.js');
const [cmd, ...prefix] = opts.replica.argv;
const replica = spawn(cmd!, [...prefix, process.execPath, script, opts.replica.dir, JSON.stringify({ ...config, listen: [opts.replica.listen] }), token, ...node.carrier.addresses], { stdio: ['ignore', 'pipe', 'inherit'] });
try {
  const line = await new Promise<string>((resolve, reject) => {
    replica.once('exit', (code) => reject(new Error(`the replica exited ${code} before it ran`)));
    readline.createInterface({ input: replica.stdout! }).once('line', resolve);
  });
  const peerId = (JSON.parse(line) as { peerId: string }).peerId;
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 600 && !check(); i++) await new Promise((r) => setTimeout(r, 100));
    if (!check()) throw new Error('the replica was never seen alive');
  };
  await until(() => node.memberViews().some((m) => m.peerId === peerId && m.state === 'alive'));

  progress('the replica is alive');
  const total = opts.blockMiB * MiB;
  const raw = await rawStreamThroughput(await node.carrier.node.dialProtocol(peerIdFromString(peerId), '/ouro-bench/replication-sink/1'), total);
  const cipher = crypto.createCipheriv('chacha20', crypto.randomBytes(32), Buffer.alloc(16));
  await db.put(cipher.update(Buffer.alloc(total)), { durability: 'relaxed' });
  progress(`raw stream ${raw.toFixed(2)} MiB/s`);
  await db.flush();
  const t0 = performance.now();
  await db.flush({ replicas: 2 });
  const push = (await db.stats()).storedBytes / MiB / ((performance.now() - t0) / 1000);

  progress(`push ${push.toFixed(2)} MiB/s`);
  // Round trips: 1 KiB each way on one open raw stream, against a 1 KiB put held by both members.
  const echo = await node.carrier.node.dialProtocol(peerIdFromString(peerId), '/ouro-bench/replication-echo/1');
  const it = echo[Symbol.asyncIterator]();
  const rtts: number[] = [];
  for (let i = 0; i < opts.trips; i++) {
    const t = performance.now();
    echo.send(crypto.randomBytes(1024));
    for (let got = 0; got < 1024; ) got += (await it.next()).value!.byteLength;
    rtts.push(performance.now() - t);
  }
  await echo.close();
  progress('round trips done');
  // Default-size blocks again, each 1 KiB put sealed and pushed on the flush (as a deployment).
  await node.stop();
  await db.close();
  db = await OuroDB.open(path.join(dir, 'db'), { key, compression: false, maxUnsealedMs: 3_600_000 });
  node = await Node.start({ dir, db, config });
  await until(() => node.memberViews().some((m) => m.peerId === peerId && m.state === 'alive'));
  const puts: number[] = [];
  for (let i = 0; i < opts.trips; i++) {
    const t = performance.now();
    await db.put(crypto.randomBytes(1024));
    await db.flush({ replicas: 2 });
    puts.push(performance.now() - t);
  }
  rtts.sort((a, b) => a - b);
  puts.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ rawMiBs: raw, pushMiBs: push, rawRttP50: quantile(rtts, 0.5), rawRttP99: quantile(rtts, 0.99), putReplicatedP50: quantile(puts, 0.5), putReplicatedP99: quantile(puts, 0.99) }) + '\n');
} finally {
  replica.kill('SIGTERM');
  await node.stop();
  await db.close();
}
