/**
 * Cluster operations on real `ouro node start` processes over loopback QUIC (issue 7): draining
 * a member, and losing two members of five at once.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { replicaSet } from '../carrier/placement.js';
import { pseudoRandom } from './helpers.js';
import { filesUnder } from './files.js';
import { type NodeProc, converged, heldBlocks as held, dbApi, founderWithDb, joinKeyless, joinWithDb, keyFile, ouro, ouroJson, waitFor } from './cluster-harness.js';


/** Every file named `<id>.blk` under `dir`, wherever it sits (blocks, replicas). */
function blockFiles(dir: string, id: string): string[] {
  return filesUnder(dir).filter((f) => path.basename(f) === `${id}.blk`);
}

/** Whether each node holds exactly the blocks placement over `members` gives it (of `blocks`). */
async function holdsPlacement(nodes: NodeProc[], blocks: string[], members: string[], rf: number): Promise<boolean> {
  for (const n of nodes) {
    const want = blocks.filter((id) => replicaSet(id, members, rf).includes(n.peerId)).sort();
    if ((await held(n)).sort().join() !== want.join()) return false;
  }
  return true;
}

describe('cluster operations', () => {
  it('drain moves every block a member holds to the others, never below RF, then the member leaves', async () => {
    const key = keyFile();
    const a = await founderWithDb(key, ['--max-unsealed-ms', '100']);
    const [b, c, d] = [await joinKeyless(a), await joinKeyless(a), await joinKeyless(a)];
    const four = [a.peerId, b.peerId, c.peerId, d.peerId];
    await waitFor(() => converged([a, b, c, d], four), 20_000, 'four members');
    for (let i = 0; i < 12; i++) {
      await dbApi.put(a, pseudoRandom(`d${i}`, 30_000), { key: `d/${i}` });
      await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    }
    const blocks = (await held(a)).sort();
    expect(blocks.length).toBe(12);
    await waitFor(() => holdsPlacement([b, c, d], blocks, four, 3), 30_000, 'placement over four');
    const onD = await held(d);
    expect(onD.length).toBeGreaterThan(0);

    // Count every block's holders all through the drain: never fewer than three.
    let watching = true;
    let fewest = Infinity;
    let samples = 0;
    const watch = (async () => {
      while (watching) {
        // d (which only loses copies) is read before the others (which gain them), so a copy moving
        // from d to another member while a sample is taken is not missed on both. A node that did
        // not answer is not counted as holding nothing: that sample is skipped.
        const fromD = await held(d).then((ids) => new Set(ids), () => null);
        const sets = [fromD, ...(await Promise.all([a, b, c].map(async (n) => held(n).then((ids) => new Set(ids), () => null))))];
        if (sets.every((s) => s !== null)) {
          for (const id of blocks) fewest = Math.min(fewest, sets.filter((s) => s!.has(id)).length);
          samples++;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const r = await ouroJson<{ left: boolean }>(['node', 'drain', d.dir]);
    watching = false;
    await watch;
    expect(r.left).toBe(true);
    expect(samples).toBeGreaterThan(3);
    expect(fewest).toBeGreaterThanOrEqual(3);

    // d left (its own revocation), holds nothing, and every block is on its placement over three.
    const three = [a.peerId, b.peerId, c.peerId];
    expect(await held(d)).toEqual([]);
    expect(d.logs.some((l) => l.event === 'drained')).toBe(true);
    expect(d.logs.filter((l) => l.event === 'surplus-removed').map((l) => l.id).sort()).toEqual([...onD].sort());
    await waitFor(async () => (await a.members()).members.find((m) => m.peerId === d.peerId)?.revokedBy === d.peerId, 20_000, 'd left');
    // Left, not revoked: on the others and on itself.
    expect((await a.members()).members.find((m) => m.peerId === d.peerId)).toMatchObject({ status: 'left', state: null, draining: false });
    expect(await (await fetch(`${d.run.admin}/health`)).json()).toMatchObject({ status: 'left' });
    expect(await holdsPlacement([b, c], blocks, three, 3)).toBe(true);
    for (let i = 0; i < 12; i += 5) {
      const [head] = (await dbApi.json<{ heads: string[] }>(a, `/db/heads?key=d/${i}`)).heads;
      expect((await dbApi.value(a, head!)).equals(pseudoRandom(`d${i}`, 30_000))).toBe(true);
    }

    // Three members, RF 3: draining one more would leave blocks on fewer than three.
    const refused = await ouro(['--json', 'node', 'drain', c.dir]);
    expect(refused.code).toBe(9);
    expect(refused.stderr).toMatch(/OURO_REFUSED|add a member first/);
    expect((await c.members()).members.find((m) => m.peerId === c.peerId)?.status).toBe('member');
  });

  it('kill two of five with RF 3: every acknowledged write stays readable, RF is restored on the three left', async () => {
    const key = keyFile();
    const a = await founderWithDb(key);
    const b = await joinWithDb(a, key);
    const [c, d, e] = [await joinKeyless(a), await joinKeyless(a), await joinKeyless(a)];
    await waitFor(() => converged([a, b, c, d, e], [a.peerId, b.peerId, c.peerId, d.peerId, e.peerId]), 30_000, 'five members');

    const acked: Array<{ i: number; hash: string }> = [];
    let stop = false;
    const ingest = (async () => {
      for (let i = 0; !stop; i++) acked.push({ i, hash: (await dbApi.put(a, pseudoRandom(`k${i}`, 50_000 + (i % 5) * 3000), { key: `k/${i}` })).hash });
    })();
    await waitFor(() => acked.length >= 20, 30_000, 'first writes');
    // Two of the five at once, in the middle of the ingest.
    await Promise.all([c.kill9(), d.kill9()]);
    await waitFor(() => acked.length >= 45, 30_000, 'writes after two members died');
    stop = true;
    await ingest;
    await dbApi.json(a, '/db/flush', 'POST', {});

    // Every acknowledged write reads back on the other keyed member, byte for byte.
    await waitFor(async () => {
      for (const w of acked) if ((await dbApi.get(b, `/db/objects/${w.hash}`)).status !== 200) return false;
      return true;
    }, 60_000, 'acknowledged writes on b');
    for (const w of acked) expect((await dbApi.value(b, w.hash)).equals(pseudoRandom(`k${w.i}`, 50_000 + (w.i % 5) * 3000))).toBe(true);
    // c and d are dead past the grace: RF 3 over the three left means every block on a, b and e.
    const blocks = (await held(a)).sort();
    expect(blocks.length).toBeGreaterThan(0);
    await waitFor(async () => {
      const [onB, onE] = [new Set(await held(b)), new Set(await held(e))];
      return blocks.every((id) => onB.has(id) && onE.has(id));
    }, 60_000, 'RF restored on three');
    // The writer sees it too: waiting for three replicas of everything it wrote resolves (it throws on failure).
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
  });

  it('deletion across the cluster: blocks gc retired on the writer leave every member, only after each let go of them', async () => {
    const key = keyFile();
    const a = await founderWithDb(key, ['--max-unsealed-ms', '100']);
    const b = await joinWithDb(a, key);
    const c = await joinKeyless(a);
    await waitFor(() => converged([a, b, c], [a.peerId, b.peerId, c.peerId]), 20_000, 'three members');
    const value = (name: string) => pseudoRandom(name, 200_000);
    // Block 1 mixes a value that stays with one that goes; block 2 holds only one that goes; block 3 stays.
    await dbApi.put(a, value('keep1'), { key: 'keep/1' });
    await dbApi.put(a, value('gone1'), { key: 'gone/1' });
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    const [x1] = await held(a);
    await dbApi.put(a, value('gone2'), { key: 'gone/2' });
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    const x2 = (await held(a)).find((id) => id !== x1)!;
    await dbApi.put(a, value('keep2'), { key: 'keep/2' });
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    await waitFor(async () => (await dbApi.get(b, '/db/value?key=keep/2')).status === 200, 20_000, 'b indexes everything');
    for (const n of [a, b, c]) for (const id of [x1!, x2]) expect(blockFiles(n.dir, id).length, `${id} on ${n.peerId}`).toBe(1);

    await dbApi.json(a, '/db/purge', 'POST', { key: 'gone/1' });
    await dbApi.json(a, '/db/purge', 'POST', { key: 'gone/2' });
    const gc = await dbApi.json<{ blocksRemoved: number }>(a, '/db/gc', 'POST', { threshold: 1 });
    expect(gc.blocksRemoved).toBe(2);
    // The writer's copies go at once; the others' only after every member released the blocks.
    // A member logs block-dropped once the file is gone (and its directory synced), and the log
    // line reaches us through a pipe: wait for both, or the check below races the log.
    const droppedIds = (n: NodeProc) => n.logs.filter((l) => l.event === 'block-dropped').map((l) => String(l.id));
    await waitFor(
      () => [a, b, c].every((n) => blockFiles(n.dir, x1!).length === 0 && blockFiles(n.dir, x2).length === 0) && [b, c].every((n) => droppedIds(n).includes(x1!) && droppedIds(n).includes(x2)),
      60_000,
      'copies deleted everywhere',
    ).catch(async (err: unknown) => {
      // It timed out once in a full run and never alone: say what each member did and what it holds.
      const events = /^(block-|retire-|repair-|fetch-|member-state|proof-)/;
      for (const n of [a, b, c]) console.log(n.peerId, JSON.stringify({ files: [x1, x2].map((id) => blockFiles(n.dir, id!).length), replication: (await n.get<{ replication?: unknown }>('/status').catch(() => ({ replication: null }))).replication, events: n.logs.filter((l) => events.test(String(l.event))).slice(-40) }));
      throw err;
    });
    for (const n of [b, c]) {
      const released = n.logs.filter((l) => l.event === 'block-released').map((l) => String(l.id));
      const dropped = droppedIds(n);
      expect(released.sort()).toEqual([x1!, x2].sort());
      expect(dropped.sort()).toEqual([x1!, x2].sort());
      // Each copy was deleted after its member released it, never before.
      for (const id of [x1!, x2]) {
        const at = (event: string) => n.logs.findIndex((l) => l.event === event && l.id === id);
        expect(at('block-dropped')).toBeGreaterThan(at('block-released'));
      }
    }
    // On the keyed member, what gc moved out of block 1 was re-pointed to the writer's new block, not copied.
    const r1 = b.logs.find((l) => l.event === 'block-released' && l.id === x1) as unknown as { repointed: number };
    expect(r1.repointed).toBeGreaterThan(0);
    // The values that stay read back on both keyed members, and the cluster's holders stay consistent.
    for (const n of [a, b]) {
      expect(Buffer.from(await (await dbApi.get(n, '/db/value?key=keep/1')).arrayBuffer()).equals(value('keep1'))).toBe(true);
      expect(Buffer.from(await (await dbApi.get(n, '/db/value?key=keep/2')).arrayBuffer()).equals(value('keep2'))).toBe(true);
    }
    await waitFor(async () => (await a.get<{ replication: { deleting: number } }>('/status')).replication.deleting === 0, 20_000, 'writer finished');
    for (const n of [a, b, c]) expect((await held(n)).filter((id) => id === x1 || id === x2)).toEqual([]);
  });
});
