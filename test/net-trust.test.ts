/**
 * Members that misbehave (issue 33, item 6), between real `ouro node` processes on loopback: a
 * revoked member that kept its directory (its key, and a copy of the list from before its
 * revocation) signs a list approving a stranger, revoking an honest member and changing the
 * replication factor, and a real process gossips it to a member that was down during the
 * revocation. That member takes it (it cannot know better yet); once it hears the revocation,
 * none of it counts anywhere, and what the revoked key signed never comes back. And join tokens
 * made on one member admit through any other, once, until they expire. And a stranger flooding
 * the join protocol and opening streams in a loop is refused for its rate, while members go on.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { describe, expect, it } from 'vitest';
import { ClusterFiles } from '../carrier/cluster-files.js';
import { loadIdentity } from '../carrier/identity.js';
import { Carrier, protocolId } from '../carrier/carrier.js';
import { JOIN_PROTOCOL } from '../carrier/joins.js';
import { change, verify } from '../carrier/membership.js';
import { FAST_FLAGS, type MembersView, type NodeProc, converged, dbApi, founder, founderWithDb, joinByToken, joinKeyless, keyFile, ouro, ouroJson, startNode, waitFor } from './cluster-harness.js';
import { tempDir } from './helpers.js';

const statusIn = (v: MembersView, peer: string) => v.members.find((m) => m.peerId === peer)?.status;

describe('a revoked member that kept its key', () => {
  it('signs an approval, a revocation and a factor after its revocation: a member that took them drops them once it hears the revocation, and no member accepts them', async () => {
    let a = await founder();
    let b = await joinByToken(a);
    const c = await joinByToken(a);
    let d = await joinByToken(a);
    await waitFor(() => converged([a, b, c, d], [a.peerId, b.peerId, c.peerId, d.peerId]), 30_000, 'four members');
    const factor = async (n: NodeProc) => (await n.get<{ replication: { factor: number } }>('/status')).replication.factor;
    expect(await factor(a)).toBe(3);

    // C's operator keeps a copy of the list as it is now, and C's identity stays in its directory.
    const old = (await new ClusterFiles(c.dir).readList())!;
    const cKey = await loadIdentity(c.dir);
    await d.stop(); // down while C is revoked: it will not have heard
    await ouroJson(['cluster', '--dir', a.dir, 'revoke', c.peerId]);
    await waitFor(async () => statusIn(await b.members(), c.peerId) === 'revoked', 15_000, 'B to hear of the revocation');
    await c.stop();
    const [aDir, bDir] = [a.dir, b.dir];
    await Promise.all([a.stop(), b.stop()]);

    // After its revocation, C signs on its old list: X approved, B revoked, the factor set to 1.
    const x = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString();
    const forged = await change(old, cKey, { approve: [{ peerId: x, addresses: [] }], revoke: [b.peerId], replicationFactor: 1 });
    await verify(forged);
    await new ClusterFiles(c.dir).writeList(forged);

    // C's process gossips it to D, which was down and holds the old list: D takes it (the premise).
    const c2 = await startNode(c.dir);
    d = await startNode(d.dir);
    await waitFor(async () => {
      const v = await d.members();
      return statusIn(v, x) === 'member' && statusIn(v, b.peerId) === 'revoked';
    }, 20_000, 'D to take the forged list');
    expect(await factor(d)).toBe(1);

    // A and B come back: D hears the revocation, and what C signed after it counts nowhere.
    a = await startNode(aDir);
    b = await startNode(bDir);
    await waitFor(() => converged([a, b, d], [a.peerId, b.peerId, d.peerId]), 30_000, 'A, B and D to converge without X');
    for (const n of [a, b, d]) {
      const v = await n.members();
      expect(statusIn(v, x)).toBeUndefined();
      expect(statusIn(v, b.peerId)).toBe('member');
      expect(statusIn(v, c.peerId)).toBe('revoked');
      expect(await factor(n)).toBe(3);
    }
    // C's own process learns it stays revoked (its forged revocation of B did not void A's of it).
    await waitFor(async () => (await fetch(`${c2.run.admin}/health`)).status === 503, 15_000, 'C to know it is revoked');
    expect(d.logs.some((l) => l.event === 'member-added' && l.peer === x)).toBe(true);
  }, 120_000);
});

describe('join tokens', () => {
  it('a token made on one member admits through another, once cluster-wide (two joiners racing through two members: one gets in), until it expires', async () => {
    const a = await founder();
    const b = await joinByToken(a);
    await waitFor(() => converged([a, b], [a.peerId, b.peerId]), 20_000, 'two members');
    const token = async (on: NodeProc, ttl = '5m') => (await ouroJson<{ token: string; expiresAt: number }>(['cluster', '--dir', on.dir, 'token', '--ttl', ttl]));
    const join = async (via: NodeProc, t: string) => {
      const r = await ouro(['--json', 'node', 'join', tempDir(), '--peer', via.address, '--token', t, ...FAST_FLAGS]);
      return { code: r.code, ...(JSON.parse(r.stdout) as { status: string; reason?: string; peerId?: string }) };
    };

    // Made on A, used through B: admitted; B logs the maker.
    const t1 = (await token(a)).token;
    const x = await join(b, t1);
    expect(x).toMatchObject({ code: 0, status: 'joined' });
    expect(b.logs.some((l) => l.event === 'join-approved' && l.by === 'token' && l.issuer === a.peerId)).toBe(true);
    expect(a.logs.some((l) => l.event === 'token-spent' && l.by === b.peerId)).toBe(true);
    await waitFor(async () => statusIn(await a.members(), x.peerId!) === 'member', 10_000, 'A to know the new member');
    // Spent for good, wherever it is tried next.
    for (const via of [a, b]) expect(await join(via, t1)).toMatchObject({ code: 9, status: 'rejected', reason: 'token-used' });

    // Two joiners race with one token made on B, one through A and one through B: only one gets in.
    const t2 = (await token(b)).token;
    const race = await Promise.all([join(a, t2), join(b, t2)]);
    expect(race.map((r) => r.status).sort()).toEqual(['joined', 'rejected']);
    expect(race.find((r) => r.status === 'rejected')!.reason).toBe('token-used');

    // Expired, through the member that did not make it.
    const short = await token(a, '1s');
    await waitFor(() => Date.now() > short.expiresAt + 50, 5000, 'the token to expire');
    expect(await join(b, short.token)).toMatchObject({ code: 9, status: 'rejected', reason: 'token-expired' });
    // A token nobody made is still unknown.
    expect(await join(b, `${t1.slice(0, t1.lastIndexOf('.'))}.${'A'.repeat(43)}`)).toMatchObject({ code: 9, status: 'rejected', reason: 'token-unknown' });
  }, 90_000);
});

describe('a non-member flooding a member', () => {
  it('is refused for its rate (typed, logged, counted) on the join protocol and on streams, while members heartbeat and a replicated put completes', async () => {
    const key = keyFile();
    const a = await founderWithDb(key);
    const b = await joinKeyless(a);
    await waitFor(() => converged([a, b], [a.peerId, b.peerId]), 20_000, 'two members');
    const flooder = await Carrier.start({ dir: tempDir() });
    // From here on (a node's start logs its own transitions, e.g. B heard at its join, then started).
    const logsFrom = [a.logs.length, b.logs.length];
    try {
      const outcomes = new Map<string, number>();
      const note = (o: string) => outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
      let stop = false;
      // Join requests on sessions and on a new stream each, and a members-only protocol, in loops.
      const loop = async (protocol: string, message: unknown, reuse: boolean) => {
        while (!stop) {
          try {
            const r = (await flooder.request(a.address, protocol, message, { reuse, timeoutMs: 5000 })) as { status?: string };
            note(`ok:${r?.status ?? '?'}`);
          } catch (err) {
            note((err as { code?: string }).code ?? 'error');
          }
        }
      };
      const join = { v: 1, addresses: flooder.addresses };
      const loops = [true, false].flatMap((reuse) => [loop(JOIN_PROTOCOL, join, reuse), loop(JOIN_PROTOCOL, join, reuse), loop(protocolId('heartbeat'), { v: 1, list: null }, reuse)]);
      const limited = () => outcomes.get('OURO_RATE_LIMITED') ?? 0;
      let put: { hash: string } | undefined;
      let flushed: { replicas: number } | undefined;
      try {
        await waitFor(() => limited() >= 200, 30_000, 'the flood to be limited');
        // Meanwhile the members replicate: a put on A, flushed to two members.
        put = await dbApi.put(a, 'written during a flood', { key: 'flood' });
        flushed = await dbApi.json<{ replicas: number }>(a, '/db/flush', 'POST', { replicas: 2, timeoutMs: 30_000 });
        // Several failure-detector periods of flood with the put done (suspectAfterMs is 800 ms).
        const more = limited() + 200;
        await waitFor(() => limited() >= more, 30_000, 'more of the flood');
      } finally {
        stop = true;
        await Promise.all(loops);
      }
      expect(flushed!.replicas).toBeGreaterThanOrEqual(2);
      // The flood met each kind of answer: first served (pending) or refused as a stranger, then limited.
      expect(outcomes.get('ok:pending') ?? 0).toBeGreaterThan(0);
      expect(outcomes.get('OURO_REFUSED') ?? 0).toBeGreaterThan(0);
      // Members never saw each other go quiet, and stay alive to each other.
      [a, b].forEach((n, i) => expect(n.logs.slice(logsFrom[i]).filter((l) => l.event === 'member-state' && l.to !== 'alive')).toEqual([]));
      expect(await converged([a, b], [a.peerId, b.peerId])).toBe(true);
      // Logged with its reason (at most once per 10 s per peer), counted in the metric.
      const logged = a.logs.filter((l) => l.event === 'rate-limited');
      expect(logged.length).toBeGreaterThan(0);
      expect(logged.length).toBeLessThan(5);
      expect(logged[0]).toMatchObject({ peer: flooder.peerId, reason: 'peer' });
      const metrics = await (await fetch(`${a.run.admin}/metrics`)).text();
      expect(Number(/^ouro_rate_limited_total\{reason="peer"\} (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(limited());
      expect((await a.get<{ pendingJoins: number }>('/status')).pendingJoins).toBe(1);
    } finally {
      await flooder.stop();
    }
  }, 120_000);
});
