/**
 * Heartbeats and failure detection (docs/node.md, "Failure detection"): every
 * `heartbeat.intervalMs` each member sends its signed member list to every other member and
 * merges what comes back, so lists converge; the failure detector turns who answered into alive,
 * suspect and dead; a list change an operator made is announced at once on the same protocol.
 *
 * Owns, and alone changes:
 *   - the failure detector (#detector): told of each answer (heard), of time passing (tick, each
 *     heartbeat tick) and of the members to watch (track, called by the node whenever it adopts a
 *     list);
 *   - #inFlight: the heartbeats under way, one per member at a time;
 *   - #timer: the heartbeat interval (start, stop).
 * The member list and this node's role are the node's: this module reads them and hands lists
 * it receives to the node's merge (HeartbeatHost.mergeFrom), and does not import the node.
 */
import type { Logger } from 'pino';
import { ProtocolError, RefusedError, errorText } from '../lib/errors.js';
import { protocolId } from './carrier.js';
import type { NodeConfig } from './config.js';
import { FailureDetector, type MemberHealth, type MemberState, type Transition } from './detector.js';
import { type JoinAnswer, type JoinRequest, JOIN_PROTOCOL } from './joins.js';
import type { MemberList } from './membership.js';

export const HEARTBEAT_PROTOCOL = protocolId('heartbeat');

/** What heartbeats need of their node (carrier/node.ts gives it). */
export interface HeartbeatHost {
  readonly log: Logger;
  readonly metrics: { heartbeat(result: 'ok' | 'failed'): void; transition(to: string): void };
  /** Whether the node is stopping (no tick runs then). */
  stopping(): boolean;
  /** This node's role now ('member', 'joining', ...). */
  role(): string;
  /** The member list this node holds. */
  list(): MemberList | undefined;
  /** Members other than this node. */
  others(): string[];
  /** The addresses this node listens on. */
  addresses(): string[];
  /** The open connection to `peer` if there is one, else its listed addresses. */
  route(peer: string): string | string[];
  /** A carrier request (Carrier.request). */
  request(to: string | string[], protocol: string, message: unknown, options: { timeoutMs: number }): Promise<unknown>;
  /** Merges a list a peer sent (verified there); whether ours changed. */
  mergeFrom(list: unknown, from: string): Promise<boolean>;
  /** Runs at each tick, before any heartbeat is sent (the ledger feed's uptime watch). */
  watch(): void;
  /** A joining node's tick asks to join instead of sending heartbeats. */
  askToJoin(): Promise<void>;
}

export class Heartbeats {
  readonly #host: HeartbeatHost;
  readonly #config: Pick<NodeConfig, 'heartbeat' | 'requestTimeoutMs'>;
  readonly #detector: FailureDetector;
  readonly #inFlight = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(host: HeartbeatHost, config: Pick<NodeConfig, 'heartbeat' | 'requestTimeoutMs'>) {
    this.#host = host;
    this.#config = config;
    this.#detector = new FailureDetector(config.heartbeat);
  }

  /** Starts the heartbeat interval, and a tick now. */
  start(): void {
    this.#timer = setInterval(() => void this.tick(), this.#config.heartbeat.intervalMs);
    this.#timer.unref();
    void this.tick();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Watches `peers` from now on (the members other than this node, in the list adopted). */
  track(peers: Iterable<string>): void {
    this.#detector.track(peers);
  }

  health(peer: string): MemberHealth | undefined {
    return this.#detector.health(peer);
  }

  counts(): Record<MemberState, number> {
    return this.#detector.counts();
  }

  async tick(): Promise<void> {
    if (this.#host.stopping()) return;
    for (const t of this.#detector.tick()) this.#transition(t);
    this.#host.watch();
    if (this.#host.role() === 'joining') {
      await this.#host.askToJoin().catch((err: unknown) => this.#host.log.warn({ event: 'join-failed', err: errorText(err) }, 'join request failed; retrying'));
      return;
    }
    if (this.#host.role() !== 'member') return;
    for (const peer of this.#host.others()) {
      if (this.#inFlight.has(peer)) continue;
      this.#inFlight.add(peer);
      void this.#heartbeat(peer).finally(() => this.#inFlight.delete(peer));
    }
  }

  #transition(t: Transition): void {
    this.#host.metrics.transition(t.to);
    const level = t.to === 'alive' ? 'info' : 'warn';
    this.#host.log[level]({ event: 'member-state', peer: t.peer, from: t.from, to: t.to, silentMs: t.silentMs }, `member ${t.to}`);
  }

  async #heartbeat(peer: string): Promise<void> {
    const list = this.#host.list()!;
    try {
      const reply = (await this.#host.request(this.#host.route(peer), HEARTBEAT_PROTOCOL, { v: 1, list }, { timeoutMs: Math.min(this.#config.requestTimeoutMs, this.#config.heartbeat.suspectAfterMs) })) as { list?: unknown } | null;
      this.#host.metrics.heartbeat('ok');
      const t = this.#detector.heard(peer);
      if (t) this.#transition(t);
      if (reply && reply.list !== undefined) await this.#host.mergeFrom(reply.list, peer);
    } catch (err) {
      this.#host.metrics.heartbeat('failed');
      this.#host.log.debug({ event: 'heartbeat-failed', peer, err: errorText(err) }, 'heartbeat failed');
      if (err instanceof RefusedError && this.#host.role() === 'member') await this.#askWhyRefused(peer);
    }
  }

  /**
   * A member refused our heartbeat: we may have been revoked while the revoker could not reach us
   * (down, or its one announce timed out). Its join protocol, open to everyone, answers a revoked
   * peer with the signed list that revokes it, which we merge like any other (so only a real
   * revocation is believed). Asked once per refused heartbeat.
   */
  async #askWhyRefused(peer: string): Promise<void> {
    try {
      const request: JoinRequest = { v: 1, addresses: this.#host.addresses().slice(0, 16), check: true };
      const answer = (await this.#host.request(this.#host.route(peer), JOIN_PROTOCOL, request, { timeoutMs: Math.min(this.#config.requestTimeoutMs, this.#config.heartbeat.suspectAfterMs) })) as JoinAnswer | null;
      if (answer !== null && typeof answer === 'object' && answer.list !== undefined) await this.#host.mergeFrom(answer.list, peer);
    } catch (err) {
      this.#host.log.debug({ event: 'refusal-check-failed', peer, err: errorText(err) }, 'could not learn why a member refused a heartbeat');
    }
  }

  async onHeartbeat(message: unknown, peer: string): Promise<{ list?: MemberList }> {
    const m = message as { v?: unknown; list?: unknown } | null;
    if (m === null || typeof m !== 'object' || m.v !== 1 || m.list === undefined) throw new ProtocolError('malformed heartbeat');
    const t = this.#detector.heard(peer);
    if (t) this.#transition(t);
    await this.#host.mergeFrom(m.list, peer);
    const ours = this.#host.list()!;
    return (m.list as MemberList).signature === ours.signature ? {} : { list: ours };
  }

  /** Sends the current list to `peers` now (after a change an operator made), best effort. */
  async announce(peers: string[]): Promise<void> {
    const list = this.#host.list()!;
    await Promise.all(
      peers.map((peer) =>
        this.#host
          .request(this.#host.route(peer), HEARTBEAT_PROTOCOL, { v: 1, list }, { timeoutMs: Math.min(this.#config.requestTimeoutMs, 2000) })
          .then((reply) => {
            this.#host.log.debug({ event: 'announced', peer, epoch: list.epoch }, 'member list announced');
            const theirs = (reply as { list?: unknown } | null)?.list;
            // Not awaited: an announce runs inside a list change, and a merge waits for that change to end.
            if (theirs !== undefined && this.#host.role() === 'member') void this.#host.mergeFrom(theirs, peer).catch((err: unknown) => this.#host.log.warn({ event: 'merge-failed', peer, err: errorText(err) }, 'a list from a peer did not merge'));
          })
          .catch((err: unknown) => this.#host.log.debug({ event: 'announce-failed', peer, err: errorText(err) }, 'announce failed')),
      ),
    );
  }
}
