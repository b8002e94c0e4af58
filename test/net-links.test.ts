/**
 * Slow, lossy, asymmetric and flapping links (issue 33, items 3 and 4): three members in network
 * namespaces (test/netns.ts), with the link between them broken in each of these ways in turn.
 *
 *   - A slow, lossy link (100 ms round trip, 1% loss each way) between {0, 1} and {2}, keyed
 *     writers on both sides, RF 3: `flush({ replicas: 3 })` answers across it both ways, for small
 *     blocks and for one pushed on a stream of its own; repair brings member 2 what was written
 *     while it was cut off, across the same link; no member is declared dead for the link alone.
 *   - An asymmetric link: packets from 1 to 2 dropped, 2 to 1 passing. Writes from 0 go on
 *     reaching both; 1 and 2 do not flap each other between alive and dead.
 *   - A flapping link: member 2 cut off for 3 s in every 7 s, six times, while 0 writes. The
 *     failure detector (its flap damping, docs/node.md "Failure detection") stops taking 2
 *     through dead after the first cycles; afterwards every block is on every member.
 * Transitions are counted from the nodes' own `member-state` log lines.
 */
import crypto from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type LogLine, type NodeProc, converged, dbApi, heldBlocks, keyFile, waitFor } from './cluster-harness.js';
import { NetLab, netnsUnavailable } from './netns.js';
import { labFounder, labJoin } from './netns-nodes.js';

const skip = netnsUnavailable();
if (skip) console.warn(`net-links tests skipped: ${skip}`);

const RF3 = ['--replication-factor', '3', '--no-proofs'];
/**
 * The slow-link test's detector: suspect after 2 s, dead after 6 s (the defaults' proportions at a
 * test's pace). FAST's dead-after 2 s is shorter than the stalls a loaded CI machine gives a node
 * (a run at 37 minutes saw one member dead for 2 s of silence), which is not what this asserts.
 */
const PATIENT = ['--suspect-after-ms', '2000', '--dead-after-ms', '6000'];
const SLOW = { delayMs: 50, lossPct: 1 };

/** `node`'s member-state transitions about `peer` (as `from>to`), from log line `since` on. */
function transitions(node: NodeProc, peer: string, since = 0): string[] {
  return node.logs.slice(since).filter((l: LogLine) => l.event === 'member-state' && l.peer === peer).map((l) => `${String(l.from)}>${String(l.to)}`);
}

/** Every block any of `nodes` holds is held by all of them (RF 3 over three members). */
async function everywhere(nodes: NodeProc[]): Promise<boolean> {
  const held = await Promise.all(nodes.map(async (n) => new Set(await heldBlocks(n))));
  const all = new Set(held.flatMap((s) => [...s]));
  return [...all].every((id) => held.every((s) => s.has(id)));
}

describe.skipIf(skip)('slow, lossy, asymmetric and flapping links', () => {
  let lab: NetLab;
  beforeAll(async () => {
    lab = await NetLab.create(3, { name: 'ourolinks' });
  });
  afterAll(() => lab?.destroy());
  afterEach(() => lab?.heal());

  it('across 100 ms RTT and 1% loss: flush({ replicas }) both ways, a streamed block, repair after a cut; no member dead for the link alone', async () => {
    const key = keyFile();
    const nodes: NodeProc[] = [];
    nodes[0] = await labFounder(lab, 0, { key, extra: [...RF3, ...PATIENT] });
    nodes[1] = await labJoin(lab, 1, nodes[0], { key, extra: [...RF3, ...PATIENT] });
    nodes[2] = await labJoin(lab, 2, nodes[0], { key, extra: [...RF3, ...PATIENT] });
    const ids = nodes.map((n) => n.peerId);
    await waitFor(() => converged(nodes, ids), 30_000, 'three members');
    await lab.shape([0, 1], [2], SLOW);
    const logFrom = nodes.map((n) => n.logs.length);

    // Writers on both sides; each flush waits until all three hold every block it sealed.
    const acked: Array<{ hash: string; value: string }> = [];
    const put = async (w: number, value: string) => acked.push({ hash: (await dbApi.put(nodes[w]!, value)).hash, value });
    for (let i = 0; i < 10; i++) await put(0, `zero ${i}`);
    // Incompressible past 60 KiB: its block goes on a block-put stream of its own.
    const big = crypto.randomBytes(2 * 2 ** 20).toString('base64');
    await put(0, big);
    // ~2.7 MiB at the ~0.1 MiB/s QUIC carries here (bench/net.ts), slower while its window recovers from a run of losses.
    await dbApi.json(nodes[0]!, '/db/flush', 'POST', { replicas: 3, timeoutMs: 150_000 });
    for (let i = 0; i < 10; i++) await put(2, `two ${i}`);
    await dbApi.json(nodes[2]!, '/db/flush', 'POST', { replicas: 3 });
    expect(await everywhere(nodes)).toBe(true);

    // Repair across the slow link: 2 cut off while 0 writes (held by 0 and 1), then the slow link again.
    const logsAtCut = nodes.map((n) => n.logs.length);
    await lab.partition([[0, 1], [2]]);
    await waitFor(async () => (await nodes[0]!.members()).members.find((m) => m.peerId === ids[2])!.state === 'dead', 15_000, '2 dead to 0');
    for (let i = 0; i < 10; i++) await put(0, `cut ${i}`);
    await dbApi.json(nodes[0]!, '/db/flush', 'POST', { replicas: 2 });
    const before = new Set(await heldBlocks(nodes[2]!));
    const written = await heldBlocks(nodes[0]!);
    // The premise: 2 lacks what was written while it was cut off.
    expect(written.filter((id) => !before.has(id)).length).toBeGreaterThan(0);
    await lab.heal();
    await lab.shape([0, 1], [2], SLOW);
    await waitFor(() => everywhere(nodes), 60_000, 'repair to bring 2 every block across the slow link');
    for (const a of acked) for (const n of nodes) expect((await dbApi.value(n, a.hash)).toString(), `${a.hash} on ${n.peerId}`).toBe(a.value);

    // Before the cut, the slow link alone took no member to dead, on either side.
    const slow = nodes.map((n, i) => n.logs.slice(logFrom[i], logsAtCut[i]).filter((l) => l.event === 'member-state').map((l) => `${ids.indexOf(String(l.peer))}:${String(l.from)}>${String(l.to)}`));
    console.log(JSON.stringify({ slowLinkTransitions: slow }));
    for (const t of slow) expect(t.filter((x) => x.endsWith('>dead'))).toEqual([]);
    // And no transfer across it was cut off by a time limit: a push that keeps moving goes on
    // (with 1 s per MiB, as before 2026-12, this block's push was cut off and retried).
    const cutOff = nodes.flatMap((n, i) => n.logs.slice(logFrom[i], logsAtCut[i]).filter((l) => typeof l.event === 'string' && l.event.endsWith('-failed') && /time limit/.test(String(l.err))));
    expect(cutOff).toEqual([]);
  }, 240_000);

  it('an asymmetric link and a flapping one: no flapping between alive and dead on every cycle, and no block dropped', async () => {
    const key = keyFile();
    const nodes: NodeProc[] = [];
    nodes[0] = await labFounder(lab, 0, { key, extra: RF3 });
    nodes[1] = await labJoin(lab, 1, nodes[0], { key, extra: RF3 });
    nodes[2] = await labJoin(lab, 2, nodes[0], { extra: RF3 });
    const ids = nodes.map((n) => n.peerId);
    await waitFor(() => converged(nodes, ids), 30_000, 'three members');

    const acked: Array<{ hash: string; value: string }> = [];
    let writing = true;
    const errors: string[] = [];
    const writer = (async () => {
      for (let n = 0; writing; n++) {
        try {
          acked.push({ hash: (await dbApi.put(nodes[0]!, `w ${n}`)).hash, value: `w ${n}` });
        } catch (err) {
          errors.push((err as Error).message);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    // Asymmetric: 1 -> 2 dropped, 2 -> 1 passing, for 12 s (six times the dead timeout).
    let from = nodes.map((n) => n.logs.length);
    await lab.cut(1, 2);
    await new Promise((r) => setTimeout(r, 12_000));
    // 0 reaches both throughout: a flush for all three answers.
    await dbApi.json(nodes[0]!, '/db/flush', 'POST', { replicas: 3 });
    const asym = { oneSeesTwo: transitions(nodes[1]!, ids[2]!, from[1]), twoSeesOne: transitions(nodes[2]!, ids[1]!, from[2]), zeroSeesOne: transitions(nodes[0]!, ids[1]!, from[0]), zeroSeesTwo: transitions(nodes[0]!, ids[2]!, from[0]) };
    await lab.heal();
    await waitFor(() => converged(nodes, ids), 30_000, 'three members alive after the one-way cut');
    console.log(JSON.stringify({ asymmetric: asym }));
    expect(asym.zeroSeesOne).toEqual([]);
    expect(asym.zeroSeesTwo).toEqual([]);
    // At most one trip to dead each way, not one per heartbeat or per reconnection.
    for (const seen of [asym.oneSeesTwo, asym.twoSeesOne]) expect(seen.filter((t) => t.endsWith('>dead')).length).toBeLessThanOrEqual(1);

    // Flapping: 2 cut off from both others for 3 s in every 7 s, six times.
    from = nodes.map((n) => n.logs.length);
    const CYCLES = 6;
    const perCycle: number[] = [];
    for (let c = 0; c < CYCLES; c++) {
      const at = nodes[0]!.logs.length;
      await lab.partition([[0, 1], [2]]);
      await new Promise((r) => setTimeout(r, 3000));
      await lab.heal();
      await new Promise((r) => setTimeout(r, 4000));
      perCycle.push(transitions(nodes[0]!, ids[2]!, at).filter((t) => t.endsWith('>dead')).length);
    }
    writing = false;
    await writer;
    const flaps = { zeroSeesTwo: transitions(nodes[0]!, ids[2]!, from[0]), twoSeesZero: transitions(nodes[2]!, ids[0]!, from[2]), deadPerCycle: perCycle };
    console.log(JSON.stringify({ flapping: flaps, acked: acked.length, errors }));
    // The premise: the first cycle did take 2 through dead (down longer than the dead timeout).
    expect(perCycle[0]).toBe(1);
    // Damped: the last half of the cycles no longer do, on either side.
    expect(perCycle.slice(CYCLES / 2)).toEqual(perCycle.slice(CYCLES / 2).map(() => 0));
    expect(flaps.twoSeesZero.filter((t) => t.endsWith('>dead')).length).toBeLessThan(CYCLES / 2 + 1);

    // No block dropped: every block is on all three (RF 3), every acknowledged write reads back on both keyed members.
    expect(errors).toEqual([]);
    await dbApi.json(nodes[0]!, '/db/flush', 'POST', { replicas: 3 });
    await waitFor(() => everywhere(nodes), 30_000, 'every block on all three');
    for (const a of acked) for (const n of [nodes[0]!, nodes[1]!]) expect((await dbApi.value(n, a.hash)).toString()).toBe(a.value);
  });
});
