/**
 * `--only ec-cluster`: what erasure coding costs and saves on a real cluster (issue 32), replicas
 * 3 against ec 4+2 in the same run, each on a fresh seven-member cluster in this process (a
 * writer with the database and six keyless members, real QUIC on loopback):
 *   - bytes on disk across the cluster per logical byte written, the writer's whole copy stated
 *     separately (the writer keeps every block it sealed, under either policy);
 *   - time to restore full health after one keyless member holding its share is stopped: until
 *     every block is held by three live members (replicas), or has six healthy shards on live
 *     members (ec), split into noticing (dead, plus the grace) and rebuilding.
 *   - reads at ec 4+2 on a third cluster: a member reading every coded block back from its shards
 *     with all members up (the K data shards, joined), against another member reading them with
 *     one member stopped and seen dead (decoded wherever that member held a data shard). Repair
 *     is held off there (a dead grace of an hour), so the degraded reads stay degraded.
 * The codec alone (decode against a plain join) is the `ec` part.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Node } from '../carrier/node.js';
import { smallBlockLine } from '../carrier/placement.js';
import { OuroDB } from '../lib/index.js';

const MiB = 1 << 20;

async function until(check: () => boolean | Promise<boolean>, what: string, limitMs = 600_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Bytes of the block and shard files under `dir` (not the database's index or WAL). */
function dataBytes(dir: string): { blocks: number; shards: number } {
  const out = { blocks: 0, shards: 0 };
  for (const name of fs.readdirSync(dir, { recursive: true }) as string[]) {
    if (name.includes('quarantine') || name.includes('incoming')) continue;
    if (name.endsWith('.blk')) out.blocks += fs.statSync(path.join(dir, name)).size;
    else if (name.endsWith('.shd') || name.endsWith('.manifest')) out.shards += fs.statSync(path.join(dir, name)).size;
  }
  return out;
}

export interface EcClusterFigures {
  mode: 'replicas 3' | 'ec 4+2';
  logicalMiB: number;
  /** Block and shard bytes on the six keyless members, per logical byte. */
  othersPerLogical: number;
  /** The writer's bytes (its whole copies, and its shards at ec), per logical byte. */
  writerPerLogical: number;
  lostMiB: number;
  noticedSec: number;
  rebuildSec: number;
  totalSec: number;
}

/**
 * A fresh seven-member cluster in this process under `root` (a writer with the database, six
 * keyless members), at `mode`, every member alive. `replication` overrides the bench's settings.
 */
async function sevenMembers(root: string, mode: EcClusterFigures['mode'], replicationOverrides: Record<string, number> = {}): Promise<{ a: Node; db: OuroDB; nodes: Node[]; dirs: string[] }> {
  const heartbeat = { intervalMs: 200, suspectAfterMs: 1000, deadAfterMs: 3000 };
  const replication = { factor: 3, maxUnsealedMs: 1000, deadGraceMs: 500, repairIntervalMs: 500, repairBytesPerSec: 1 << 30, ...replicationOverrides };
  const config = { heartbeat, replication, proofs: { enabled: false } };
  const dirs = Array.from({ length: 7 }, (_, i) => path.join(root, `n${i}`));
  await Node.init(dirs[0]!, { newCluster: true, config });
  const db = await OuroDB.open(path.join(dirs[0]!, 'db'), { key: crypto.randomBytes(32), blockSize: 4 * MiB, compression: false });
  const a = await Node.start({ dir: dirs[0]!, db, config });
  const nodes: Node[] = [a];
  try {
    for (const dir of dirs.slice(1)) {
      const { token } = await a.createToken(60_000);
      await Node.init(dir, { config });
      await Node.requestJoin(dir, a.carrier.addresses, token);
      nodes.push(await Node.start({ dir, config }));
    }
    await until(() => nodes.every((n) => n.role === 'member' && n.memberViews().filter((m) => m.status === 'member' && m.state === 'alive').length === 7), 'seven members');
    if (mode === 'ec 4+2') {
      await a.setRedundancy({ ec: { k: 4, m: 2 } });
      await until(() => nodes.every((n) => n.ecPolicy?.k === 4), 'ec 4+2 everywhere');
    }
    return { a, db, nodes, dirs };
  } catch (err) {
    await stopAll(nodes, db);
    throw err;
  }
}

async function stopAll(nodes: Node[], db: OuroDB): Promise<void> {
  for (const n of nodes.slice(1).reverse()) await n.stop().catch(() => {});
  await nodes[0]?.stop();
  await db.close();
}

/** `sizeMiB` of incompressible values put by the writer, flushed to full redundancy. */
async function fill(db: OuroDB, mode: EcClusterFigures['mode'], sizeMiB: number): Promise<void> {
  const cipher = crypto.createCipheriv('chacha20', crypto.randomBytes(32), Buffer.alloc(16));
  const zeros = Buffer.alloc(MiB);
  for (let done = 0; done < sizeMiB * MiB; done += zeros.length) await db.put(cipher.update(zeros), { durability: 'relaxed' });
  await db.flush(mode === 'ec 4+2' ? { shards: 6 } : { replicas: 3 });
}

async function one(mode: EcClusterFigures['mode'], sizeMiB: number): Promise<EcClusterFigures> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-ec-'));
  const { a, db, nodes, dirs } = await sevenMembers(root, mode);
  try {
    const nodeDirs = new Map(nodes.map((n, i) => [n, i]));
    await fill(db, mode, sizeMiB);
    const blocks = await a.replication.held();
    const logical = blocks.reduce((x, b) => x + b.size, 0);
    // Blocks under the small-block line (the last one sealed by the flush, at most) stay whole.
    const coded = new Set(mode === 'ec 4+2' ? blocks.filter((b) => b.size >= smallBlockLine(4)).map((b) => b.id) : []);
    const healthy = async (live: Node[]) => {
      const sets = await Promise.all(live.map(async (n) => new Set((await n.replication.held()).map((b) => b.id))));
      if (!blocks.every((b) => coded.has(b.id) || sets.filter((s) => s.has(b.id)).length >= 3)) return false;
      if (mode === 'ec 4+2') {
        // Six distinct shards of every block on the live members.
        const per = new Map([...coded].map((id) => [id, new Set<number>()]));
        for (const n of live) {
          for (const name of fs.readdirSync(dirs[nodeDirs.get(n)!]!, { recursive: true }) as string[]) {
            const m = /([0-9a-f]{64})\.(\d+)\.shd$/.exec(name);
            if (m && !name.includes('quarantine')) per.get(m[1]!)?.add(Number(m[2]));
          }
        }
        return [...per.values()].every((s) => s.size === 6);
      }
      return true;
    };
    await until(() => healthy(nodes), `${mode}: full health after the write`, 120_000);
    // Surplus copies from the write settle: disk figures once a pass found nothing to move.
    await new Promise((r) => setTimeout(r, 2000));
    const writer = dataBytes(dirs[0]!);
    const others = dirs.slice(1).map(dataBytes);
    const othersBytes = others.reduce((x, o) => x + o.blocks + o.shards, 0);
    const victimAt = 1 + others.map((o) => o.blocks + o.shards).indexOf(Math.max(...others.map((o) => o.blocks + o.shards)));
    const victim = nodes[victimAt]!;
    const lost = others[victimAt - 1]!.blocks + others[victimAt - 1]!.shards;
    const t0 = performance.now();
    await victim.stop();
    nodes.splice(victimAt, 1);
    let noticed = 0;
    await until(async () => {
      if (!noticed && a.replication.candidates().length === 6) noticed = performance.now();
      return noticed > 0 && (await healthy(nodes));
    }, `${mode}: full health after the loss`, 300_000);
    const t1 = performance.now();
    return {
      mode,
      logicalMiB: logical / MiB,
      othersPerLogical: othersBytes / logical,
      writerPerLogical: (writer.blocks + writer.shards) / logical,
      lostMiB: lost / MiB,
      noticedSec: (noticed - t0) / 1000,
      rebuildSec: (t1 - noticed) / 1000,
      totalSec: (t1 - t0) / 1000,
    };
  } finally {
    await stopAll(nodes, db);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

export interface EcReadFigures {
  blocks: number;
  MiB: number;
  healthyMiBs: number;
  degradedMiBs: number;
  /** Of the blocks the degraded pass read, how many needed decoding (the stopped member held a data shard). */
  decoded: number;
}

/** Metric `name`'s value on `node` (0 when absent). */
async function counter(node: Node, name: string): Promise<number> {
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(await node.metrics.registry.metrics());
  return m ? Number(m[1]) : 0;
}

/** Healthy against degraded reads of every coded block, two keyless readers (see the header). */
async function reads(sizeMiB: number): Promise<EcReadFigures> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-ec-'));
  const { a, db, nodes } = await sevenMembers(root, 'ec 4+2', { deadGraceMs: 3_600_000 });
  try {
    await fill(db, 'ec 4+2', sizeMiB);
    const coded = (await a.replication.held()).filter((b) => b.size >= smallBlockLine(4));
    const bytes = coded.reduce((x, b) => x + b.size, 0);
    const [healthyReader, degradedReader, stopped] = [nodes[1]!, nodes[2]!, nodes[3]!];
    const readAll = async (reader: Node) => {
      const t0 = performance.now();
      for (const b of coded) await reader.replication.fetchBlock(b.id);
      return bytes / MiB / ((performance.now() - t0) / 1000);
    };
    const healthyMiBs = await readAll(healthyReader);
    await stopped.stop();
    nodes.splice(3, 1);
    await until(() => degradedReader.memberViews().some((m) => m.peerId === stopped.peerId && m.state === 'dead'), 'the stopped member dead to the reader');
    const before = await counter(degradedReader, 'ouro_ec_degraded_reads_total');
    const degradedMiBs = await readAll(degradedReader);
    return { blocks: coded.length, MiB: bytes / MiB, healthyMiBs, degradedMiBs, decoded: (await counter(degradedReader, 'ouro_ec_degraded_reads_total')) - before };
  } finally {
    await stopAll(nodes, db);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

export async function ecClusterBench(sizeMiB: number): Promise<{ figures: EcClusterFigures[]; reads: EcReadFigures }> {
  return { figures: [await one('replicas 3', sizeMiB), await one('ec 4+2', sizeMiB)], reads: await reads(sizeMiB) };
}
