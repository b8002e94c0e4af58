/**
 * A member behind NAT (issue 33, item 5): three members in network namespaces (test/netns.ts),
 * member 2 behind a NAT of its own (masquerade, nothing in) that no member can dial.
 *
 *   0: public, founder, keyed, serves the relay (--relay-serve)
 *   1: public, keyed, writes; reaches 2 only through the relay (2's router drops the traffic
 *      between them, as between two members behind different NATs)
 *   2: behind NAT, keyed, reserves a slot on 0 (--relay-via) and announces 0's /p2p-circuit address
 *
 * Checks: the premise (a direct dial to 2, at its private address or its router's public one,
 * fails from a public member); 2 joins and every member sees every other alive; blocks that 1
 * writes reach 2 (replicas 3 over 3 members) and 2 answers 1's proofs of storage with passes,
 * both of which cross the relay; a put through 2 with flush({ replicas: 3 }) completes and reads
 * back on 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type NodeProc, converged, dbApi, heldBlocks, keyFile, waitFor } from './cluster-harness.js';
import { NetLab, netnsUnavailable } from './netns.js';
import { LAB_PORT, labFounder, labJoin } from './netns-nodes.js';

const skip = netnsUnavailable();
if (skip) console.warn(`NAT tests skipped: ${skip}`);

const FLAGS = ['--proof-interval-ms', '1000', '--proof-deadline-ms', '2000', '--replication-factor', '3'];

/** Dials each address with a bare libp2p QUIC node run inside member i's namespace: 'ok' or 'fail' per address. */
async function dialFrom(lab: NetLab, i: number, addresses: string[]): Promise<string[]> {
  const script = `
    import { createLibp2p } from 'libp2p';
    import { quic } from '@chainsafe/libp2p-quic';
    import { multiaddr } from '@multiformats/multiaddr';
    const node = await createLibp2p({ addresses: { listen: ['/ip4/0.0.0.0/udp/0/quic-v1'] }, transports: [quic()] });
    for (const a of process.argv.slice(1)) {
      try { await node.dial(multiaddr(a), { signal: AbortSignal.timeout(5000) }); console.log('ok'); } catch { console.log('fail'); }
    }
    await node.stop();
    process.exit(0);`;
  const child = lab.exec(i, [process.execPath, '--input-type=module', '-e', script, ...addresses], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise((resolve) => child.once('exit', resolve));
  return out.trim().split('\n');
}

describe.skipIf(skip)('a member behind NAT, through a relay member', () => {
  let lab: NetLab;
  beforeAll(async () => {
    lab = await NetLab.create(3, { name: 'ouronat' });
  });
  afterAll(() => lab?.destroy());

  it('joins, holds replicated blocks, answers proofs and takes replicated puts, though no member can dial it', async () => {
    const { privateIp, publicIp } = await lab.natBehind(2);
    await lab.natCut(2, 1);
    const key = keyFile();
    const nodes: NodeProc[] = [];
    nodes[0] = await labFounder(lab, 0, { key, extra: ['--relay-serve', ...FLAGS] });
    nodes[1] = await labJoin(lab, 1, nodes[0], { key, extra: [...FLAGS, '--log-level', 'debug'] });
    const relay = nodes[0].address;
    expect(relay).toMatch(/\/quic-v1\/p2p\/[^/]+$/);
    nodes[2] = await labJoin(lab, 2, nodes[0], { key, extra: ['--relay-via', relay, ...FLAGS] });
    const nat = nodes[2];
    const all = nodes.map((n) => n.peerId);

    // The premise: nobody reaches it directly, not even the relay member.
    const direct = [`/ip4/${privateIp}/udp/${LAB_PORT}/quic-v1/p2p/${nat.peerId}`, `/ip4/${publicIp}/udp/${LAB_PORT}/quic-v1/p2p/${nat.peerId}`];
    expect(await dialFrom(lab, 0, direct)).toEqual(['fail', 'fail']);
    expect(await dialFrom(lab, 1, direct)).toEqual(['fail', 'fail']);

    await waitFor(() => nat.logs.some((l) => l.event === 'relay-reserved'), 30_000, 'a slot on the relay');
    await waitFor(() => converged(nodes, all), 60_000, 'three members, each alive to every other').catch(async (err: unknown) => {
      // Each member's view, and what it logged about the others, for the failure.
      const views = await Promise.all(nodes.map(async (n) => (await n.members()).members.map((m) => ({ peer: m.peerId.slice(-6), state: m.state, status: m.status, addresses: m.addresses }))));
      const logs = nodes.map((n) => n.logs.filter((l) => l.level >= 40 || /relay|own-addresses/.test(String(l.event))).slice(-15));
      throw new Error(`${(err as Error).message}\n${JSON.stringify({ ids: all.map((p) => p.slice(-6)), views, logs }, null, 1)}`);
    });
    // The members list it at the relay's circuit address only.
    const listed = (await nodes[1]!.members()).members.find((m) => m.peerId === nat.peerId)!.addresses;
    expect(listed).toEqual([`${relay}/p2p-circuit/p2p/${nat.peerId}`]);

    // Replication to it, from the member that reaches it only through the relay.
    const written: Array<{ hash: string; value: string }> = [];
    for (let k = 0; k < 6; k++) {
      const value = `from-1-${k}-${'x'.repeat(20_000 * k)}`;
      written.push({ hash: (await dbApi.put(nodes[1]!, value, { key: `k${k}` })).hash, value });
    }
    await dbApi.json(nodes[1]!, '/db/flush', 'POST', { replicas: 3 });
    const ofWriter = await heldBlocks(nodes[1]!);
    expect(ofWriter.length).toBeGreaterThan(0);
    await waitFor(async () => ((held) => ofWriter.every((b) => held.has(b)))(new Set(await heldBlocks(nat))), 30_000, 'the NATed member holds the blocks 1 wrote');

    // Proofs of storage, asked by 1 through the relay: passes, and no failure or late one.
    await waitFor(
      async () => {
        await nodes[1]!.post('/proofs/round', {});
        return nodes[1]!.logs.some((l) => l.event === 'proof-pass' && l.peer === nat.peerId);
      },
      30_000,
      'a passed proof from the NATed member',
    );
    expect(nodes[1]!.logs.filter((l) => (l.event === 'proof-fail' || l.event === 'proof-late') && l.peer === nat.peerId)).toEqual([]);

    // A replicated put through it completes, and reads back on the member behind the relay.
    const through = (await dbApi.put(nat, 'written-behind-nat', { key: 'nat' })).hash;
    await dbApi.json(nat, '/db/flush', 'POST', { replicas: 3 });
    await waitFor(async () => (await dbApi.get(nodes[1]!, `/db/objects/${through}`)).status === 200, 30_000, 'the put through 2 reads back on 1');
    expect((await dbApi.value(nodes[1]!, through)).toString()).toBe('written-behind-nat');
    for (const w of written) expect((await dbApi.value(nat, w.hash)).toString()).toBe(w.value);
  }, 240_000);
});
