/**
 * The node's /metrics (carrier/metrics.ts) without a cluster: counters with a fixed label set
 * exist at 0 before their first event (so that `increase()` in the documented alert rules sees
 * the first failure: docs/operations.md), and the per-member, unsettled, cannot-heal and drain
 * gauges read their sources at each scrape (a member gone leaves no series behind).
 */
import { describe, expect, it } from 'vitest';
import { type DrainFigures, type MemberFigure, type MetricSources, NodeMetrics } from '../carrier/metrics.js';

function sources(state: { members: MemberFigure[]; drain: DrainFigures | null; cannotHeal: boolean; unsettled: number }): MetricSources {
  return {
    memberStates: () => ({ alive: 0, suspect: 0, dead: 0 }),
    listEpoch: () => 1,
    member: () => true,
    pendingJoins: () => 0,
    repair: () => ({ passes: 0, checked: 0, underReplicated: 0, pushed: 0, pushedBytes: 0, removed: 0, fetched: 0, failures: 0, verified: 0, corrupt: 0, unsettled: state.unsettled, shardHealth: { blocks: 0, full: 0, atThreshold: 0, unreadable: 0 }, shardsRepaired: 0, shardsRepairedBytes: 0 }),
    quarantinedMembers: () => 0,
    ledgerEvents: () => 0,
    members: () => state.members,
    drain: () => state.drain,
    cannotHeal: () => state.cannotHeal,
    disk: async () => ({ totalBytes: 100, freeBytes: 50, heldBytes: 10 }),
    db: undefined,
  };
}

/** The value of one series in Prometheus text, or undefined when the series is absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('node metrics', () => {
  it('every counter with a fixed label set is at 0 before its first event', async () => {
    const m = new NodeMetrics();
    const text = await m.registry.metrics();
    for (const result of ['pass', 'fail', 'late', 'undecided']) expect(value(text, `ouro_proofs_total{result="${result}"}`), result).toBe(0);
    for (const change of ['start', 'end']) expect(value(text, `ouro_quarantine_changes_total{change="${change}"}`), change).toBe(0);
    for (const result of ['ok', 'failed']) expect(value(text, `ouro_heartbeats_sent_total{result="${result}"}`)).toBe(0);
    for (const to of ['alive', 'suspect', 'dead']) expect(value(text, `ouro_member_transitions_total{to="${to}"}`)).toBe(0);
    for (const outcome of ['approved', 'pending', 'rejected']) expect(value(text, `ouro_join_requests_total{outcome="${outcome}"}`)).toBe(0);
    for (const direction of ['in', 'out']) {
      expect(value(text, `ouro_replicated_blocks_total{direction="${direction}"}`)).toBe(0);
      expect(value(text, `ouro_replicated_bytes_total{direction="${direction}"}`)).toBe(0);
    }
    // The first failure is a rise from 0, as increase() needs it.
    m.proof('fail');
    m.quarantine(true);
    const after = await m.registry.metrics();
    expect(value(after, 'ouro_proofs_total{result="fail"}')).toBe(1);
    expect(value(after, 'ouro_proofs_total{result="pass"}')).toBe(0);
    expect(value(after, 'ouro_quarantine_changes_total{change="start"}')).toBe(1);
  });

  it('per-member up and state gauges with peer and name, unsettled blocks, cannot-heal and drain progress', async () => {
    const state = {
      members: [
        { peerId: '12D3KooWself', name: 'alpha', state: 'alive' },
        { peerId: '12D3KooWdown', name: null, state: 'dead' },
      ] as MemberFigure[],
      drain: { held: 7, unsettled: 3, passes: 2, done: false } as DrainFigures | null,
      cannotHeal: true,
      unsettled: 5,
    };
    const m = new NodeMetrics();
    m.bind(sources(state));
    let text = await m.registry.metrics();
    expect(value(text, 'ouro_member_up{peer="12D3KooWself",name="alpha"}')).toBe(1);
    expect(value(text, 'ouro_member_up{peer="12D3KooWdown",name=""}')).toBe(0);
    expect(value(text, 'ouro_member_state{peer="12D3KooWdown",name="",state="dead"}')).toBe(1);
    expect(value(text, 'ouro_member_state{peer="12D3KooWdown",name="",state="alive"}')).toBe(0);
    expect(value(text, 'ouro_unsettled_blocks')).toBe(5);
    expect(value(text, 'ouro_replication_cannot_heal')).toBe(1);
    expect(value(text, 'ouro_draining')).toBe(1);
    expect(value(text, 'ouro_drain_blocks{kind="held"}')).toBe(7);
    expect(value(text, 'ouro_drain_blocks{kind="unsettled"}')).toBe(3);

    // The dead member revoked, the drain over, enough members again: read anew at the next scrape.
    state.members = state.members.slice(0, 1);
    state.drain = null;
    state.cannotHeal = false;
    text = await m.registry.metrics();
    expect(value(text, 'ouro_member_up{peer="12D3KooWdown",name=""}')).toBeUndefined();
    expect(text).not.toContain('12D3KooWdown');
    expect(value(text, 'ouro_replication_cannot_heal')).toBe(0);
    expect(value(text, 'ouro_draining')).toBe(0);
    expect(value(text, 'ouro_drain_blocks{kind="held"}')).toBe(0);
  });
});
