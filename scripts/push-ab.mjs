/**
 * Push throughput of one build, for before/after comparisons of the replication path (see
 * docs/performance.md, "The push alone, many times over"): the set-up of bench/replication.ts's
 * push (a founder with one block holding the whole value, a keyless replica in a process of its
 * own from the same build), then ROUNDS times: put MiB of incompressible bytes, flush() (the seal),
 * and time flush({ replicas: 2 }) (the push, the replica's fsync and check, its ack).
 *
 *   node scripts/push-ab.mjs TREE [ROUNDS=3] [MiB=256]     (TREE: a built checkout, e.g. a worktree)
 *   RAW=1 ...   first runs the bench's two raw streams (to a sink, to a hashing sink), as the bench does
 *
 * Prints one line: the tree's name, [raw MiB/s ...], then the push MiB/s of each round. Alternate
 * builds in fresh processes (A B B A) and compare means: one push is one noisy sample.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { spawn } from 'node:child_process';
const [tree, roundsArg, mibArg] = process.argv.slice(2);
const { Node } = await import(path.join(tree, 'dist/carrier/node.js'));
const { OuroDB } = await import(path.join(tree, 'dist/lib/index.js'));
const MiB = 1 << 20;
const total = Number(mibArg ?? 256) * MiB;
const rounds = Number(roundsArg ?? 3);
const FAST = { heartbeat: { intervalMs: 200, suspectAfterMs: 1000, deadAfterMs: 3000 } };
const until = async (check) => { for (let i = 0; i < 300 && !check(); i++) await new Promise((r) => setTimeout(r, 100)); if (!check()) throw new Error('timeout'); };
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-push-'));
const [dirA, dirB] = [path.join(root, 'a'), path.join(root, 'b')];
const config = { ...FAST, replication: { factor: 2, maxUnsealedMs: 3_600_000, deadGraceMs: 60_000, repairIntervalMs: 3_600_000, repairBytesPerSec: 1 << 30 } };
await Node.init(dirA, { newCluster: true, config });
const key = crypto.randomBytes(32);
const db = await OuroDB.open(path.join(dirA, 'db'), { key, blockSize: total + 16 * MiB, compression: false, maxUnsealedMs: 3_600_000 });
const a = await Node.start({ dir: dirA, db, config });
const { token } = await a.createToken(60_000);
const child = spawn(process.execPath, [path.join(tree, 'dist/bench/replica-peer.js'), dirB, JSON.stringify(config), token, ...a.carrier.addresses], { stdio: ['ignore', 'pipe', 'inherit'] });
const line = await new Promise((resolve) => readline.createInterface({ input: child.stdout }).once('line', resolve));
const peerId = JSON.parse(line).peerId;
await until(() => a.memberViews().some((m) => m.peerId === peerId && m.status === 'member' && m.state === 'alive'));
const out = [];
if (process.env.RAW) {
  const { rawStreamThroughput } = await import(path.join(tree, 'dist/bench/carrier.js'));
  for (const proto of ['/ouro-bench/replication-sink/1', '/ouro-bench/replication-hashing-sink/1'])
    out.push('raw' + (await rawStreamThroughput(await a.carrier.node.dialProtocol(a.carrier.node.getPeers().find((p) => p.toString() === peerId), proto), total)).toFixed(0));
}
let prev = 0;
for (let r = 0; r < rounds; r++) {
  const stream = async function* () {
    const cipher = crypto.createCipheriv('chacha20', crypto.randomBytes(32), Buffer.alloc(16));
    const zeros = Buffer.alloc(4 * MiB);
    for (let done = 0; done < total; done += zeros.length) yield cipher.update(zeros);
  };
  await db.put(stream(), { durability: 'relaxed' });
  await db.flush();
  const t1 = performance.now();
  await db.flush({ replicas: 2 });
  const t2 = performance.now();
  const stored = (await db.stats()).storedBytes;
  out.push(((stored - prev) / MiB / ((t2 - t1) / 1000)).toFixed(0));
  prev = stored;
}
console.log(path.basename(tree), out.join(' '));
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
await a.stop();
await db.close();
fs.rmSync(root, { recursive: true, force: true });
process.exit(0);
