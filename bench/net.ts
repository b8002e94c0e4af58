/**
 * Replication across a slow, lossy link (`npm run bench -- --only net`; issue 33 item 3): two
 * members, each in a network namespace of its own (test/netns.ts), with 50 ms of delay each way
 * (100 ms round trip) and 1% loss each way between them. The writer (bench/net-writer.ts) and
 * the keyless replica (bench/replica-peer.ts) run as members do, each in its namespace. Measured
 * in one run, each beside a raw libp2p stream over the same link:
 *   - the push of one sealed 16 MiB block (`flush({ replicas: 2 })`) against 16 MiB on one raw stream;
 *   - a 1 KiB put made durable on two members, p50/p99, against a 1 KiB raw round trip.
 * And the same two figures with the link unshaped (the lab's own routing, no delay, no loss), so
 * that what the link costs is apart from what the lab costs.
 * Needs root, `ip netns`, nft and the wire (test/netns.ts); elsewhere it prints why and skips.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { NetLab, netnsUnavailable } from '../test/netns.js';

export interface NetFigures {
  rawMiBs: number;
  pushMiBs: number;
  rawRttP50: number;
  rawRttP99: number;
  putReplicatedP50: number;
  putReplicatedP99: number;
}

/** One writer/replica pair across the lab's link; the writer's figures. */
async function across(lab: NetLab, root: string, name: string, trips: number): Promise<NetFigures> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'net-writer.js');
  const a = lab.hosts[0]!;
  const b = lab.hosts[1]!;
  const opts = { listen: `/ip4/${a.ip}/udp/0/quic-v1`, replica: { argv: lab.wrap(1), dir: path.join(root, `${name}-b`), listen: `/ip4/${b.ip}/udp/0/quic-v1` }, trips, blockMiB: 16 };
  const child = lab.exec(0, [process.execPath, script, path.join(root, `${name}-a`), JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const line = await new Promise<string | undefined>((resolve) => {
    readline.createInterface({ input: child.stdout! }).once('line', resolve);
    void exited.then(() => resolve(undefined));
  });
  const code = await exited;
  if (line === undefined || code !== 0) throw new Error(`the writer exited ${code} without figures`);
  return JSON.parse(line) as NetFigures;
}

export async function netBench(quick: boolean): Promise<Record<string, unknown>> {
  const why = netnsUnavailable();
  if (why) {
    console.log(`\nnet: skipped (${why})`);
    return { skipped: why };
  }
  const trips = quick ? 20 : 60;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-net-'));
  const lab = await NetLab.create(2, { name: 'ourobench' });
  try {
    const plain = await across(lab, root, 'plain', trips);
    await lab.shape([0], [1], { delayMs: 50, lossPct: 1 });
    const shaped = await across(lab, root, 'shaped', trips);
    console.log('\nreplication across a link of 100 ms round trip and 1% loss each way (two members in namespaces; the lab unshaped beside it)');
    console.log('  link        raw stream MiB/s   push of a 16 MiB block MiB/s   ratio   raw 1 KiB RTT p50/p99 ms   1 KiB put on 2 members p50/p99 ms   p50 ratio');
    for (const [label, f] of [['unshaped', plain], ['100ms/1%', shaped]] as const) {
      const pair = (x: number, y: number) => `${x.toFixed(1)}/${y.toFixed(1)}`;
      console.log(`  ${label.padEnd(10)} ${f.rawMiBs.toFixed(2).padStart(17)} ${f.pushMiBs.toFixed(2).padStart(30)} ${(f.pushMiBs / f.rawMiBs).toFixed(2).padStart(7)} ${pair(f.rawRttP50, f.rawRttP99).padStart(26)} ${pair(f.putReplicatedP50, f.putReplicatedP99).padStart(35)} ${(f.putReplicatedP50 / f.rawRttP50).toFixed(2).padStart(11)}`);
    }
    return { unshaped: plain, shaped };
  } finally {
    await lab.destroy();
    fs.rmSync(root, { recursive: true, force: true });
  }
}
