/**
 * A node's Prometheus metrics (prom-client), in a registry of its own so that two nodes in one
 * process do not mix. docs/node.md lists them. Gauges that mirror state (members by state, list
 * epoch, database figures) are read when scraped, so they are never stale.
 *
 * A sink: it imports none of the parts it counts for. The parts report through the methods below
 * (each sees only the one it needs: the replicator `replicated`, the prover `proof`, the node the
 * rest); the gauges read the MetricSources declared here, which carrier/node.ts gives to bind().
 * Owns, and alone changes, its counters and the running totals (#totals), changed only by those
 * methods; the registry is read by the admin API's /metrics.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { fsyncFailures } from '../lib/errors.js';
import type { RequestEvent } from './carrier.js';

/** Replication repair figures a gauge shows (a subset of the replicator's progress). */
export interface RepairFigures {
  passes: number;
  checked: number;
  underReplicated: number;
  pushed: number;
  pushedBytes: number;
  removed: number;
  fetched: number;
  failures: number;
  verified: number;
  corrupt: number;
  /** Blocks held here not yet held by every member of their placement (last pass). */
  unsettled: number;
  /** At ec K+M: the coded blocks held whole here by healthy shards (last pass; see ShardCounts in replication-repair.ts). */
  shardHealth: { blocks: number; full: number; atThreshold: number; unreadable: number };
  /** Since start: shards rebuilt and pushed, and their bytes. */
  shardsRepaired: number;
  shardsRepairedBytes: number;
}

/** A current member as the per-member gauges show it (name: the one it configured, if any). */
export interface MemberFigure {
  peerId: string;
  name: string | null;
  /** Failure detector state, `alive` for this node; `unknown` before the detector has heard it. */
  state: string;
}

/** This node's drain, while it drains (replication's DrainProgress). */
export interface DrainFigures {
  held: number;
  unsettled: number;
  passes: number;
  done: boolean;
}

/**
 * Label sets fixed by the code: each is set to 0 at start, so that a series exists before its
 * first event. Without it `increase()` over a counter misses the first event (Prometheus sees
 * the series appear at 1, not rise from 0), and the documented alert on the first failed proof
 * never fires.
 */
const FIXED_LABELS = {
  heartbeats: ['ok', 'failed'],
  transitions: ['alive', 'suspect', 'dead'],
  joins: ['approved', 'pending', 'rejected'],
  directions: ['in', 'out'],
  proofs: ['pass', 'fail', 'late', 'undecided'],
  quarantines: ['start', 'end'],
  rateLimited: ['peer', 'strangers'],
} as const;

/** The failure detector's states, and `unknown`: each member's `ouro_member_state` series has one 1 among them. */
const MEMBER_STATES = ['alive', 'suspect', 'dead', 'unknown'] as const;

/** Database figures the gauges show (from OuroDB.stats). */
export interface DbFigures {
  logicalBytes: number;
  uniqueBytes: number;
  storedBytes: number;
  walBytes: number;
  objects: number;
  chunks: number;
  blocks: number;
  walRecords: number;
}

/** What the gauges read when scraped (carrier/node.ts gives them to bind()). */
export interface MetricSources {
  /** Members other than this node, by failure detector state. */
  memberStates(): Record<string, number>;
  /** Epoch of the member list this node holds (0 before it has one). */
  listEpoch(): number;
  /** Whether this node is a member of its cluster now. */
  member(): boolean;
  /** Join requests waiting for an operator on this node. */
  pendingJoins(): number;
  repair(): RepairFigures;
  /** Members the ledger has quarantined. */
  quarantinedMembers(): number;
  /** Ledger events this node holds. */
  ledgerEvents(): number;
  /** Current members (this node included; revoked and left ones are not). */
  members(): MemberFigure[];
  /** This node's drain; null while it does not drain. */
  drain(): DrainFigures | null;
  /** Whether fewer members are live than the replication factor (repair cannot restore placements). */
  cannotHeal(): boolean;
  /** The file system of the node's directory (total and free bytes), and the block bytes held. */
  disk(): Promise<{ totalBytes: number; freeBytes: number; heldBytes: number }>;
  /** The database, when the node has one (the database gauges exist only then). */
  readonly db: { stats(): Promise<DbFigures> } | undefined;
}

/** The HTTP statuses the admin API's /db/ routes answer (docs/node.md, "Database over the admin API"). */
const DB_STATUSES = ['200', '400', '401', '403', '404', '405', '409', '500', '503', '504'];

export class NodeMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'protocol' | 'direction' | 'outcome'>;
  readonly #requestSeconds: Histogram<'protocol' | 'direction'>;
  readonly #heartbeats: Counter<'result'>;
  readonly #transitions: Counter<'to'>;
  readonly #joins: Counter<'outcome'>;
  readonly #rateLimited: Counter<'reason'>;
  readonly #listChanges: Counter;
  readonly #ecDegradedReads: Counter;
  readonly #replicatedBlocks: Counter<'direction'>;
  readonly #replicatedBytes: Counter<'direction'>;
  readonly #proofs: Counter<'result'>;
  readonly #quarantines: Counter<'change'>;
  readonly #dbRequests: Counter<'route' | 'method' | 'status'>;
  readonly #dbSeconds: Histogram<'route' | 'method'>;
  /** Plain running totals for the status page's series (prom-client counters are read asynchronously). */
  readonly #totals = { replicatedIn: 0, replicatedOut: 0, proofs: { pass: 0, fail: 0, late: 0, undecided: 0 } };

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'ouro_' });
    this.#requests = new Counter({ name: 'ouro_carrier_requests_total', help: 'Carrier requests finished, by protocol, direction (in: served, out: sent) and outcome (ok, refused, or an error code)', labelNames: ['protocol', 'direction', 'outcome'], registers });
    this.#requestSeconds = new Histogram({ name: 'ouro_carrier_request_seconds', help: 'Carrier request duration', labelNames: ['protocol', 'direction'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10], registers });
    this.#heartbeats = new Counter({ name: 'ouro_heartbeats_sent_total', help: 'Heartbeats sent, by result (ok, failed)', labelNames: ['result'], registers });
    this.#transitions = new Counter({ name: 'ouro_member_transitions_total', help: 'Failure detector transitions, by the state entered', labelNames: ['to'], registers });
    this.#rateLimited = new Counter({ name: 'ouro_rate_limited_total', help: 'Requests from non-members refused unread for their rate (carrier/rate-limit.ts), by reason: peer (its own limit), strangers (the limit all non-members share)', labelNames: ['reason'], registers });
    this.#joins = new Counter({ name: 'ouro_join_requests_total', help: 'Join requests answered, by outcome (approved, pending, rejected)', labelNames: ['outcome'], registers });
    this.#replicatedBlocks = new Counter({ name: 'ouro_replicated_blocks_total', help: 'Blocks transferred to (out) or from (in) other members and kept durably there or here', labelNames: ['direction'], registers });
    this.#replicatedBytes = new Counter({ name: 'ouro_replicated_bytes_total', help: 'Bytes of those blocks', labelNames: ['direction'], registers });
    this.#proofs = new Counter({ name: 'ouro_proofs_total', help: 'Proof-of-storage challenges this node made, by verdict (pass, fail, late, undecided: no verdict, e.g. the connection was lost)', labelNames: ['result'], registers });
    this.#quarantines = new Counter({ name: 'ouro_quarantine_changes_total', help: 'Members this node saw quarantined (change=start) or cleared (change=end)', labelNames: ['change'], registers });
    this.#dbRequests = new Counter({ name: 'ouro_admin_db_requests_total', help: 'Requests to the admin API\'s /db/ routes answered, by route (`other`: no such route), method and HTTP status', labelNames: ['route', 'method', 'status'], registers });
    this.#dbSeconds = new Histogram({ name: 'ouro_admin_db_request_seconds', help: 'Duration of requests to the admin API\'s /db/ routes, until the answer is sent (a streamed value included)', labelNames: ['route', 'method'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60], registers });
    new Counter({
      name: 'ouro_fsync_failures_total',
      help: 'fsync/fdatasync calls that failed in this process (each is fatal to the handle: see docs/operations.md)',
      registers,
      collect() {
        this.reset();
        this.inc(fsyncFailures());
      },
    });
    // A counter without labels starts at 0 by itself (no series to initialise).
    this.#ecDegradedReads = new Counter({ name: 'ouro_ec_degraded_reads_total', help: 'Erasure-coded blocks this node read back by decoding, a data shard being missing or corrupt', registers });
    this.#listChanges = new Counter({ name: 'ouro_member_list_changes_total', help: 'Member lists adopted (made here or merged from peers)', registers });
    for (const result of FIXED_LABELS.heartbeats) this.#heartbeats.inc({ result }, 0);
    for (const to of FIXED_LABELS.transitions) this.#transitions.inc({ to }, 0);
    for (const outcome of FIXED_LABELS.joins) this.#joins.inc({ outcome }, 0);
    for (const reason of FIXED_LABELS.rateLimited) this.#rateLimited.inc({ reason }, 0);
    for (const direction of FIXED_LABELS.directions) {
      this.#replicatedBlocks.inc({ direction }, 0);
      this.#replicatedBytes.inc({ direction }, 0);
    }
    for (const result of FIXED_LABELS.proofs) this.#proofs.inc({ result }, 0);
    for (const change of FIXED_LABELS.quarantines) this.#quarantines.inc({ change }, 0);
  }

  /** Adds the gauges that read the node's state when scraped. */
  bind(sources: MetricSources): void {
    const registers = [this.registry];
    new Gauge({
      name: 'ouro_cluster_members',
      help: 'Members of the cluster other than this node, by failure detector state',
      labelNames: ['state'],
      registers,
      collect() {
        for (const [state, n] of Object.entries(sources.memberStates())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'ouro_member_list_epoch',
      help: 'Epoch of the member list this node holds',
      registers,
      collect() {
        this.set(sources.listEpoch());
      },
    });
    new Gauge({
      name: 'ouro_node_member',
      help: '1 while this node is a member of its cluster, 0 while joining, rejected, revoked or after leaving',
      registers,
      collect() {
        this.set(sources.member() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'ouro_pending_joins',
      help: 'Join requests waiting for an operator on this node',
      registers,
      collect() {
        this.set(sources.pendingJoins());
      },
    });
    new Gauge({
      name: 'ouro_repair',
      help: 'Replication repair progress: passes, blocks checked and below placement in the last pass, and since start blocks pushed, bytes pushed, surplus copies removed, blocks fetched, failures, blocks verified by scrubbing and found corrupt',
      labelNames: ['kind'],
      registers,
      collect() {
        const p = sources.repair();
        this.set({ kind: 'passes' }, p.passes);
        this.set({ kind: 'checked' }, p.checked);
        this.set({ kind: 'under_replicated' }, p.underReplicated);
        this.set({ kind: 'pushed' }, p.pushed);
        this.set({ kind: 'pushed_bytes' }, p.pushedBytes);
        this.set({ kind: 'removed' }, p.removed);
        this.set({ kind: 'fetched' }, p.fetched);
        this.set({ kind: 'failures' }, p.failures);
        this.set({ kind: 'verified' }, p.verified);
        this.set({ kind: 'corrupt' }, p.corrupt);
        this.set({ kind: 'shards_repaired' }, p.shardsRepaired);
        this.set({ kind: 'shards_repaired_bytes' }, p.shardsRepairedBytes);
      },
    });
    new Gauge({
      name: 'ouro_ec_blocks',
      help: 'At ec K+M, coded blocks held whole here (the writer\'s) by healthy shards at the start of the last repair pass: full (K+M), at_threshold (K + repairThreshold or fewer, repaired), unreadable (under K, readable only from a whole copy), total',
      labelNames: ['health'],
      registers,
      collect() {
        const h = sources.repair().shardHealth;
        this.set({ health: 'full' }, h.full);
        this.set({ health: 'at_threshold' }, h.atThreshold);
        this.set({ health: 'unreadable' }, h.unreadable);
        this.set({ health: 'total' }, h.blocks);
      },
    });
    new Gauge({
      name: 'ouro_under_replicated_blocks',
      help: 'Blocks held here that were below their placement at the start of the last repair pass',
      registers,
      collect() {
        this.set(sources.repair().underReplicated);
      },
    });
    new Gauge({
      name: 'ouro_unsettled_blocks',
      help: 'Blocks held here not yet held by every member of their placement at the end of the last repair pass',
      registers,
      collect() {
        this.set(sources.repair().unsettled);
      },
    });
    new Gauge({
      name: 'ouro_replication_cannot_heal',
      help: '1 while fewer members are live than the replication factor: under-replicated blocks cannot regain their placement until a member is added or returns',
      registers,
      collect() {
        this.set(sources.cannotHeal() ? 1 : 0);
      },
    });
    // Per member, so that an alert can say who is down. Reset at each scrape: a member revoked or
    // gone leaves no stale series behind.
    new Gauge({
      name: 'ouro_member_up',
      help: 'Per current member (this node included): 1 while alive as this node sees it, else 0',
      labelNames: ['peer', 'name'],
      registers,
      collect() {
        this.reset();
        for (const m of sources.members()) this.set({ peer: m.peerId, name: m.name ?? '' }, m.state === 'alive' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'ouro_member_state',
      help: "Per current member: 1 for its failure detector state as this node sees it, 0 for the others (alive, suspect, dead, unknown)",
      labelNames: ['peer', 'name', 'state'],
      registers,
      collect() {
        this.reset();
        for (const m of sources.members()) for (const state of MEMBER_STATES) this.set({ peer: m.peerId, name: m.name ?? '', state }, m.state === state ? 1 : 0);
      },
    });
    new Gauge({
      name: 'ouro_draining',
      help: '1 while this node drains (its blocks move to the other members, then it leaves), else 0',
      registers,
      collect() {
        this.set(sources.drain() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'ouro_drain_blocks',
      help: "This node's drain, at the last finished pass: blocks held here (held) and of them those not yet held by every member of their placement (unsettled); 0 while it does not drain",
      labelNames: ['kind'],
      registers,
      collect() {
        const d = sources.drain();
        this.set({ kind: 'held' }, d?.held ?? 0);
        this.set({ kind: 'unsettled' }, d?.unsettled ?? 0);
      },
    });
    new Gauge({
      name: 'ouro_quarantined_members',
      help: 'Members the ledger has quarantined (repeated failed proofs of storage)',
      registers,
      collect() {
        this.set(sources.quarantinedMembers());
      },
    });
    new Gauge({
      name: 'ouro_ledger_events',
      help: 'Ledger events this node holds (members holding the same events show the same ledger)',
      registers,
      collect() {
        this.set(sources.ledgerEvents());
      },
    });
    new Gauge({
      name: 'ouro_disk_bytes',
      help: "The file system of the node's directory: total and free (available to the node) bytes, and block bytes this node holds",
      labelNames: ['kind'],
      registers,
      async collect() {
        const d = await sources.disk();
        this.set({ kind: 'total' }, d.totalBytes);
        this.set({ kind: 'free' }, d.freeBytes);
        this.set({ kind: 'held' }, d.heldBytes);
      },
    });
    if (sources.db) {
      const db = sources.db;
      new Gauge({
        name: 'ouro_db_bytes',
        help: 'Database bytes by kind: logical (as stored by applications), unique (after dedup), stored (block files), wal (not yet sealed)',
        labelNames: ['kind'],
        registers,
        async collect() {
          const s = await db.stats();
          this.set({ kind: 'logical' }, s.logicalBytes);
          this.set({ kind: 'unique' }, s.uniqueBytes);
          this.set({ kind: 'stored' }, s.storedBytes);
          this.set({ kind: 'wal' }, s.walBytes);
        },
      });
      new Gauge({
        name: 'ouro_db_items',
        help: 'Database counts by kind: objects, chunks, blocks (sealed), wal_records',
        labelNames: ['kind'],
        registers,
        async collect() {
          const s = await db.stats();
          this.set({ kind: 'objects' }, s.objects);
          this.set({ kind: 'chunks' }, s.chunks);
          this.set({ kind: 'blocks' }, s.blocks);
          this.set({ kind: 'wal_records' }, s.walRecords);
        },
      });
    }
  }

  request(e: RequestEvent): void {
    this.#requests.inc({ protocol: e.protocol, direction: e.direction, outcome: e.outcome });
    this.#requestSeconds.observe({ protocol: e.protocol, direction: e.direction }, e.seconds);
  }

  /**
   * The admin API serves these database routes: each (route, method) starts at 0 for every status
   * the routes answer, so a rate or an alert on, say, 5xx has a series before the first failure.
   */
  dbRoutes(routes: Array<{ route: string; method: string }>): void {
    for (const { route, method } of routes) {
      this.#dbSeconds.zero({ route, method });
      for (const status of DB_STATUSES) this.#dbRequests.inc({ route, method, status }, 0);
    }
  }

  dbRequest(route: string, method: string, status: number, seconds: number): void {
    this.#dbRequests.inc({ route, method, status: String(status) });
    this.#dbSeconds.observe({ route, method }, seconds);
  }

  heartbeat(result: 'ok' | 'failed'): void {
    this.#heartbeats.inc({ result });
  }

  transition(to: string): void {
    this.#transitions.inc({ to });
  }

  join(outcome: string): void {
    this.#joins.inc({ outcome });
  }

  rateLimited(reason: string): void {
    this.#rateLimited.inc({ reason });
  }

  replicated(direction: 'in' | 'out', bytes: number): void {
    this.#replicatedBlocks.inc({ direction });
    this.#replicatedBytes.inc({ direction }, bytes);
    if (direction === 'in') this.#totals.replicatedIn += bytes;
    else this.#totals.replicatedOut += bytes;
  }

  proof(result: 'pass' | 'fail' | 'late' | 'undecided'): void {
    this.#proofs.inc({ result });
    this.#totals.proofs[result]++;
  }

  quarantine(started: boolean): void {
    this.#quarantines.inc({ change: started ? 'start' : 'end' });
  }

  /** Running totals since start (for the series and /status). */
  totals(): { replicatedIn: number; replicatedOut: number; proofs: { pass: number; fail: number; late: number; undecided: number } } {
    return { ...this.#totals, proofs: { ...this.#totals.proofs } };
  }

  /** A block fetched from its shards needed parity: a data shard was missing or failed its hash. */
  ecDegradedRead(): void {
    this.#ecDegradedReads.inc();
  }

  listChanged(): void {
    this.#listChanges.inc();
  }
}
