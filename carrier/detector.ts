/**
 * Failure detection by heartbeat timeouts (docs/node.md, "Failure detection"). A member is
 * `alive` while it was heard from within `suspectAfterMs`, `suspect` until `deadAfterMs`, then
 * `dead`. Hearing from it again (any heartbeat, sent or answered) makes it `alive` at once.
 *
 * A member this node has not heard from since it started (or since the list that brought the
 * member) is `unknown`, not `alive`: nothing says it runs at all (a node approved a moment ago
 * may never have been started). Its silence counts from when this node learned of it, so a
 * member that is down when this node starts is declared dead after `deadAfterMs` like any
 * other; it skips `suspect`, which says that a member heard before went quiet. `dead` is an
 * observation, not a verdict: the member stays in the list until an operator revokes it.
 *
 * Flap damping: a member that comes back (heard again after `suspect` or `dead`) more than once
 * has its two timeouts doubled for each revival past the first, up to MAX_TIMEOUT_SCALE; each
 * FLAP_WINDOW deadAfterMs without a revival takes one doubling back. A link that goes up and
 * down every few seconds would otherwise take the member through alive, suspect and dead on every
 * cycle, each one logged, counted and acted on (flush({ replicas }) refusing at once, placements
 * moving after the grace): with the timeouts stretched past the link's down time, the member
 * stays alive through the cycles, and is suspect now and then as a doubling wears off. The first
 * revival is free, so one restart leaves detection as fast as configured; a member that really
 * stops while flapping is still declared dead, later (at most MAX_TIMEOUT_SCALE times
 * deadAfterMs). A silence is measured against the scale as of its start, so a doubling wearing
 * off during the silence does not shorten it.
 *
 * Owns the members it watches and their states (#members). On a node, only carrier/heartbeats.ts
 * changes them: track() when a list is adopted, heard() on each answer or heartbeat received,
 * tick() at each heartbeat tick; everyone else reads health() and counts().
 */

export type MemberState = 'unknown' | 'alive' | 'suspect' | 'dead';

export interface Transition {
  peer: string;
  from: MemberState;
  to: MemberState;
  /** Milliseconds since the member was last heard from. */
  silentMs: number;
  /** What this member's timeouts are multiplied by now (1 unless it flaps: flap damping). */
  timeoutScale: number;
}

/** Each this many deadAfterMs without a revival takes one doubling of the timeouts back (flap damping). */
export const FLAP_WINDOW = 10;
/** The most a flapping member's timeouts are stretched. */
export const MAX_TIMEOUT_SCALE = 8;

export interface MemberHealth {
  state: MemberState;
  /** When the state was entered (ms since the epoch). */
  since: number;
  /** When the member was last heard from, or null if never since this node started. */
  lastHeard: number | null;
}

interface Entry extends MemberHealth {
  /** Start of the silence the timeouts count from. */
  reference: number;
  /** Revivals (back from suspect or dead) counted for flap damping, as of `lastRevival`. */
  revivals: number;
  lastRevival: number;
}

export class FailureDetector {
  readonly #suspectAfterMs: number;
  readonly #deadAfterMs: number;
  readonly #now: () => number;
  readonly #members = new Map<string, Entry>();

  constructor(options: { suspectAfterMs: number; deadAfterMs: number; now?: () => number }) {
    this.#suspectAfterMs = options.suspectAfterMs;
    this.#deadAfterMs = options.deadAfterMs;
    this.#now = options.now ?? Date.now;
  }

  /** Makes the tracked set exactly `peers`: new ones start `unknown`, missing ones are dropped. */
  track(peers: Iterable<string>): void {
    const now = this.#now();
    const wanted = new Set(peers);
    for (const p of this.#members.keys()) if (!wanted.has(p)) this.#members.delete(p);
    for (const p of wanted) if (!this.#members.has(p)) this.#members.set(p, { state: 'unknown', since: now, lastHeard: null, reference: now, revivals: 0, lastRevival: now });
  }

  /** The member answered or sent a heartbeat. Returns the transition to `alive`, if any. */
  heard(peer: string): Transition | undefined {
    const e = this.#members.get(peer);
    if (!e) return undefined;
    const now = this.#now();
    const silentMs = now - e.reference;
    e.lastHeard = now;
    e.reference = now;
    if (e.state === 'alive') return undefined;
    if (e.state !== 'unknown') {
      e.revivals = Math.min(1 + Math.log2(MAX_TIMEOUT_SCALE), this.#revivals(e, now) + 1);
      e.lastRevival = now;
    }
    const t: Transition = { peer, from: e.state, to: 'alive', silentMs, timeoutScale: this.#scale(e, now) };
    e.state = 'alive';
    e.since = now;
    return t;
  }

  /** Applies the timeouts as of now; returns the transitions made. */
  tick(): Transition[] {
    const now = this.#now();
    const out: Transition[] = [];
    for (const [peer, e] of this.#members) {
      const silentMs = now - e.reference;
      // The scale as of the silence's start: revivals leaving the window during a silence must
      // not shrink the timeouts the silence is being measured against.
      const scale = this.#scale(e, e.reference);
      const state: MemberState = silentMs >= this.#deadAfterMs * scale ? 'dead' : e.state === 'unknown' ? 'unknown' : silentMs >= this.#suspectAfterMs * scale ? 'suspect' : 'alive';
      if (state === e.state || state === 'alive') continue; // only hearing revives
      out.push({ peer, from: e.state, to: state, silentMs, timeoutScale: scale });
      e.state = state;
      e.since = now;
    }
    return out;
  }

  /** `e`'s revivals as of `at`: one fewer for each FLAP_WINDOW deadAfterMs since its last one. */
  #revivals(e: Entry, at: number): number {
    return Math.max(0, e.revivals - Math.floor((at - e.lastRevival) / (FLAP_WINDOW * this.#deadAfterMs)));
  }

  /** The factor on `e`'s timeouts as of `at`: 2 to the power of its revivals past the first, at most MAX_TIMEOUT_SCALE. */
  #scale(e: Entry, at: number): number {
    return Math.min(MAX_TIMEOUT_SCALE, 2 ** Math.max(0, this.#revivals(e, at) - 1));
  }

  health(peer: string): MemberHealth | undefined {
    const e = this.#members.get(peer);
    return e ? { state: e.state, since: e.since, lastHeard: e.lastHeard } : undefined;
  }

  counts(): Record<MemberState, number> {
    const c = { unknown: 0, alive: 0, suspect: 0, dead: 0 };
    for (const e of this.#members.values()) c[e.state]++;
    return c;
  }
}
