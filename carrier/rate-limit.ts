/**
 * Rate limits on peers that are not members (docs/node.md, "Access"): the join protocol is open to
 * every peer, and every other protocol answers a stranger with a refusal, so a peer flooding joins
 * or opening streams in a loop could make a member spend its time, its disk (a join request is
 * saved) and its list's serial section on it. Each stream or session request from a non-member
 * takes a token from that peer's bucket and from one bucket all strangers share (peer ids cost
 * nothing to make, so a flood from many of them meets the shared one); without a token it is
 * refused with OURO_RATE_LIMITED before its frame is read. Members are never limited: their
 * heartbeats and transfers do not queue behind anything here.
 *
 * Owns the buckets (in memory: a restart forgets them) and the per-peer log throttle.
 */
import type { Logger } from 'pino';

/** Requests per second a non-member may make, and how many at once after a quiet spell. */
export const PER_PEER = { perSec: 10, burst: 30 };
/** The same for all non-members together. */
export const ALL_STRANGERS = { perSec: 100, burst: 300 };
/** Buckets kept (the least recently used go beyond it: a new peer starts with a full one). */
const MAX_PEERS = 10_000;
/** A limited peer is logged at most once per this long, with how many were refused meanwhile. */
const LOG_EVERY_MS = 10_000;

/** Why a request was limited: its peer's own bucket, or the one all strangers share. */
export type LimitReason = 'peer' | 'strangers';
export const LIMIT_REASONS: readonly LimitReason[] = ['peer', 'strangers'];

class Bucket {
  #tokens: number;
  #at: number;
  constructor(
    readonly rate: { perSec: number; burst: number },
    now: number,
  ) {
    this.#tokens = rate.burst;
    this.#at = now;
  }

  /** Refills for the time since the last call, then takes a token if there is one. */
  take(now: number): boolean {
    this.#tokens = Math.min(this.rate.burst, this.#tokens + ((now - this.#at) * this.rate.perSec) / 1000);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Gives back a token taken (the other bucket refused the request). */
  giveBack(): void {
    this.#tokens = Math.min(this.rate.burst, this.#tokens + 1);
  }
}

export interface LimiterHost {
  readonly log: Logger;
  readonly metrics: { rateLimited(reason: LimitReason): void };
  /** Whether `peer` is a member of this node's current list (members are never limited). */
  member(peer: string): boolean;
}

export class StrangerLimiter {
  readonly #host: LimiterHost;
  readonly #peers = new Map<string, Bucket>();
  readonly #all: Bucket;
  readonly #logged = new Map<string, { at: number; refused: number }>();

  constructor(host: LimiterHost, now = Date.now()) {
    this.#host = host;
    this.#all = new Bucket(ALL_STRANGERS, now);
  }

  /**
   * Undefined when `peer` may go on with a request on `protocol`; else the refusal's message
   * (counted in ouro_rate_limited_total, logged as `rate-limited` at most once per 10 s a peer).
   */
  check(peer: string, protocol: string, now = Date.now()): string | undefined {
    if (this.#host.member(peer)) return undefined;
    let bucket = this.#peers.get(peer);
    if (bucket) this.#peers.delete(peer);
    else bucket = new Bucket(PER_PEER, now);
    this.#peers.set(peer, bucket); // most recently used last
    if (this.#peers.size > MAX_PEERS) this.#peers.delete(this.#peers.keys().next().value!);
    let reason: LimitReason | undefined;
    if (!bucket.take(now)) reason = 'peer';
    else if (!this.#all.take(now)) {
      bucket.giveBack();
      reason = 'strangers';
    }
    if (reason === undefined) return undefined;
    this.#host.metrics.rateLimited(reason);
    const seen = this.#logged.get(peer) ?? { at: -Infinity, refused: 0 };
    seen.refused++;
    if (now - seen.at >= LOG_EVERY_MS) {
      this.#host.log.warn({ event: 'rate-limited', peer, protocol, reason, refused: seen.refused }, reason === 'peer' ? 'a non-member sends too many requests: refused' : 'non-members together send too many requests: refused');
      seen.at = now;
      seen.refused = 0;
    }
    this.#logged.delete(peer);
    this.#logged.set(peer, seen);
    if (this.#logged.size > MAX_PEERS) this.#logged.delete(this.#logged.keys().next().value!);
    const limit = reason === 'peer' ? PER_PEER : ALL_STRANGERS;
    return `${reason === 'peer' ? `peer ${peer}` : 'non-members together'} may make at most ${limit.perSec} requests a second (${limit.burst} at once): ${protocol} refused`;
  }
}
