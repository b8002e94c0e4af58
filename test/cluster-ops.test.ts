/**
 * Cluster operations on real `ouro node start` processes over loopback QUIC (issue 7): draining
 * a member, and losing two members of five at once.
 */
import { describe, expect, it } from 'vitest';
import { replicaSet } from '../carrier/placement.js';
import { pseudoRandom } from './helpers.js';
import { type NodeProc, converged, dbApi, founderWithDb, joinKeyless, joinWithDb, keyFile, ouro, ouroJson, waitFor } from './cluster-harness.js';

/** The blocks a node holds now. */
async function held(node: NodeProc): Promise<string[]> {
  return (await node.get<{ blocks: Array<{ id: string }> }>('/replication/blocks')).blocks.map((b) => b.id);
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
        const sets = await Promise.all([a, b, c, d].map(async (n) => new Set(await held(n).catch(() => []))));
        for (const id of blocks) fewest = Math.min(fewest, sets.filter((s) => s.has(id)).length);
        samples++;
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
    expect(blocks.length).toBeGreaterThan(2);
    await waitFor(async () => {
      const [onB, onE] = [new Set(await held(b)), new Set(await held(e))];
      return blocks.every((id) => onB.has(id) && onE.has(id));
    }, 60_000, 'RF restored on three');
    // The writer sees it too: waiting for three replicas of everything it wrote resolves (it throws on failure).
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
  });
});
