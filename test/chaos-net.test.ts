/**
 * The network faults `npm run chaos` injects (test/chaos-net.ts), against a lab that records the
 * calls: the long run itself needs namespaces and minutes, this checks in milliseconds that what
 * it asks of the lab is well formed (every partition puts each member in exactly one group, none
 * empty; cuts and shapes join different members) and that faults never pile up past HOLD_MS.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HOLD_MS, NetChaos } from './chaos-net.js';
import type { ShapeOptions } from './netns.js';

type Call = { op: 'partition'; groups: number[][] } | { op: 'cut'; from: number; to: number } | { op: 'shape'; a: number[]; b: number[]; opts: ShapeOptions } | { op: 'heal' };

function recordingLab(calls: Call[]) {
  return {
    partition: async (groups: number[][]) => void calls.push({ op: 'partition', groups }),
    cut: async (from: number, to: number) => void calls.push({ op: 'cut', from, to }),
    shape: async (a: number[], b: number[], opts: ShapeOptions) => void calls.push({ op: 'shape', a, b, opts }),
    heal: async () => void calls.push({ op: 'heal' }),
  };
}

/** xorshift32, as chaos.ts's. */
function seeded(seed: number): () => number {
  let s = seed;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

describe('chaos network faults', () => {
  afterEach(() => vi.useRealTimers());

  it('asks the lab for well-formed faults of every kind, and heals within HOLD_MS of the first fault', async () => {
    vi.useFakeTimers();
    const calls: Call[] = [];
    const N = 5;
    const net = new NetChaos(recordingLab(calls), seeded(7), () => {}, ['a', 'b', 'c', 'd', 'e']);
    let faultSince: number | undefined;
    let longest = 0;
    for (let round = 0; round < 2000; round++) {
      vi.advanceTimersByTime(2000 + (round % 5) * 1000);
      const before = calls.length;
      await net.step();
      const call = calls[before];
      if (call === undefined) continue;
      if (call.op === 'heal') {
        longest = Math.max(longest, Date.now() - faultSince!);
        faultSince = undefined;
      } else faultSince ??= Date.now();
      expect(net.faulty).toBe(faultSince !== undefined);
      if (call.op === 'partition') {
        expect(call.groups.every((g) => g.length > 0)).toBe(true);
        expect(call.groups.flat().sort()).toEqual([0, 1, 2, 3, 4]);
      } else if (call.op === 'cut') {
        expect(call.from).not.toBe(call.to);
        expect([call.from, call.to].every((i) => i >= 0 && i < N)).toBe(true);
      } else if (call.op === 'shape') {
        expect(call.b.length).toBeGreaterThan(0);
        expect(call.b).not.toContain(call.a[0]);
        expect(call.opts.lossPct).toBeLessThanOrEqual(5);
      }
    }
    // Every kind came up (the premise of the checks above), and no fault outlived the hold.
    for (const op of ['partition', 'cut', 'shape', 'heal']) expect(calls.some((c) => c.op === op), op).toBe(true);
    expect(calls.some((c) => c.op === 'partition' && c.groups.length === 3)).toBe(true);
    // A heal comes at the first round after HOLD_MS (rounds here are at most 6 s apart).
    expect(longest).toBeLessThanOrEqual(HOLD_MS + 6000);
    // A heal on a whole network asks nothing of the lab.
    await net.heal();
    const n = calls.length;
    await net.heal();
    expect(calls.length).toBe(n);
  });
});
