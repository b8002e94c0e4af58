/**
 * The network half of `npm run chaos` (test/chaos.ts): where its members run, and the network
 * faults it injects between them.
 *
 * With network namespaces available (test/netns.ts: Linux, root, nftables, the python3 wire),
 * member i of the chaos cluster runs in namespace i of a NetLab, and every chaos round may also
 * break the network between members: partition them into random groups, cut one direction of a
 * random link, or delay, jitter and drop the packets between a random member and some others;
 * or heal all of that. Faults pile up until a heal (the lab adds rules, it never replaces them),
 * and a heal comes at the latest after HOLD_MS, so the cluster also spends time whole between
 * faults. The test process reaches every member's admin API throughout (the lab keeps its own
 * address out of every rule), so the writer and the checks go on as on loopback.
 *
 * Without namespaces (or with `--no-net`), the members run on loopback as before and no network
 * fault is injected; chaos.ts prints why.
 */
import { type NodeProc, founderWithDb, joinKeyless, joinWithDb, startNode } from './cluster-procs.js';
import { NetLab, netnsUnavailable } from './netns.js';
import { labFounder, labJoin } from './netns-nodes.js';

/** Where chaos members run: the same calls on loopback and in a lab. Member i is lab member i. */
export interface Placement {
  founder(key: string, extra: string[]): Promise<NodeProc>;
  /** Member i admitted through `via`, keyed when `key` is given. */
  join(i: number, via: NodeProc, key: string | undefined, extra: string[]): Promise<NodeProc>;
  /** Member i started again from its directory. */
  restart(i: number, dir: string, key: string | undefined): Promise<NodeProc>;
}

const keyFlags = (key: string | undefined) => (key !== undefined ? ['--key-file', key] : []);

export const loopback: Placement = {
  founder: (key, extra) => founderWithDb(key, extra),
  join: (_i, via, key, extra) => (key !== undefined ? joinWithDb(via, key, extra) : joinKeyless(via, extra)),
  restart: (_i, dir, key) => startNode(dir, [], keyFlags(key)),
};

export function inLab(lab: NetLab): Placement {
  return {
    founder: (key, extra) => labFounder(lab, 0, { key, extra }),
    join: (i, via, key, extra) => labJoin(lab, i, via, { key, extra }),
    restart: (i, dir, key) => startNode(dir, [], keyFlags(key), lab.wrap(i)),
  };
}

/** How long faults may pile up before a heal is forced. */
export const HOLD_MS = 20_000;

export interface NetCounts {
  partitions: number;
  cuts: number;
  shapes: number;
  heals: number;
}

/** Network faults between `members` lab members, chosen with `rand` (chaos.ts's seeded generator). */
export class NetChaos {
  readonly counts: NetCounts = { partitions: 0, cuts: 0, shapes: 0, heals: 0 };
  /** When the oldest fault in force was injected (undefined: the network is whole). */
  #faultySince: number | undefined;

  constructor(
    readonly lab: Pick<NetLab, 'partition' | 'cut' | 'shape' | 'heal'>,
    readonly rand: () => number,
    readonly log: (text: string) => void,
    /** Names of the members, for the log (index = lab member). */
    readonly names: string[],
  ) {}

  /** Whether a fault is in force now. */
  get faulty(): boolean {
    return this.#faultySince !== undefined;
  }

  /** One round's network action: a new fault, a heal, or (half the time) nothing. */
  async step(): Promise<void> {
    const r = this.rand;
    if (this.#faultySince !== undefined && (Date.now() - this.#faultySince > HOLD_MS || r() < 0.25)) return this.heal();
    if (r() < 0.5) return;
    const n = this.names.length;
    const kind = r();
    if (kind < 0.4) {
      // Two groups most of the time, now and then three; every member in one, none empty.
      const k = r() < 0.75 ? 2 : 3;
      const order = this.#shuffled(n);
      const groups: number[][] = Array.from({ length: k }, (_, g) => [order[g]!]);
      for (const i of order.slice(k)) groups[Math.floor(r() * k)]!.push(i);
      await this.lab.partition(groups);
      this.counts.partitions++;
      this.log(`net: partition ${groups.map((g) => g.map((i) => this.names[i]![0]).sort().join('')).join(' | ')}`);
    } else if (kind < 0.65) {
      const [from, to] = this.#shuffled(n) as [number, number];
      await this.lab.cut(from, to);
      this.counts.cuts++;
      this.log(`net: cut ${this.names[from]![0]} -> ${this.names[to]![0]} (one way)`);
    } else {
      const [a, ...rest] = this.#shuffled(n) as [number, ...number[]];
      const b = rest.slice(0, 1 + Math.floor(r() * rest.length));
      const delayMs = Math.round(5 + r() * 145);
      const jitterMs = Math.round(r() * Math.min(delayMs, 40));
      const lossPct = Math.round(r() * 50) / 10;
      await this.lab.shape([a], b, { delayMs, jitterMs, lossPct });
      this.counts.shapes++;
      this.log(`net: shape ${this.names[a]![0]} <-> ${b.map((i) => this.names[i]![0]).sort().join('')}: ${delayMs} ms +-${jitterMs} each way, ${lossPct}% loss`);
    }
    this.#faultySince ??= Date.now();
  }

  /** Removes every fault in force (a no-op on a whole network). */
  async heal(): Promise<void> {
    if (this.#faultySince === undefined) return;
    await this.lab.heal();
    this.#faultySince = undefined;
    this.counts.heals++;
    this.log('net: healed');
  }

  summary(): string {
    const c = this.counts;
    return `network faults: ${c.partitions} partitions, ${c.cuts} one-way cuts, ${c.shapes} shaped links (delay, jitter, loss); ${c.heals} heals`;
  }

  #shuffled(n: number): number[] {
    const xs = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.rand() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}

/**
 * The lab for `members` chaos members, or the reason there is none: `--no-net` asked for
 * loopback, or namespaces are unavailable here (netnsUnavailable's reason).
 */
export async function openLab(members: number, wanted: boolean): Promise<{ lab: NetLab } | { reason: string }> {
  if (!wanted) return { reason: '--no-net' };
  const why = netnsUnavailable();
  if (why) return { reason: `network namespaces unavailable: ${why}` };
  // Ctrl-C and kill end the process through its 'exit' hooks, which delete the lab's namespaces.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  return { lab: await NetLab.create(members, { name: 'ourochaos' }) };
}
