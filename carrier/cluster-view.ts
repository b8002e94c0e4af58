/**
 * The cluster view (docs/node.md, `GET /cluster/status`; the status page's "Cluster" table): one
 * member asks every other current member for its `/status` over the members-only protocol
 * `/ouro/cluster-status/1` (docs/FORMAT.md) and answers them side by side, so that an operator
 * looking at one member's page sees every member's own figures, not one member's view of them.
 * A member that does not answer within the bound gets an error in its place; the others are not
 * held up by it (the asks run in parallel).
 *
 * Also the "cannot heal" judgement (healState): whether fewer members are live than the
 * replication factor, in which case under-replicated blocks stay so until a member is added or
 * comes back, whatever repair does. /status, the page and the metrics all show this one.
 *
 * Also the cluster's coded blocks by shard health (clusterShardHealth): each member counts in its
 * own `/status` `replication.shardHealth` the coded blocks it looks after (those it holds whole,
 * and those it rebuilds from shards when no live member holds them whole), so each block is
 * counted by one member and the sum over the members that answered is the cluster's.
 *
 * Owns no state: it reads its host (carrier/node.ts gives it the node's views and requests).
 */
import { OuroError, ProtocolError } from '../lib/errors.js';
import type { Handler } from './carrier.js';

/** Protocol name: `/ouro/cluster-status/1`. */
export const CLUSTER_STATUS = 'cluster-status';
/** Version of its request and reply (`v`), part of the wire format. */
export const CLUSTER_STATUS_VERSION = 1;
/** How long a member's answer is waited for (GET /cluster/status?timeoutMs= changes it, up to the request time limit). */
export const CLUSTER_STATUS_TIMEOUT_MS = 3000;

/**
 * A member as the node's MemberView gives it. `name` is optional here: the config field that sets
 * it is another change's, and a member of an older release sends none.
 */
export interface ViewedMember {
  peerId: string;
  self: boolean;
  status: string;
  state: string | null;
  draining: boolean;
  quarantined: boolean;
  name?: string | null;
}

export interface HealState {
  /** Current members that can take placements and are alive (or suspect: not yet given up) now, this node included. */
  liveMembers: number;
  /** True when liveMembers is below the replication factor: some blocks cannot regain their placement. */
  cannotHeal: boolean;
  /** `N live members, factor F` when cannotHeal, else null. */
  cannotHealReason: string | null;
}

/**
 * Whether repair can restore every block's placement with the members live now. A member counts
 * when it is current (not revoked or left), not draining or quarantined (no placement goes
 * there), and alive or suspect in this node's detector; a dead one might come back, but until it
 * does, blocks placed on it cannot be copied there.
 */
export function healState(members: ReadonlyArray<ViewedMember>, factor: number): HealState {
  const live = members.filter((m) => m.status === 'member' && !m.draining && !m.quarantined && (m.self || m.state === 'alive' || m.state === 'suspect')).length;
  const cannotHeal = live < factor;
  return { liveMembers: live, cannotHeal, cannotHealReason: cannotHeal ? `${live} live member${live === 1 ? '' : 's'}, factor ${factor}` : null };
}

/** One member's answer, or why there is none. */
export type MemberStatus =
  | { peerId: string; name: string | null; self: boolean; ok: true; status: Record<string, unknown> }
  | { peerId: string; name: string | null; self: boolean; ok: false; error: { code: string; message: string } };

export interface ClusterStatus {
  /** When the asks started (ms since the epoch), and the member that asked. */
  at: number;
  asker: string;
  timeoutMs: number;
  members: MemberStatus[];
  /** The coded blocks of the members that answered, by shard health (clusterShardHealth). */
  shardHealth: ShardHealthSum;
}

/** Coded blocks by healthy shards: `full` at K+M, `atThreshold` at K + repairThreshold or fewer, `unreadable` under K. */
export interface ShardHealthSum {
  blocks: number;
  full: number;
  atThreshold: number;
  unreadable: number;
  /** Members that answered without shard figures (an older release): the sum leaves their blocks out. */
  unknown: number;
}

/** The sum of the members' `replication.shardHealth`; a member that did not answer adds nothing (see `members`). */
export function clusterShardHealth(members: ReadonlyArray<MemberStatus>): ShardHealthSum {
  const sum: ShardHealthSum = { blocks: 0, full: 0, atThreshold: 0, unreadable: 0, unknown: 0 };
  for (const m of members) {
    if (!m.ok) continue;
    const h = (m.status.replication as { shardHealth?: Partial<Record<'blocks' | 'full' | 'atThreshold' | 'unreadable', unknown>> } | undefined)?.shardHealth;
    if (!h || typeof h !== 'object') {
      sum.unknown++;
      continue;
    }
    for (const k of ['blocks', 'full', 'atThreshold', 'unreadable'] as const) if (Number.isSafeInteger(h[k])) sum[k] += h[k] as number;
  }
  return sum;
}

export interface ClusterViewHost {
  readonly peerId: string;
  memberViews(): ViewedMember[];
  status(): Promise<Record<string, unknown>>;
  handle(name: string, handler: Handler, options?: { major?: number }): Promise<void>;
  request(peer: string, name: string, message: unknown, options: { major?: number; timeoutMs?: number }): Promise<unknown>;
}

export class ClusterView {
  readonly #host: ClusterViewHost;

  constructor(host: ClusterViewHost) {
    this.#host = host;
  }

  /** Serves `/ouro/cluster-status/1` (members only, as every protocol but joining). */
  start(): Promise<void> {
    return this.#host.handle(CLUSTER_STATUS, (m) => this.#onStatus(m), { major: CLUSTER_STATUS_VERSION });
  }

  async #onStatus(message: unknown): Promise<unknown> {
    const v = (message as { v?: unknown } | null)?.v;
    if (v !== CLUSTER_STATUS_VERSION) throw new ProtocolError(`cluster-status: unsupported request version ${String(v)}`);
    return { v: CLUSTER_STATUS_VERSION, status: await this.#host.status() };
  }

  /** Every current member's status (this node's own without a request), in the order of the member list. */
  async gather(timeoutMs = CLUSTER_STATUS_TIMEOUT_MS): Promise<ClusterStatus> {
    const host = this.#host;
    const at = Date.now();
    const current = host.memberViews().filter((m) => m.status === 'member');
    const members = await Promise.all(
      current.map(async (m): Promise<MemberStatus> => {
        const who = { peerId: m.peerId, name: m.name ?? null, self: m.self };
        try {
          if (m.self) return { ...who, ok: true, status: await host.status() };
          const reply = (await host.request(m.peerId, CLUSTER_STATUS, { v: CLUSTER_STATUS_VERSION }, { major: CLUSTER_STATUS_VERSION, timeoutMs })) as { status?: unknown } | null;
          const status = reply?.status;
          if (status === null || typeof status !== 'object' || Array.isArray(status)) throw new ProtocolError('malformed cluster-status reply');
          return { ...who, ok: true, status: status as Record<string, unknown> };
        } catch (err) {
          return { ...who, ok: false, error: { code: err instanceof OuroError ? err.code : 'OURO_IO_ERROR', message: err instanceof Error ? err.message : String(err) } };
        }
      }),
    );
    return { at, asker: host.peerId, timeoutMs, members, shardHealth: clusterShardHealth(members) };
  }
}

/** Current members as the per-member gauges show them (carrier/metrics.ts MemberFigure). */
export function memberFigures(members: ReadonlyArray<ViewedMember>): Array<{ peerId: string; name: string | null; state: string }> {
  return members.filter((m) => m.status === 'member').map((m) => ({ peerId: m.peerId, name: m.name ?? null, state: m.self ? 'alive' : (m.state ?? 'unknown') }));
}
