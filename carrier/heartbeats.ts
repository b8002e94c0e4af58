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
 *   - #heard: what each member said of itself (name, keyed) in its latest heartbeat or reply, set
 *     on each one and kept after it left or was revoked (so views still name it; only members
 *     reach heartbeats, so it holds at most one entry per peer the list ever approved); in memory
 *     only: after a restart the next beat says it again;
 *   - #inFlight: the heartbeats under way, one per member at a time;
 *   - #timer: the heartbeat interval (start, stop).
 * The member list and this node's role are the node's: this module reads them and hands lists
 * it receives to the node's merge (HeartbeatHost.mergeFrom), and does not import the node.
 */
import type { Logger } from 'pino';
import { ProtocolError, RefusedError, errorText } from '../lib/errors.js';
import { protocolId } from './carrier.js';
import { type NodeConfig, isNodeName } from './config.js';
import { FailureDetector, type MemberHealth, type MemberState, type Transition } from './detector.js';
import { type JoinAnswer, type JoinRequest, JOIN_PROTOCOL } from './joins.js';
import type { MemberList } from './membership.js';

export const HEARTBEAT_PROTOCOL = protocolId('heartbeat');

/**
 * What a member says of itself in every heartbeat, reply and announce: its configured name and
 * whether it runs the database (keyed). Optional fields of version 1 (docs/FORMAT.md, "Cluster
 * protocols"): a release before them neither sends nor reads them, so it interoperates and its
 * name and role stay unknown (null) to the others.
 */
export interface About {
  name: string | null;
  keyed: boolean;
}

/** The About fields of a heartbeat or reply: undefined when it has none (an older release). */
function aboutIn(m: { name?: unknown; keyed?: unknown }, what: string): About | undefined {
  if (m.name === undefined && m.keyed === undefined) return undefined;
  if (typeof m.keyed !== 'boolean' || !(m.name === null || isNodeName(m.name))) throw new ProtocolError(`malformed ${what}: name or keyed`);
  return { name: m.name, keyed: m.keyed };
}

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
  /** What this node says of itself to the others. */
  about(): About;
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
  readonly #heard = new Map<string, About>();
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

  /** What `peer` said of itself in its latest heartbeat or reply (undefined before one, or from an older release). */
  about(peer: string): About | undefined {
    return this.#heard.get(peer);
  }

  /** A heartbeat (or announce) to send: the list, and what this node says of itself. */
  #beat(list: MemberList): { v: 1; list: MemberList } & About {
    return { v: 1, list, ...this.#host.about() };
  }

  /** Keeps what `peer` said of itself in a heartbeat or reply, if it said anything. */
  #learn(peer: string, m: { name?: unknown; keyed?: unknown }, what: string): void {
    const about = aboutIn(m, what);
    if (about) this.#heard.set(peer, about);
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
    this.#host.log[level]({ event: 'member-state', peer: t.peer, from: t.from, to: t.to, silentMs: t.silentMs, timeoutScale: t.timeoutScale }, `member ${t.to}`);
  }

  async #heartbeat(peer: string): Promise<void> {
    const list = this.#host.list()!;
    try {
      const reply = (await this.#host.request(this.#host.route(peer), HEARTBEAT_PROTOCOL, this.#beat(list), { timeoutMs: Math.min(this.#config.requestTimeoutMs, this.#config.heartbeat.suspectAfterMs) })) as { list?: unknown; name?: unknown; keyed?: unknown } | null;
      this.#host.metrics.heartbeat('ok');
      const t = this.#detector.heard(peer);
      if (t) this.#transition(t);
      if (reply !== null && typeof reply === 'object') this.#learn(peer, reply, 'heartbeat reply');
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

  async onHeartbeat(message: unknown, peer: string): Promise<{ list?: MemberList } & About> {
    const m = message as { v?: unknown; list?: unknown; name?: unknown; keyed?: unknown } | null;
    if (m === null || typeof m !== 'object' || m.v !== 1 || m.list === undefined) throw new ProtocolError('malformed heartbeat');
    const t = this.#detector.heard(peer);
    if (t) this.#transition(t);
    this.#learn(peer, m, 'heartbeat');
    await this.#host.mergeFrom(m.list, peer);
    const ours = this.#host.list()!;
    return { ...((m.list as MemberList).signature === ours.signature ? {} : { list: ours }), ...this.#host.about() };
  }

  /** Sends the current list to `peers` now (after a change an operator made), best effort. */
  async announce(peers: string[]): Promise<void> {
    const list = this.#host.list()!;
    await Promise.all(
      peers.map((peer) =>
        this.#host
          .request(this.#host.route(peer), HEARTBEAT_PROTOCOL, this.#beat(list), { timeoutMs: Math.min(this.#config.requestTimeoutMs, 2000) })
          .then((reply) => {
            this.#host.log.debug({ event: 'announced', peer, epoch: list.epoch }, 'member list announced');
            if (reply !== null && typeof reply === 'object') this.#learn(peer, reply, 'heartbeat reply');
            const theirs = (reply as { list?: unknown } | null)?.list;
            // Not awaited: an announce runs inside a list change, and a merge waits for that change to end.
            if (theirs !== undefined && this.#host.role() === 'member') void this.#host.mergeFrom(theirs, peer).catch((err: unknown) => this.#host.log.warn({ event: 'merge-failed', peer, err: errorText(err) }, 'a list from a peer did not merge'));
          })
          .catch((err: unknown) => this.#host.log.debug({ event: 'announce-failed', peer, err: errorText(err) }, 'announce failed')),
      ),
    );
  }
}
