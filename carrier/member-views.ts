/**
 * The members as this node sees them (`GET /members`, the status page, and the parts that place,
 * challenge and sync by member): the signed list, joined with the failure detector's states and
 * what each member said of itself in its heartbeats. Reads only; the node gives it its sources.
 */
import type { MemberHealth, MemberState } from './detector.js';
import type { About } from './heartbeats.js';
import { type MemberList, type MemberStatus, draining, statusOf } from './membership.js';

/**
 * `founder`: the member that made the cluster (the list names it); else `keyed` (runs the
 * database and holds the key) or `keyless` (holds ciphertext for the others), as the member says
 * in its heartbeats.
 */
export type MemberRole = 'founder' | 'keyed' | 'keyless';

export interface MemberView {
  peerId: string;
  self: boolean;
  /** The member's configured name (config `name`), from its heartbeats; null when it has none or has not said (yet). */
  name: string | null;
  /** Null for a member not heard from since this node started (or one of a release that does not say). */
  role: MemberRole | null;
  status: MemberStatus;
  /**
   * Failure detector state (self is always alive; `unknown`: not heard from since this node
   * started); null for members that left or were revoked.
   */
  state: MemberState | null;
  since: number | null;
  lastHeard: number | null;
  addresses: string[];
  approvedBy: string;
  /** Who signed the revocation: the member itself when it left. */
  revokedBy: string | null;
  /** A member draining: no block is placed on it any more; it leaves once its blocks are held elsewhere. */
  draining: boolean;
  /** Quarantined by the ledger (repeated failed proofs of storage): no block is placed on it until an operator clears it. */
  quarantined: boolean;
}

/** What the views are made from (carrier/node.ts gives it). */
export interface ViewSources {
  self: string;
  /** What this node says of itself. */
  selfAbout: About;
  startedAt: number;
  health(peer: string): MemberHealth | undefined;
  about(peer: string): About | undefined;
  quarantined(peer: string): boolean;
}

export function memberViews(list: MemberList | undefined, s: ViewSources): MemberView[] {
  if (!list) return [];
  const revokedBy = new Map(list.revocations.map((r) => [r.peerId, r.by]));
  const drains = draining(list);
  return list.approvals.map((a) => {
    const self = a.peerId === s.self;
    const status = statusOf(list, a.peerId)!;
    const out = status !== 'member';
    const h = self || out ? undefined : s.health(a.peerId);
    const about = self ? s.selfAbout : s.about(a.peerId);
    return {
      peerId: a.peerId,
      self,
      name: about?.name ?? null,
      role: a.peerId === list.founder ? 'founder' : about ? (about.keyed ? 'keyed' : 'keyless') : null,
      status,
      state: out ? null : self ? 'alive' : (h?.state ?? null),
      since: self ? s.startedAt : (h?.since ?? null),
      lastHeard: self ? Date.now() : (h?.lastHeard ?? null),
      addresses: list.addresses[a.peerId] ?? [],
      approvedBy: a.approvedBy,
      revokedBy: revokedBy.get(a.peerId) ?? null,
      draining: !out && drains.has(a.peerId),
      quarantined: !out && s.quarantined(a.peerId),
    };
  });
}
