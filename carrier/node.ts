/**
 * A cluster member (docs/node.md): the carrier, the member list, joins, heartbeats and failure
 * detection, and optionally the embedded database, in one object. `ouro node start` runs one
 * in its own process; an application can run one beside its own code with `Node.start`.
 *
 * Access: the join protocol is open to any peer; every other protocol, heartbeats included and
 * whatever later issues register with `handle`, is open only to members of this node's current
 * list. A peer that is not one gets an OURO_REFUSED reply and its stream closed. When a list
 * revokes a member, its connections are hung up at once.
 *
 * Order of effects: a member list is saved (fsync) before this node acts on it or tells anyone;
 * a token is spent on disk before the approval it pays for is announced.
 *
 * This file is the one place that wires the parts. It builds each with what it needs of the
 * others: an interface the part declares (its host, its sources) or a callback, never this class;
 * no module it wires imports this one (carrier/index.ts and the admin API, carrier/admin.ts, are
 * built on it). The parts, each the owner of its state (its header says how):
 *   carrier.ts       the libp2p carrier and its handlers
 *   joins.ts         joining: join requests, the operators' decisions, join tokens
 *   heartbeats.ts    heartbeats (the list's gossip) and the failure detector
 *   ledger.ts        the ledger; ledger-feed.ts: this node's own ledger events, ledger sync
 *   replication.ts   block replication (its parts: replication-*.ts), on a shelf (shelf.ts)
 *   proofs.ts        proofs of storage
 *   metrics.ts       Prometheus metrics; series.ts: the status page's series
 *   cluster-view.ts  every member's status side by side; whether repair can heal
 *
 * Owns, and alone changes:
 *   - #list (members.json) and #role: only #adopt changes them, saving the list first, inside
 *     #serially; the role also when the member asked rejects this node's join (Joins.ask, through
 *     `rejected`). Every part reads them through its host;
 *   - #serial: list and join-state changes (this file's and Joins') run on it one at a time, in
 *     order;
 *   - #handling: the requests being handled (#track), which stop waits for; #stopping, set once
 *     by stop;
 *   - #draining: the drain of this node under way, started by #startDrain when a list drains it.
 */
import path from 'node:path';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import type { PrivateKey, Stream } from '@libp2p/interface';
import { pino, type Logger } from 'pino';
import { BadArgumentError, NotFoundError, OuroError, RefusedError, errorText } from '../lib/errors.js';
import type { OpenOptions, OuroDB } from '../lib/db.js';
import { OuroDB as Database } from '../lib/db.js';
import { ensureTokens } from './admin-tokens.js';
import { Carrier, type Handler, type HandlerContext, type RequestEvent, protocolId } from './carrier.js';
import { ClusterView, healState, memberFigures } from './cluster-view.js';
import { ClusterFiles, type JoinState, type PendingJoin } from './cluster-files.js';
import { type NodeConfig, type NodeConfigPatch, loadConfig, saveConfig } from './config.js';
import type { MemberState } from './detector.js';
import { type MemberView, memberViews } from './member-views.js';
import { Heartbeats } from './heartbeats.js';
import { loadIdentity } from './identity.js';
import { type EcPolicy, type MemberList, change, checkEcPolicy, draining, ecPolicyOf, isMember, members, merge, newCluster, replicationFactorOf, statusOf, verify } from './membership.js';
import { dialable, withLastPorts } from './addresses.js';
import { type JoinAnswer, JOIN_PROTOCOL, Joins, TOKEN_SPEND, requestJoin } from './joins.js';
import { StrangerLimiter } from './rate-limit.js';
import { carrierRelay } from './relay.js';
import { Ledger, type LedgerView } from './ledger.js';
import { LedgerFeed } from './ledger-feed.js';
import { type MetricSources, NodeMetrics } from './metrics.js';
import { Prover } from './proofs.js';
import { Replicator } from './replication.js';
import { Series } from './series.js';
import { DbShelf, DirShelf } from './shelf.js';

export { JOIN_PROTOCOL } from './joins.js';
export { HEARTBEAT_PROTOCOL } from './heartbeats.js';
export const PING_PROTOCOL = protocolId('ping');

export type NodeRole = 'member' | 'joining' | 'rejected' | 'revoked' | 'left';
export type { JoinAnswer } from './joins.js';

export interface NodeOptions {
  /** The node's directory: identity, config, cluster files, and the database if it has one. */
  dir: string;
  /** Laid over the config file (flags do this). */
  config?: NodeConfigPatch;
  /** An open database the application owns: the node serves it and leaves closing it to the caller. */
  db?: OuroDB;
  /** Credentials to open `<dir>/<database.path>` when the config enables the database (the node then owns and closes it). */
  dbOpen?: OpenOptions;
  /** Where structured logs go (default: none). `ouro node start` passes JSON lines on stdout. */
  logger?: Logger;
}

export type { MemberView } from './member-views.js';

export class Node {
  readonly dir: string;
  readonly config: NodeConfig;
  readonly carrier: Carrier;
  readonly log: Logger;
  readonly metrics: NodeMetrics;
  readonly db: OuroDB | undefined;
  readonly startedAt = Date.now();
  readonly #ownsDb: boolean;
  readonly #key: PrivateKey;
  readonly #files: ClusterFiles;
  readonly #heartbeats: Heartbeats;
  readonly replication: Replicator;
  readonly ledger: Ledger;
  readonly proofs: Prover;
  readonly series: Series;
  readonly cluster: ClusterView;
  #list: MemberList | undefined;
  #role: NodeRole;
  readonly #joins: Joins;
  readonly #feed: LedgerFeed;
  /** List and join-state changes run one at a time, in order. */
  #serial: Promise<unknown> = Promise.resolve();
  readonly #handling = new Set<Promise<unknown>>();
  #stopping = false;
  /** The drain of this node under way (it ends in leaving), once one started. */
  #draining: Promise<void> | undefined;

  private constructor(args: { dir: string; config: NodeConfig; carrier: Carrier; log: Logger; metrics: NodeMetrics; db: OuroDB | undefined; ownsDb: boolean; key: PrivateKey; files: ClusterFiles; list: MemberList | undefined; joins: JoinState; joinTarget: { peer: string[]; token?: string; database?: true } | undefined; ledger: Ledger }) {
    this.dir = args.dir;
    this.config = args.config;
    this.carrier = args.carrier;
    this.log = args.log;
    this.metrics = args.metrics;
    this.db = args.db;
    this.#ownsDb = args.ownsDb;
    this.#key = args.key;
    this.#files = args.files;
    this.#list = args.list;
    // A node that left stays `left` across restarts: its list holds the revocation it signed itself.
    this.#role = args.list ? (statusOf(args.list, this.peerId) === 'left' ? 'left' : isMember(args.list, this.peerId) ? 'member' : 'revoked') : 'joining';
    this.#joins = new Joins(
      {
        peerId: this.peerId,
        log: this.log,
        metrics: this.metrics,
        addresses: () => this.carrier.addresses,
        role: () => this.#role,
        list: () => this.#list,
        serially: (fn) => this.#serially(fn),
        adopt: (list, why) => this.#adopt(list, why),
        requireMember: () => this.#requireMember(),
        announce: (peers) => this.#heartbeats.announce(peers),
        others: () => this.#others(),
        askJoin: (peer, request) => this.carrier.request(peer, JOIN_PROTOCOL, request),
        request: (peer, name, message, options) => this.request(peer, name, message, options),
        requestTimeoutMs: args.config.requestTimeoutMs,
        reachable: (peer) => this.#heartbeats.health(peer)?.state !== 'dead',
        rejected: () => (this.#role = 'rejected'),
        joined: () => void this.#heartbeats.tick(),
      },
      args.files,
      args.key,
      args.joins,
      args.joinTarget,
    );
    this.#heartbeats = new Heartbeats(
      {
        log: this.log,
        metrics: this.metrics,
        stopping: () => this.#stopping,
        role: () => this.#role,
        list: () => this.#list,
        others: () => this.#others(),
        addresses: () => this.carrier.addresses,
        about: () => this.#about(),
        route: (peer) => this.#route(peer),
        request: (to, protocol, message, options) => this.carrier.request(to, protocol, message, options),
        mergeFrom: (list, from) => this.#mergeFrom(list, from),
        watch: () => this.#feed.watch(),
        askToJoin: () => this.#joins.ask(),
      },
      args.config,
    );
    const shelf = args.db ? new DbShelf(args.db) : new DirShelf(args.dir);
    this.replication = new Replicator(this, shelf, args.db, args.config.replication);
    this.ledger = args.ledger;
    this.#feed = new LedgerFeed(
      {
        log: this.log,
        member: () => this.#role === 'member',
        stopping: () => this.#stopping,
        others: () => this.#others(),
        alive: (peer) => this.#heartbeats.health(peer)?.state === 'alive',
        held: () => this.replication.held(),
        memberViews: () => this.memberViews(),
        request: (peer, name, message, options) => this.request(peer, name, message, options),
      },
      args.ledger,
      args.config,
    );
    this.proofs = new Prover(
      {
        peerId: this.peerId,
        log: this.log,
        metrics: this.metrics,
        memberViews: () => this.memberViews(),
        handle: (name, handler) => this.handle(name, handler),
        request: (peer, name, message, options) => this.request(peer, name, message, options),
        placement: (id) => this.replication.placement(id),
        holdersOf: (id) => this.replication.holdersOf(id),
        unconfirm: (id, peer, askedAt) => this.replication.unconfirm(id, peer, askedAt),
        removedSurplus: (id) => this.replication.wasRemovedSurplus(id),
        shardHolders: (id) => this.replication.shardHolders(id),
        unconfirmShard: (id, peer, index) => this.replication.unconfirmShard(id, peer, index),
        shardPlaced: (id, index) => this.replication.shardPlaced(id, index),
      },
      args.ledger,
      shelf,
      args.db,
      args.config.proofs,
    );
    this.series = new Series(
      {
        dir: args.dir,
        totals: () => this.metrics.totals(),
        repair: () => this.replication.progress,
        held: () => this.replication.held(),
        logicalBytes: () => (shelf instanceof DbShelf ? shelf.logicalBytes() : Promise.resolve({ logicalBytes: 0, adoptedLogicalBytes: 0 })),
      },
      args.config.series,
    );
    this.cluster = new ClusterView(this);
  }

  /**
   * Prepares a node directory: identity and config, and with `newCluster` a new cluster whose
   * only member is this node. Refuses a directory that already belongs to a cluster.
   */
  static async init(dir: string, options: { newCluster?: boolean; config?: NodeConfigPatch; identityKey?: Uint8Array } = {}): Promise<{ peerId: string; clusterId: string | null }> {
    const files = new ClusterFiles(dir);
    if (await files.readList()) throw new BadArgumentError(`${dir} already belongs to a cluster`);
    const config = await loadConfig(dir, options.config);
    await saveConfig(dir, config);
    await ensureTokens(dir); // the admin API's token, the same at every start
    const key = await loadIdentity(dir, options.identityKey);
    const peerId = peerIdFromPrivateKey(key).toString();
    if (!options.newCluster) return { peerId, clusterId: null };
    const list = await newCluster(key, [], config.replication.factor);
    await files.writeList(list);
    return { peerId, clusterId: list.clusterId };
  }

  /**
   * Records whom to ask to join (`ouro node join`); a node started with no member list asks
   * there until an operator approves or rejects it, or at once with a token.
   */
  static requestJoin(dir: string, peer: string[], token?: string, options?: { database?: boolean }): Promise<void> {
    return requestJoin(dir, peer, token, options);
  }

  static async start(options: NodeOptions): Promise<Node> {
    const dir = path.resolve(options.dir);
    const config = await loadConfig(dir, options.config);
    const log = options.logger ?? pino({ level: 'silent' });
    let db = options.db;
    const ownsDb = db === undefined && config.database.enabled;
    if (ownsDb) {
      if (!options.dbOpen) throw new BadArgumentError('the config enables the database: give its credentials (dbOpen)');
      db = await Database.open(path.join(dir, config.database.path), { maxUnsealedMs: config.replication.maxUnsealedMs, ...options.dbOpen });
    }
    try {
      const files = new ClusterFiles(dir);
      const key = await loadIdentity(dir, db?.deriveKey('node-identity'));
      const list = await files.readList();
      const target = list ? undefined : await files.readJoinTarget();
      if (!list && !target) throw new BadArgumentError(`${dir} is in no cluster: run \`ouro node init ${dir} --new-cluster\` or \`ouro node join ${dir} --peer ADDR\``);
      const metrics = new NodeMetrics();
      const peerId = peerIdFromPrivateKey(key).toString();
      let node: Node | undefined;
      const ledger = await Ledger.open({
        dir: path.join(dir, 'ledger'),
        key,
        peerId,
        clusterId: () => node?.clusterId ?? list?.clusterId,
        knownMember: (p) => (node?.list ?? list)?.approvals.some((a) => a.peerId === p) ?? false,
        policy: { after: config.proofs.quarantineAfter, windowMs: config.proofs.quarantineWindowMs },
        onQuarantine: (p, q) => node?.onQuarantine(p, q),
        onConflict: (o, n) => log.error({ event: 'ledger-conflict', observer: o, n }, 'a peer sent a ledger event that differs from the one held under the same number'),
      });
      const member = (p: string) => ((l) => l !== undefined && isMember(l, p))(node?.list ?? list), limiter = new StrangerLimiter({ log, metrics, member });
      const startCarrier = (listen: string[]) =>
        Carrier.start({ dir, listen, announce: config.announce, relay: carrierRelay(config.relay, member, log), privateKey: key, maxFrameBytes: config.maxFrameBytes, requestTimeoutMs: config.requestTimeoutMs, observe: (e: RequestEvent) => metrics.request(e), limit: (peer, protocol) => limiter.check(peer, protocol) });
      // Where the config leaves the port free, the one this node had last time (its entry in the
      // member list) if it is still free: members that were down meanwhile find it where they
      // left it. Else any free port, announced at start (#putOwnAddressesBack).
      const reuse = withLastPorts(config.listen, list?.addresses[peerId]);
      const carrier = await startCarrier(reuse)
        .catch((err: unknown) => {
          if (reuse === config.listen) throw err;
          log.info({ event: 'listen-port-taken', wanted: reuse, err: errorText(err) }, 'the port this node had last time is taken: listening on a free one');
          return startCarrier(config.listen);
        })
        .catch(async (err: unknown) => {
          await ledger.close().catch(() => {});
          throw err;
        });
      node = new Node({ dir, config, carrier, log, metrics, db, ownsDb, key, files, list, joins: await files.readJoins(), joinTarget: target, ledger });
      metrics.bind(node.#metricSources());
      try {
        await node.#begin();
      } catch (err) {
        await carrier.stop().catch(() => {});
        await ledger.close().catch(() => {});
        throw err;
      }
      return node;
    } catch (err) {
      if (ownsDb) await db!.close().catch(() => {});
      throw err;
    }
  }

  get peerId(): string {
    return this.carrier.peerId;
  }

  get role(): NodeRole {
    return this.#role;
  }

  /** The answer to this node's latest join request (null before one arrives). */
  get lastJoinAnswer(): JoinAnswer['status'] | null {
    return this.#joins.lastJoinAnswer;
  }

  /** Why the member asked rejected this node (a JoinRefusal code), or null. */
  get joinRefusal(): string | null {
    return this.#joins.lastRefusal;
  }

  get list(): MemberList | undefined {
    return this.#list;
  }

  get clusterId(): string | undefined {
    return this.#list?.clusterId;
  }

  /** The cluster's replication factor: the member list's, or this node's configured one for a list that has none. */
  get replicationFactor(): number {
    return (this.#list && replicationFactorOf(this.#list)) ?? this.config.replication.factor;
  }

  /** The cluster's erasure-coding policy (the member list's), or null: replicas only. */
  get ecPolicy(): EcPolicy | null {
    return this.#list ? ecPolicyOf(this.#list) : null;
  }

  async #begin(): Promise<void> {
    await this.carrier.handle(JOIN_PROTOCOL, (m, ctx) => this.#track(this.#joins.onJoin(m, ctx.peer)), { maxInboundStreams: 256 });
    await this.handle('heartbeat', (m, ctx) => this.#heartbeats.onHeartbeat(m, ctx.peer));
    await this.handle(TOKEN_SPEND, (m, ctx) => this.#joins.onSpend(m, ctx.peer));
    await this.handle('ping', () => ({ peerId: this.peerId, epoch: this.#list?.epoch ?? 0, time: Date.now() }));
    await this.handle('ledger-sync', (m) => this.#feed.onSync(m));
    await this.cluster.start();
    await this.replication.start();
    await this.proofs.start();
    this.series.start();
    this.#feed.start();
    this.log.info({ event: 'start', peerId: this.peerId, addresses: this.carrier.addresses, role: this.#role, clusterId: this.clusterId ?? null }, 'node started');
    if (this.#list && this.#role === 'member') {
      this.#heartbeats.track(this.#others());
      // Announce where this node listens now (ports may change across restarts).
      await this.#serially(() => this.#putOwnAddressesBack());
      // A drain cut short by a stop goes on.
      if (draining(this.#list).has(this.peerId)) this.#startDrain();
    } else if (this.#list) {
      this.log.warn({ event: this.#role, clusterId: this.clusterId }, `this node ${this.#role === 'left' ? 'left' : 'was revoked from'} its cluster; it serves nothing to the cluster`);
    }
    this.#heartbeats.start();
  }

  /**
   * Serves a protocol open only to members of the current list (the rule for everything but
   * joining). `name` becomes `/ouro/<name>/<major>`.
   */
  async handle(name: string, handler: Handler, options: { major?: number; maxInboundStreams?: number } = {}): Promise<void> {
    await this.carrier.handle(
      protocolId(name, options.major),
      (message, ctx) => this.#track(handler(message, ctx)),
      { allow: (peer) => this.#role === 'member' && this.#list !== undefined && isMember(this.#list, peer), maxInboundStreams: options.maxInboundStreams },
    );
  }

  /** handle() for a raw stream protocol (bulk transfers; see Carrier.handleStream). */
  async handleStream(name: string, handler: (stream: Stream, ctx: HandlerContext) => Promise<void>, options: { major?: number } = {}): Promise<void> {
    await this.carrier.handleStream(protocolId(name, options.major), (stream, ctx) => this.#track(handler(stream, ctx)), {
      allow: (peer) => this.#role === 'member' && this.#list !== undefined && isMember(this.#list, peer),
    });
  }

  /** A raw stream to a member by peer id (see handleStream). */
  openStream(peer: string, name: string, signal: AbortSignal, options: { major?: number } = {}): Promise<Stream> {
    return this.carrier.openStream(this.#route(peer), protocolId(name, options.major), signal);
  }

  get maxFrameBytes(): number {
    return this.config.maxFrameBytes;
  }

  get requestTimeoutMs(): number {
    return this.config.requestTimeoutMs;
  }

  /** Implements ReplicationHost.memberList: the signed list this node acts on. */
  memberList(): MemberList | undefined {
    return this.#list;
  }

  /** Implements ReplicationHost.learnList: merges a list a member sent with a request, as a heartbeat's. */
  async learnList(list: unknown, from: string): Promise<void> {
    if (this.#role === 'member') await this.#mergeFrom(list, from);
  }

  /** Sends a request to a member by peer id, dialing its listed addresses. */
  request(peer: string, name: string, message: unknown, options: { major?: number; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<unknown> {
    return this.carrier.request(this.#route(peer), protocolId(name, options.major), message, options);
  }

  /** The open connection if there is one (the peer may have dialed us from a new port), else its listed addresses. */
  #route(peer: string): string | string[] {
    if (this.carrier.node.getConnections(peerIdFromString(peer)).length > 0) return peer;
    const addresses = this.#list?.addresses[peer] ?? [];
    return addresses.length > 0 ? dialable(peer, addresses) : peer;
  }

  #track<T>(p: Promise<T> | T): Promise<T> {
    const promise = Promise.resolve(p);
    this.#handling.add(promise);
    void promise.finally(() => this.#handling.delete(promise)).catch(() => {});
    return promise;
  }

  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#serial.then(fn, fn);
    this.#serial = run.catch(() => {});
    return run;
  }

  /** Members other than this node. */
  #others(): string[] {
    return this.#list ? members(this.#list).filter((p) => p !== this.peerId) : [];
  }

  // ------------------------------------------------------------------ member list

  /** Saves `list`, then acts on it: tracking, hang-ups, role, logs. */
  async #adopt(list: MemberList, why: string, spare?: string): Promise<void> {
    const before = this.#list;
    await this.#files.writeList(list);
    this.#list = list;
    this.metrics.listChanged();
    const was = new Set(before ? members(before) : []);
    const now = new Set(members(list));
    for (const p of now) if (!was.has(p)) this.log.info({ event: 'member-added', peer: p, epoch: list.epoch }, 'member added');
    for (const r of list.revocations) {
      if (!was.has(r.peerId)) continue;
      const left = r.by === r.peerId;
      this.log.info({ event: left ? 'member-left' : 'member-revoked', peer: r.peerId, by: r.by, epoch: list.epoch }, left ? 'member left' : 'member revoked');
      // Cut off at once: whatever streams it has open here end now.
      if (r.peerId !== this.peerId && r.peerId !== spare) await this.carrier.node.hangUp(peerIdFromString(r.peerId)).catch(() => {});
    }
    this.log.debug({ event: 'member-list', epoch: list.epoch, signer: list.signer, why }, 'member list adopted');
    if (isMember(list, this.peerId)) {
      this.#role = 'member';
      this.#heartbeats.track(this.#others());
      if (draining(list).has(this.peerId)) this.#startDrain();
    } else if (this.#role === 'member') {
      const selfLeft = list.revocations.some((r) => r.peerId === this.peerId && r.by === this.peerId);
      this.#role = selfLeft ? 'left' : 'revoked';
      this.#heartbeats.track([]);
      this.log.warn({ event: this.#role, epoch: list.epoch }, selfLeft ? 'this node left the cluster' : 'this node was revoked from the cluster');
    }
  }

  /** Merges a list a peer sent (verified here), returns whether ours changed. */
  async #mergeFrom(theirs: unknown, from: string): Promise<boolean> {
    const ours = this.#list;
    if (!ours) return false;
    if ((theirs as MemberList | undefined)?.signature === ours.signature) return false;
    const verified = await verify(theirs);
    return this.#serially(async () => {
      const current = this.#list!;
      if (verified.signature === current.signature) return false;
      const { list, changed, selfRevoked } = await merge(current, verified, this.#key);
      if (changed) {
        await this.#adopt(list, `merge from ${from}`);
        await this.#putOwnAddressesBack();
        return true;
      }
      // A revoked member signs nothing (merge keeps its list), but it must still learn the news:
      // from a revocation that stands (a revoked key's forged revocation of this node does not).
      if (selfRevoked && !isMember(verified, this.peerId)) {
        await this.#adopt(verified, `revocation told by ${from}`);
        return true;
      }
      return false;
    });
  }

  /**
   * Signs a change giving this node's addresses as they are now, when the list gives others (call
   * it serially): after a restart on a new port, and whenever a list gives other ones. Since
   * version 3 of the list a merge keeps, per member, the addresses set at the latest epoch, so a
   * list re-signed by a member that had not yet heard of this node's move no longer brings the
   * old ones back (before, a merge took every entry from the list with the newer (epoch, signer):
   * two members restarting at once each undid the other's move, and in the chaos script a
   * restarted member saw the writer dead for minutes). This stays as the authority's check: each
   * member is the one that knows where it listens, and members with no connection open to it
   * reach it only through the list.
   */
  async #putOwnAddressesBack(): Promise<void> {
    const list = this.#list;
    if (!list || this.#role !== 'member' || !isMember(list, this.peerId)) return;
    const now = this.carrier.addresses;
    const listed = list.addresses[this.peerId] ?? [];
    if (JSON.stringify(listed) === JSON.stringify(now)) return;
    this.log.info({ event: 'own-addresses', listed, now }, 'the member list gave other addresses for this node: signing the ones it listens on');
    await this.#adopt(await change(list, this.#key, { addresses: now }), 'addresses');
  }

  /** Revoked and left members have their own lists; only members sign changes. */
  #requireMember(): MemberList {
    if (this.#role !== 'member' || !this.#list) throw new RefusedError(`this node is not a member (${this.#role})`);
    return this.#list;
  }

  // ------------------------------------------------------------------ ledger

  /** Implements ReplicationHost.served: counted into the next `served` ledger event. */
  served(peer: string, bytes: number): void {
    this.#feed.served(peer, bytes);
  }

  /** Copies the ledger events this node lacks from every live member (one sync at a time). */
  syncLedger(): Promise<void> {
    return this.#feed.sync();
  }

  /** The ledger quarantined a member, or an operator cleared it: placement changes, so repair runs. */
  onQuarantine(peer: string, quarantined: boolean): void {
    this.metrics.quarantine(quarantined);
    if (quarantined) this.log.error({ event: 'member-quarantined', peer, ledger: this.ledger.entry(peer) ?? null }, 'member quarantined after repeated failed proofs of storage: its blocks are placed elsewhere');
    else this.log.warn({ event: 'member-unquarantined', peer }, 'member quarantine cleared');
    this.replication.forget(peer);
    this.replication.kick();
  }

  /** Ends a member's quarantine (an operator's decision, recorded in the ledger for every member). */
  async clearQuarantine(peerId: string): Promise<LedgerView> {
    this.#requireMember();
    if (!this.ledger.quarantined(peerId)) throw new NotFoundError(`${peerId} is not quarantined`);
    await this.ledger.record({ k: 'clear', b: { s: peerId } });
    void this.syncLedger();
    return this.ledger.view();
  }

  // ------------------------------------------------------------------ operator actions

  pending(): PendingJoin[] {
    return this.#joins.pending();
  }

  /** Approves a pending join request; the joiner learns it on its next request. */
  approve(peerId: string): Promise<MemberList> {
    return this.#joins.approve(peerId);
  }

  /** Rejects a pending join request; that peer's later requests are rejected too. */
  reject(peerId: string): Promise<void> {
    return this.#joins.reject(peerId);
  }

  /** Revokes a member: saved, told to the revoked peer, then its connections here end; others learn by heartbeat. */
  revoke(peerId: string): Promise<MemberList> {
    return this.#serially(async () => {
      const list = this.#requireMember();
      if (peerId === this.peerId) throw new BadArgumentError('a node does not revoke itself: use leave');
      if (!isMember(list, peerId)) throw new NotFoundError(`${peerId} is not a member`);
      const others = this.#others();
      await this.#adopt(await change(list, this.#key, { revoke: [peerId] }), `revocation of ${peerId}`, peerId);
      // The revoked peer hears it from us (so it stops), then is cut off.
      await this.#heartbeats.announce([peerId]);
      await this.carrier.node.hangUp(peerIdFromString(peerId)).catch(() => {});
      void this.#heartbeats.announce(others.filter((p) => p !== peerId));
      return this.#list!;
    });
  }

  /**
   * Drains this node (`ouro node drain`): a drain certificate in the member list stops every new
   * placement on it; the repair passes then copy each block it holds to the block's placement
   * among the other members and drop this copy once all of them confirm theirs, so no block is
   * ever below its placement during the move. When every block it holds is held in full
   * elsewhere, the node leaves. Refused when the members left would be fewer than the
   * replication factor asks (add a member first). Resolves once the drain is under way; a
   * restart resumes it (the certificate is in the list).
   */
  drain(): Promise<void> {
    return this.#serially(async () => {
      const list = this.#requireMember();
      if (draining(list).has(this.peerId)) return;
      const candidates = this.replication.candidates();
      const remaining = candidates.filter((p) => p !== this.peerId).length;
      const needed = Math.min(Math.max(this.replicationFactor, this.ecPolicy ? this.ecPolicy.k + this.ecPolicy.m : 0), candidates.length);
      if (remaining < needed) throw new RefusedError(`draining would leave ${remaining} member${remaining === 1 ? '' : 's'} to hold blocks placed on ${needed}: add a member first`);
      const others = this.#others();
      await this.#adopt(await change(list, this.#key, { drain: [this.peerId] }), 'drain');
      await this.#heartbeats.announce(others);
    });
  }

  /** Sets the cluster's replication factor (a member list change; every member places by it once it has the list). */
  setReplicationFactor(factor: number): Promise<MemberList> {
    return this.#setRedundancy({ replicationFactor: factor }, `replication factor ${factor}`);
  }

  /**
   * `ouro cluster redundancy`: `replicas` N (the factor, erasure coding off) or `ec` K+M (the
   * factor stays, for the blocks below the small-block line). An ec policy is refused while fewer
   * than K+M members are placeable: each shard needs a member of its own.
   */
  setRedundancy(r: { replicas: number } | { ec: EcPolicy }): Promise<MemberList> {
    if (!('ec' in r)) return this.#setRedundancy({ replicationFactor: r.replicas, ec: null }, `redundancy replicas ${r.replicas}`);
    checkEcPolicy(r.ec);
    const placeable = this.replication.candidates().length;
    if (placeable < r.ec.k + r.ec.m) throw new RefusedError(`ec ${r.ec.k}+${r.ec.m} places each block's ${r.ec.k + r.ec.m} shards on as many members; the cluster has ${placeable} placeable: add members first`);
    return this.#setRedundancy({ replicationFactor: this.replicationFactor, ec: r.ec }, `redundancy ec ${r.ec.k}+${r.ec.m}`);
  }

  #setRedundancy(edit: { replicationFactor: number; ec?: EcPolicy | null }, what: string): Promise<MemberList> {
    return this.#serially(async () => {
      const list = this.#requireMember();
      const others = this.#others();
      await this.#adopt(await change(list, this.#key, edit), what);
      await this.#heartbeats.announce(others);
      this.replication.kick();
      return this.#list!;
    });
  }

  #startDrain(): void {
    if (this.#draining || this.#stopping) return;
    this.log.info({ event: 'drain-started' }, 'draining: blocks move to the other members, then this node leaves');
    this.#draining = this.replication
      .drain()
      .then(async () => {
        await this.leave();
        this.log.info({ event: 'drained' }, 'drained: every block this node held is on its placement elsewhere; it left the cluster');
      })
      .catch((err: unknown) => {
        if (!this.#stopping) this.log.error({ event: 'drain-failed', err: errorText(err) }, 'drain stopped');
      });
  }

  /** Leaves the cluster: the revocation of itself, announced to every member before returning. */
  leave(): Promise<void> {
    return this.#serially(async () => {
      const list = this.#requireMember();
      const others = this.#others();
      await this.#adopt(await change(list, this.#key, { leave: true }), 'leave');
      await this.#heartbeats.announce(others);
    });
  }

  /** A one-time join token valid for `ttlMs`; only its hash is kept. */
  createToken(ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    return this.#joins.createToken(ttlMs);
  }

  // ------------------------------------------------------------------ views

  /** What the metrics' gauges read when scraped. */
  #metricSources(): MetricSources {
    return {
      memberStates: () => this.stateCounts(),
      listEpoch: () => this.#list?.epoch ?? 0,
      member: () => this.#role === 'member',
      pendingJoins: () => this.pending().length,
      repair: () => this.replication.progress,
      quarantinedMembers: () => this.memberViews().filter((m) => m.quarantined).length,
      ledgerEvents: () => this.ledger.view().events,
      members: () => memberFigures(this.memberViews()),
      drain: () => this.replication.drainProgress,
      cannotHeal: () => healState(this.memberViews(), this.replicationFactor).cannotHeal,
      disk: () => this.series.disk(),
      db: this.db,
    };
  }

  memberViews(): MemberView[] {
    const hb = this.#heartbeats;
    return memberViews(this.#list, { self: this.peerId, selfAbout: this.#about(), startedAt: this.startedAt, health: (p) => hb.health(p), about: (p) => hb.about(p), quarantined: (p) => this.ledger.quarantined(p) });
  }

  /** What this node says of itself in its heartbeats: its name, and whether it runs the database. */
  #about(): { name: string | null; keyed: boolean } {
    return { name: this.config.name, keyed: this.db !== undefined };
  }

  stateCounts(): Record<MemberState, number> {
    return this.#heartbeats.counts();
  }

  async status(): Promise<Record<string, unknown>> {
    const ledger = this.ledger.view();
    return {
      peerId: this.peerId,
      role: this.#role,
      clusterId: this.clusterId ?? null,
      epoch: this.#list?.epoch ?? null,
      addresses: this.carrier.addresses,
      startedAt: this.startedAt,
      uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      members: this.#heartbeats.counts(),
      pendingJoins: this.#joins.pendingCount,
      database: this.db ? { dir: this.db.dir, ...(await this.db.stats()) } : null,
      replication: { factor: this.replicationFactor, ec: this.ecPolicy, ...this.replication.progress, ...healState(this.memberViews(), this.replicationFactor) },
      drain: this.replication.drainProgress,
      proofs: { enabled: this.config.proofs.enabled && this.db !== undefined, ...this.metrics.totals().proofs },
      ledger: { events: ledger.events, digest: ledger.digest, quarantined: ledger.members.filter((m) => m.quarantined).map((m) => m.peerId) },
      disk: await this.series.disk(),
    };
  }

  // ------------------------------------------------------------------ stopping

  /**
   * Stops: no new heartbeats, in-flight requests finish (up to the request time limit), the
   * database is sealed and closed if the node owns it, the carrier stops. Not a leave: the node
   * stays a member and is `dead` to the others until it returns.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#heartbeats.stop();
    this.#feed.stop();
    this.series.stop();
    const deadline = new Promise((r) => setTimeout(r, this.config.requestTimeoutMs).unref());
    await Promise.race([Promise.allSettled([...this.#handling]), deadline]);
    await this.#serial;
    await this.proofs.stop();
    await this.replication.stop();
    await this.#draining;
    await this.#feed.syncing;
    await this.carrier.stop();
    await this.ledger.close();
    if (this.#ownsDb) await this.db!.close();
    this.log.info({ event: 'stop', peerId: this.peerId }, 'node stopped');
  }
}
