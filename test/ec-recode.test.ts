/**
 * Changing a cluster's K+M (issue 32, item 7: "or to another K+M"): four `ouro node` processes on
 * loopback QUIC go from ec 2+1 to ec 3+1. The writer's repair passes code each block again at 3+1
 * beside its 2+1 shards (docs/FORMAT.md, "Shard transfers and files": a second set is named by its
 * K+M), each member removes its 2+1 shards only once all four 3+1 shards are on the block's
 * placement, and every object reads back from the new shards on the other keyed member.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeManifest, verifyShard } from '../carrier/ec/manifest.js';
import { shardSet } from '../carrier/placement.js';
import { type NodeProc, dbApi, founderWithDb, joinKeyless, joinWithDb, keyFile, ouro, waitFor } from './cluster-harness.js';

/** Every shard set under a node's directory, each shard verified against its own manifest: `<block id> <K>+<M> <index>`. */
function shardSets(node: NodeProc): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, e.name);
      // Not `blocks/` (whole copies, never shards): a keyless member has 256 fan-out directories
      // there from its start, and walking them all made each sample below slower.
      if (e.isDirectory() && e.name !== 'quarantine' && e.name !== 'blocks') walk(file);
      else if (e.name.endsWith('.manifest')) {
        const stem = e.name.slice(0, -'.manifest'.length);
        const manifest = decodeManifest(fs.readFileSync(file));
        for (const n of fs.readdirSync(dir)) {
          const index = n.startsWith(`${stem}.`) && /^\d+\.shd$/.test(n.slice(stem.length + 1)) ? Number(n.slice(stem.length + 1, -4)) : undefined;
          if (index === undefined) continue;
          verifyShard(manifest, index, fs.readFileSync(path.join(dir, n)));
          out.push(`${manifest.block} ${manifest.k}+${manifest.m} ${index}`);
        }
      }
    }
  };
  walk(node.dir);
  return out;
}

// The re-coding's pushes at 400 KB/s, so that the samples below see it under way.
const FLAGS = ['--dead-grace-ms', '3600000', '--repair-bytes-per-sec', '400000'];

async function held(node: NodeProc): Promise<Set<string>> {
  return new Set((await node.get<{ blocks: Array<{ id: string }> }>('/replication/blocks')).blocks.map((b) => b.id));
}

describe('changing K+M', () => {
  it('re-codes a populated cluster from ec 2+1 to 3+1: the new shards on their placement before the old ones go, nothing lost', async () => {
    const key = keyFile();
    const a = await founderWithDb(key, FLAGS);
    const b = await joinWithDb(a, key, FLAGS);
    const keyless = [await joinKeyless(a, FLAGS), await joinKeyless(a, FLAGS)];
    const all = [a, b, ...keyless];
    const peers = all.map((n) => n.peerId);
    await waitFor(async () => (await a.members()).members.filter((m) => m.status === 'member' && (m.self || m.state === 'alive')).length === 4, 20_000, 'four live members');
    const policy = async (ec: string) => {
      const r = await ouro(['--json', 'cluster', '--dir', a.dir, 'redundancy', 'ec', ec]);
      expect(r.code, r.stderr).toBe(0);
      const want = JSON.stringify({ k: Number(ec[0]), m: Number(ec[2]) });
      for (const n of all) await waitFor(async () => JSON.stringify((await n.get<{ replication: { ec: unknown } }>('/status')).replication.ec) === want, 20_000, `ec ${ec} everywhere`);
    };
    await policy('2+1');

    // Blocks above the 3+1 line too (3 x 64 KiB), so that they stay coded after the change.
    const values = new Map<string, Buffer>();
    const blocks: string[] = [];
    for (let i = 0; i < 4; i++) {
      const before = await held(a);
      const value = crypto.randomBytes(250_000 + i * 10_000);
      values.set((await dbApi.put(a, value)).hash, value);
      await dbApi.json(a, '/db/flush', 'POST', { shards: 3, timeoutMs: 30_000 });
      blocks.push(...[...(await held(a))].filter((id) => !before.has(id)));
    }
    expect(blocks).toHaveLength(4);
    const sets = () => all.flatMap((n) => shardSets(n).map((s) => `${n.peerId} ${s}`));
    /** The shards of `id` at `km` on their placement (shard i on the i-th member): how many. */
    const placedCount = (list: string[], id: string, km: string) => {
      const [k, m] = km.split('+').map(Number) as [number, number];
      return shardSet(id, peers, k, m).filter((peer, i) => list.includes(`${peer} ${id} ${km} ${i}`)).length;
    };
    for (const id of blocks) expect(placedCount(sets(), id, '2+1')).toBe(3);
    // b indexed each block and dropped its whole copy: what it reads later comes from shards.
    await waitFor(async () => {
      const h = await held(b);
      return blocks.every((id) => !h.has(id));
    }, 30_000, 'b to drop its whole copies');

    await policy('3+1');
    // While it runs, every block keeps one complete form: its three 2+1 shards, or its four 3+1.
    // (Collected, not asserted in the loop. A sample that throws, a shard caught mid-write, is
    // taken again.) Sampled every 20 ms, not waitFor's 100: both forms of a block stand side by
    // side for a few hundred ms (4 of 30 samples at 100 ms on a quiet machine), and one clean-clone
    // CI run, two test files at once on two cores, caught none.
    const samples: string[][] = [];
    const incomplete: string[] = [];
    for (const until = Date.now() + 90_000; ; await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > until) throw new Error('timed out waiting for every block at four 3+1 shards and no 2+1 shard left');
      let now: string[];
      try {
        now = sets();
      } catch {
        continue;
      }
      samples.push(now);
      for (const id of blocks) if (placedCount(now, id, '2+1') < 3 && placedCount(now, id, '3+1') < 4) incomplete.push(`${id} in sample ${samples.length}`);
      if (blocks.every((id) => placedCount(now, id, '3+1') === 4 && !now.some((s) => s.includes(`${id} 2+1`)))) break;
    }
    expect(incomplete).toEqual([]);
    // The premise: the two forms were there side by side at some point (the old ones removed after).
    const sideBySide = samples.filter((now) => blocks.some((id) => placedCount(now, id, '2+1') === 3 && placedCount(now, id, '3+1') === 4)).length;
    expect(sideBySide, `samples with both forms of a block, of ${samples.length}`).toBeGreaterThan(0);
    for (const n of all) await waitFor(async () => (await n.get<{ replication: { staleShards: number } }>('/status')).replication.staleShards === 0, 30_000, 'no stale shards reported');
    const health = (await a.get<{ replication: { shardHealth: { blocks: number; full: number } } }>('/status')).replication.shardHealth;
    expect(health).toMatchObject({ blocks: 4, full: 4 });

    // Nothing lost: every object reads back on b from the 3+1 shards.
    for (const [hash, value] of values) expect((await dbApi.value(b, hash)).equals(value)).toBe(true);
  }, 240_000);
});
