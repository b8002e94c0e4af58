/**
 * A network partition with writers on both sides (issue 33, item 2), the Jepsen way: five members
 * in network namespaces (test/netns.ts), replication factor 3, split 3|2 while keyed writers on
 * both sides write, the same keys included; then healed, and every acknowledged write checked.
 *
 *   majority: 0 (founder, keyed, writes), 1 (keyed, writes), 2 (keyless)
 *   minority: 3 (keyed, writes), 4 (keyless)
 *
 * After the heal: every acknowledged write reads back on every keyed member; a key written on both
 * sides has a head from each (no silent overwrite); every block is on its placement over the five
 * (RF restored; at ec K+M, every coded block's K+M shards on its placement too); no member was
 * revoked or quarantined for having been on the other side. The replicas run splits for 30 s, the
 * issue's figure (the file takes about 80 s on two cores). The ec 2+1 run (values of 160 KiB, so
 * that blocks are coded: above 2 x 64 KiB; a 15 s split) runs only with OURO_PARTITION_EC=1: it
 * takes another 65 to 135 s here (20 to 61 s of it reading every write back after the heal).
 * The failed shard proofs and late verdicts that quarantined members after the heal are fixed
 * (docs/node.md, "Network partitions"); it stays opt-in for its time. During
 * the split the test reads what an operator sees (`/status`, `/cluster/status`, `/metrics`) on
 * both sides, and afterwards prints what the failure detector and the proofs did.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { replicaSet } from '../carrier/placement.js';
import { type NodeProc, converged, dbApi, keyFile, ouroJson, waitFor } from './cluster-harness.js';
import { pseudoRandom } from './helpers.js';
import { NetLab, netnsUnavailable } from './netns.js';
import { labFounder, labJoin } from './netns-nodes.js';

const skip = netnsUnavailable();
if (skip) console.warn(`partition tests skipped: ${skip}`);

const MAJORITY = [0, 1, 2];
const MINORITY = [3, 4];
const KEYED = [0, 1, 3];
const WRITERS = [0, 1, 3];
const SHARED_KEYS = 4;
/** Proof rounds every second; an unanswered challenge waits four deadlines (4 s). */
const DEADLINE_MS = 1000;
const PROOF_FLAGS = ['--proof-interval-ms', '1000', '--proof-deadline-ms', String(DEADLINE_MS), '--replication-factor', '3'];

interface Ack {
  writer: number;
  key: string;
  value: Buffer;
  hash: string;
  during: 'before' | 'split' | 'after';
}

describe.skipIf(skip)('partition 3|2 with writers on both sides', () => {
  let lab: NetLab;
  beforeAll(async () => {
    lab = await NetLab.create(5, { name: 'ouropart' });
  });
  afterAll(() => lab?.destroy());
  afterEach(() => lab?.heal());

  it('replicas 3: keeps every acknowledged write, surfaces concurrent versions as heads, restores RF and quarantines no one', () => splitAndCheck(lab, { splitMs: 30_000, valueBytes: 0 }));

  it.runIf(process.env.OURO_PARTITION_EC === '1')('ec 2+1: the same, and every coded block has its shards on its placement again', () => splitAndCheck(lab, { splitMs: 15_000, valueBytes: 160 * 1024, ec: '2+1' }), 600_000);
});

async function splitAndCheck(lab: NetLab, opts: { splitMs: number; valueBytes: number; ec?: string }): Promise<void> {
  const SPLIT_MS = opts.splitMs;
  const t0 = Date.now();
  // Where the time went, printed as it goes (a run that times out says where it stood).
  const mark = (what: string) => console.log(`[partition ${opts.ec ? `ec ${opts.ec}` : 'replicas 3'}] ${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
  const key = keyFile();
  const nodes: NodeProc[] = [];
  nodes[0] = await labFounder(lab, 0, { key, extra: PROOF_FLAGS });
  for (const i of [1, 2, 3, 4]) nodes[i] = await labJoin(lab, i, nodes[0], { key: KEYED.includes(i) ? key : undefined, extra: PROOF_FLAGS });
  const all = nodes.map((n) => n.peerId);
  await waitFor(() => converged(nodes, all), 30_000, 'five members');
  if (opts.ec) await ouroJson(['cluster', '--dir', nodes[0]!.dir, 'redundancy', 'ec', opts.ec]);
  const ec = opts.ec?.split('+').map(Number) as [number, number] | undefined;

  mark('five members up');
  const acks: Ack[] = [];
  let phase: Ack['during'] = 'before';
  const put = async (w: number, k: string, text: string) => {
    const during = phase;
    // Large values fill blocks past the ec line (K x 64 KiB), so that blocks are coded.
    const value = opts.valueBytes > 0 ? Buffer.concat([Buffer.from(text), pseudoRandom(text, opts.valueBytes)]) : Buffer.from(text);
    const { hash } = await dbApi.put(nodes[w]!, value, { key: k });
    acks.push({ writer: w, key: k, value, hash, during });
  };
  // Every shared key starts from one version every keyed member has.
  for (let k = 0; k < SHARED_KEYS; k++) await put(0, `shared/${k}`, `base ${k}`);
  await dbApi.json(nodes[0]!, '/db/flush', 'POST', ec ? { shards: ec[0] + ec[1] } : { replicas: 3 });
  for (const i of KEYED) await waitFor(async () => (await dbApi.json<{ heads: string[] }>(nodes[i]!, `/db/heads?key=shared/${SHARED_KEYS - 1}`)).heads.length === 1, 20_000, `member ${i} sees the base`);

  mark('base versions everywhere');
  // Writers on both sides, each its own keys and the shared ones, until told to stop.
  let writing = true;
  const writerErrors: string[] = [];
  const writers = WRITERS.map(async (w) => {
    for (let n = 0; writing; n++) {
      try {
        const slow = setTimeout(() => console.log(`writer ${w} put ${n} pending 10 s; last logs:\n${nodes[w]!.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`), 10_000);
        await put(w, n % 2 === 0 ? `shared/${(n / 2) % SHARED_KEYS}` : `own/${w}/${n}`, `w${w} n${n}`).finally(() => clearTimeout(slow));
      } catch (err) {
        writerErrors.push(`writer ${w}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  });

  await new Promise((r) => setTimeout(r, 1000));
  phase = 'split';
  await lab.partition([MAJORITY, MINORITY]);
  const splitAt = Date.now();
  // Challenges across the split while the other side still looks alive (for 800 ms): the
  // moment a partition could pass for a holder that cannot prove what it holds.
  for (const w of WRITERS) void nodes[w]!.post('/proofs/round', {}).catch(() => {});

  mark('split');
  // What an operator sees once the detector has called the other side dead (FAST: 2 s).
  await waitFor(async () => (await nodes[0]!.get<{ members: { dead: number } }>('/status')).members.dead === 2, 15_000, 'the majority sees two dead');
  await waitFor(async () => (await nodes[3]!.get<{ members: { dead: number } }>('/status')).members.dead === 3, 15_000, 'the minority sees three dead');
  const majorityStatus = await nodes[0]!.get<{ replication: { cannotHeal: boolean; liveMembers: number } }>('/status');
  const minorityStatus = await nodes[3]!.get<{ replication: { cannotHeal: boolean; liveMembers: number; cannotHealReason: string | null } }>('/status');
  const clusterStatus = await nodes[0]!.get<{ members: Array<{ peerId: string; ok: boolean; error?: { code: string } }> }>('/cluster/status?timeoutMs=1000');
  const metrics = await (await dbApi.get(nodes[3]!, '/metrics')).text();
  expect(majorityStatus.replication).toMatchObject({ cannotHeal: false, liveMembers: 3 });
  expect(minorityStatus.replication).toMatchObject({ cannotHeal: true, liveMembers: 2 });
  expect(clusterStatus.members.filter((m) => !m.ok).map((m) => m.peerId).sort()).toEqual([all[3], all[4]].sort());
  expect(clusterStatus.members.filter((m) => !m.ok).every((m) => m.error?.code === 'OURO_TIMEOUT')).toBe(true);
  expect(metrics).toContain('ouro_replication_cannot_heal 1');
  for (const i of MAJORITY) expect(metrics).toMatch(new RegExp(`ouro_member_up\\{peer="${all[i]}"[^}]*\\} 0`));

  mark('operator views checked');
  await new Promise((r) => setTimeout(r, Math.max(0, SPLIT_MS - (Date.now() - splitAt))));
  writing = false;
  await Promise.all(writers);
  phase = 'after';
  await lab.heal();
  const healedAt = Date.now();

  mark('healed');
  // The premise: both sides wrote while split, the shared keys included.
  const split = acks.filter((a) => a.during === 'split');
  for (const w of WRITERS) expect(split.some((a) => a.writer === w && a.key.startsWith('shared/'))).toBe(true);
  expect(writerErrors).toEqual([]);

  await waitFor(() => converged(nodes, all), 30_000, 'five members alive again');
  const keyed = KEYED.map((i) => nodes[i]!);

  mark('five alive again');
  // Every acknowledged write reads back on every keyed member.
  // The last read that failed, named in the failure (which member, which write, what it answered).
  let unread = '';
  await waitFor(
    async () => {
      for (const n of keyed)
        for (const a of acks) {
          const res = await dbApi.get(n, `/db/objects/${a.hash}`);
          if (res.status !== 200) {
            unread = `member ${nodes.indexOf(n)}, ${a.during} write ${a.hash} by ${a.writer}: ${res.status} ${await res.text()}`;
            return false;
          }
        }
      return true;
    },
    ec ? 180_000 : 60_000,
    'every acknowledged write on every keyed member',
  ).catch((err: unknown) => {
    const member = nodes[Number(/^member (\d+)/.exec(unread)?.[1])];
    // Less this test's own reads that found nothing (404s), which filled the last twenty lines of a CI failure.
    const warnings = (member?.logs ?? []).filter((l) => l.level >= 40 && !(l.event === 'admin-error' && l.code === 'OURO_NOT_FOUND'));
    throw new Error(`${(err as Error).message}; the last read that failed: ${unread}; that member's last warnings:\n${warnings.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`);
  });
  for (const n of keyed) for (const a of acks) expect((await dbApi.value(n, a.hash)).equals(a.value), `${a.hash} on ${n.peerId}`).toBe(true);

  mark('every write read back');
  // A key written on both sides during the split: each side's last version is a head (neither
  // side saw the other's, so neither was built on), and every version is in its history.
  for (let k = 0; k < SHARED_KEYS; k++) {
    const versions = acks.filter((a) => a.key === `shared/${k}`);
    const lastOf = (side: number[]) => versions.filter((a) => side.includes(a.writer)).at(-1)?.hash;
    const [fromMajority, fromMinority] = [lastOf(MAJORITY), lastOf(MINORITY)];
    expect(fromMajority && fromMinority, `shared/${k} written on both sides`).toBeTruthy();
    for (const n of keyed) {
      await waitFor(async () => (await dbApi.json<{ heads: string[] }>(n, `/db/heads?key=shared/${k}`)).heads.length >= 2, 20_000, `shared/${k} has two heads`);
      const { heads } = await dbApi.json<{ heads: string[] }>(n, `/db/heads?key=shared/${k}`);
      expect(heads).toContain(fromMajority);
      expect(heads).toContain(fromMinority);
      const { versions: history } = await dbApi.json<{ versions: Array<{ hash: string }> }>(n, `/db/history?key=shared/${k}`);
      expect(history.map((v) => v.hash).sort()).toEqual(versions.map((a) => a.hash).sort());
    }
  }

  mark('heads checked');
  // RF restored: every block any member holds whole is on each member of its placement over the
  // five (at ec, those below the line: the coded ones keep one whole copy, the writer's)...
  const line = ec ? ec[0] * 64 * 1024 : Infinity;
  const member = (peer: unknown) => all.indexOf(String(peer));
  const placed = async () => {
    const held = await Promise.all(nodes.map(async (n) => (await n.get<{ blocks: Array<{ id: string; size: number }> }>('/replication/blocks')).blocks));
    const whole = new Set(held.flatMap((bs) => bs.filter((b) => b.size < line).map((b) => b.id)));
    const coded = new Set(held.flatMap((bs) => bs.filter((b) => b.size >= line).map((b) => b.id)));
    return { coded: coded.size, short: [...whole].filter((id) => replicaSet(id, all, 3).some((p) => !held[all.indexOf(p)]!.some((b) => b.id === id))) };
  };
  let short: string[] = [];
  await waitFor(async () => (short = (await placed()).short).length === 0, 60_000, 'every block on its placement').catch((err: unknown) => {
    // Which blocks, and how each member sees the others: a member a holder sees dead past the
    // grace (`--dead-grace-ms`, 1 s here) is out of that holder's placement, and is not pushed to.
    const states = nodes.map((n, i) => `${i}: ${n.logs.filter((l) => l.event === 'member-state').slice(-4).map((l) => `${member(l.peer)} ${String(l.from)}->${String(l.to)}`).join(', ')}`);
    throw new Error(`${(err as Error).message}: ${short.length} short, e.g. ${short.slice(0, 3).map((id) => `${id.slice(0, 12)} placed on ${replicaSet(id, all, 3).map(member).join(',')}`).join('; ')}; last state changes seen by each member:\n${states.join('\n')}`);
  });
  if (ec) {
    // ...and every writer's coded blocks have all K+M shards on their placement.
    expect((await placed()).coded).toBeGreaterThan(0);
    for (const w of WRITERS) {
      await nodes[w]!.post('/replication/repair', {});
      await waitFor(
        async () => {
          const h = (await nodes[w]!.get<{ replication: { shardHealth: { blocks: number; full: number } } }>('/status')).replication.shardHealth;
          return h.blocks > 0 && h.full === h.blocks;
        },
        120_000,
        `writer ${w}'s coded blocks at K+M`,
      );
      mark(`writer ${w}'s coded blocks at K+M`);
    }
  }

  mark('placement restored');
  // What the detector and the proofs did, for the report.
  const names = new Map(all.map((p, i) => [p, i]));
  const transitions = nodes.flatMap((n, i) => n.logs.filter((l) => l.event === 'member-state').map((l) => `${i}:${String(names.get(String(l.peer)))} ${String(l.from)}->${String(l.to)}`));
  // When, in seconds after the heal (negative: during the split), so that the order of the
  // verdicts and the quarantines they led to can be read.
  const sinceHeal = (l: Record<string, unknown>) => Math.round((Date.parse(String(l.time)) - healedAt) / 100) / 10;
  const proofs = nodes.flatMap((n, i) => n.logs.filter((l) => typeof l.event === 'string' && /^proof-(late|fail)$/.test(l.event)).map((l) => ({ at: `${i}->${String(names.get(String(l.peer)))}`, event: l.event, ms: l.ms as number, t: sinceHeal(l) })));
  const unreachable = nodes.map((n) => n.logs.filter((l) => l.event === 'proof-unreachable').length);
  console.log(
    JSON.stringify({
      splitMs: healedAt - splitAt,
      acked: { before: acks.filter((a) => a.during === 'before').length, split: split.length, majority: split.filter((a) => MAJORITY.includes(a.writer)).length, minority: split.filter((a) => MINORITY.includes(a.writer)).length },
      transitions: transitions.length,
      transitionSample: transitions.slice(0, 12),
      lateOrFailed: proofs,
      redundancy: opts.ec ? `ec ${opts.ec}` : 'replicas 3',
      unreachableChallenges: unreachable,
      healToChecked: Date.now() - healedAt,
      failed: nodes.flatMap((n, i) => n.logs.filter((l) => l.event === 'proof-fail').map((l) => `${i}: ${JSON.stringify(l)}`)).slice(0, 10),
      quarantines: nodes.flatMap((n, i) => n.logs.filter((l) => l.event === 'member-quarantined').map((l) => `${i} saw ${String(names.get(String(l.peer)))} at ${sinceHeal(l)} s`)),
    }),
  );
  // No one revoked or quarantined, on any member's view (ledgers synced after the heal).
  await Promise.all(nodes.map((n) => n.post('/ledger/sync', {})));
  for (const n of nodes) {
    const view = await n.members();
    expect(view.members.map((m) => [m.peerId, m.status, m.quarantined])).toEqual(view.members.map((m) => [m.peerId, 'member', false]));
  }

  // Challenges did cross the split, and none was held against the holder: no failure, and no
  // late verdict for a challenge left unanswered (four deadlines). A late answer from a holder
  // on the same side (a loaded machine's) is a verdict like any other.
  // (At ec no challenge is made for a coded block: proofs per shard are not built yet.)
  if (!ec) expect(unreachable.reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
  expect(proofs.filter((p) => p.event === 'proof-fail' || p.ms >= 4 * DEADLINE_MS)).toEqual([]);
}
