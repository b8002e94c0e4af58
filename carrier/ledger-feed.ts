/**
 * What this node tells the ledger of its own observations, and the copying of the ledger between
 * members (docs/node.md, "Ledger"): every `ledger.intervalMs` an uptime event (ms each member was
 * seen alive over ms watched), a holding event when what this node holds changed, and a served
 * event (bytes each member sent here for repair); every `ledger.syncIntervalMs` the events this
 * node lacks are copied from every live member (ledger-sync).
 *
 * Owns, and alone changes:
 *   - #seen: added to by watch() at each heartbeat tick, taken (and reset) by record();
 *   - #served: added to by served(), taken by record();
 *   - #lastHolding: the last holding event recorded, set by record();
 *   - #timers (start, stop) and #syncing (the sync under way; one at a time, sync()).
 * The ledger's events are the ledger's (carrier/ledger.ts): this module only records and accepts
 * them. What it needs of the node comes through FeedHost; it does not import the node.
 */
import type { Logger } from 'pino';
import { ProtocolError, errorText } from '../lib/errors.js';
import type { Ledger, WireEvent } from './ledger.js';

/** Bytes of ledger events per sync answer (well under the frame limit). */
const LEDGER_PAGE_BYTES = 1024 * 1024;

/** What the feed needs of its node (carrier/node.ts gives it). */
export interface FeedHost {
  readonly log: Logger;
  /** Whether this node is a member now (only members record and sync). */
  member(): boolean;
  /** Whether the node is stopping. */
  stopping(): boolean;
  /** Members other than this node. */
  others(): string[];
  /** Whether the failure detector sees `peer` alive. */
  alive(peer: string): boolean;
  /** The blocks this node holds now. */
  held(): Promise<ReadonlyArray<{ size: number }>>;
  memberViews(): Array<{ peerId: string; self: boolean; status: 'member' | 'revoked' | 'left'; state: string | null }>;
  request(peer: string, name: string, message: unknown, options?: { timeoutMs?: number }): Promise<unknown>;
}

export interface FeedConfig {
  ledger: { intervalMs: number; syncIntervalMs: number };
  requestTimeoutMs: number;
  maxFrameBytes: number;
}

export class LedgerFeed {
  readonly #host: FeedHost;
  readonly #ledger: Ledger;
  readonly #config: FeedConfig;
  /** For the ledger's uptime event: ms each member was seen alive, over ms watched, since the last one. */
  #seen = { period: 0, alive: new Map<string, number>(), at: performance.now() };
  /** For the ledger's served event: bytes each member sent here for repair since the last one. */
  #served = new Map<string, number>();
  #lastHolding = '';
  #timers: NodeJS.Timeout[] = [];
  #syncing: Promise<void> | undefined;

  constructor(host: FeedHost, ledger: Ledger, config: FeedConfig) {
    this.#host = host;
    this.#ledger = ledger;
    this.#config = config;
  }

  /** The ledger sync under way, if one is (stop waits for it). */
  get syncing(): Promise<void> | undefined {
    return this.#syncing;
  }

  /** Starts the timers, and records what this node holds at once, not an interval later. */
  start(): void {
    const ledgerTimer = setInterval(() => void this.record(), this.#config.ledger.intervalMs);
    const syncTimer = setInterval(() => void this.sync(), this.#config.ledger.syncIntervalMs);
    ledgerTimer.unref();
    syncTimer.unref();
    this.#timers = [ledgerTimer, syncTimer];
    // What this node holds goes on the ledger at once, not an interval later.
    void this.record();
  }

  stop(): void {
    for (const t of this.#timers) clearInterval(t);
  }

  /** Adds the time since the last heartbeat tick to each member seen alive (for the uptime event). */
  watch(): void {
    const now = performance.now();
    const elapsed = Math.round(now - this.#seen.at);
    this.#seen.at = now;
    if (!this.#host.member()) return;
    this.#seen.period += elapsed;
    for (const peer of this.#host.others()) {
      const alive = this.#host.alive(peer) ? elapsed : 0;
      this.#seen.alive.set(peer, (this.#seen.alive.get(peer) ?? 0) + alive);
    }
  }

  /** The ledger events of this node's own observations since the last ones: uptime seen, holding, served. */
  async record(): Promise<void> {
    if (!this.#host.member() || this.#host.stopping()) return;
    try {
      const { period, alive } = this.#seen;
      this.#seen = { period: 0, alive: new Map(), at: this.#seen.at };
      if (period > 0 && alive.size > 0) await this.#ledger.record({ k: 'uptime', b: { p: period, a: Object.fromEntries([...alive].map(([p, ms]) => [p, Math.min(ms, period)])) } });
      const held = await this.#host.held();
      const holding = { blocks: held.length, bytes: held.reduce((n, b) => n + b.size, 0) };
      const key = JSON.stringify(holding);
      if (key !== this.#lastHolding) {
        await this.#ledger.record({ k: 'holding', b: holding });
        this.#lastHolding = key;
      }
      if (this.#served.size > 0) {
        const served = Object.fromEntries(this.#served);
        this.#served = new Map();
        await this.#ledger.record({ k: 'served', b: served });
      }
    } catch (err) {
      this.#host.log.warn({ event: 'ledger-record-failed', err: errorText(err) }, 'could not record ledger events');
    }
  }

  /** `peer` sent this node `bytes` for repair or restore: counted into the next `served` event. */
  served(peer: string, bytes: number): void {
    this.#served.set(peer, (this.#served.get(peer) ?? 0) + bytes);
  }

  /**
   * Copies the ledger events this node lacks from every live member (one sync at a time). The
   * replies go in as one catch-up (Ledger.catchUp): quarantines change once, after every member
   * answered or failed, so a member lagging behind another cannot put this node through a
   * quarantine that the other's reply ends.
   */
  sync(): Promise<void> {
    this.#syncing ??= (async () => {
      if (!this.#host.member()) return;
      const round = this.#ledger.catchUp();
      try {
        await Promise.all(
          this.#host.memberViews()
            .filter((m) => !m.self && m.status === 'member' && m.state === 'alive')
            .map(async (m) => {
              try {
                for (let page = 0; page < 64; page++) {
                  const r = (await this.#host.request(m.peerId, 'ledger-sync', { v: 1, have: this.#ledger.vector() }, { timeoutMs: Math.min(this.#config.requestTimeoutMs, 5000) })) as { events?: unknown; more?: unknown };
                  if (!Array.isArray(r?.events)) throw new ProtocolError('malformed ledger-sync reply');
                  await round.accept(r.events as WireEvent[]);
                  if (r.more !== true) break;
                }
              } catch (err) {
                this.#host.log.debug({ event: 'ledger-sync-failed', peer: m.peerId, err: errorText(err) }, 'ledger sync failed');
              }
            }),
        );
      } finally {
        await round.end();
      }
    })().finally(() => (this.#syncing = undefined));
    return this.#syncing;
  }

  async onSync(m: unknown): Promise<{ events: WireEvent[]; more: boolean }> {
    const q = m as { v?: unknown; have?: unknown } | null;
    if (q === null || typeof q !== 'object' || q.v !== 1 || q.have === null || typeof q.have !== 'object' || Array.isArray(q.have) || Object.keys(q.have).length > 4096) throw new ProtocolError('malformed ledger-sync');
    return this.#ledger.since(q.have as Record<string, number>, Math.min(LEDGER_PAGE_BYTES, this.#config.maxFrameBytes / 2));
  }
}
