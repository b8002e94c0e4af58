/**
 * Joining a cluster (docs/node.md, "Membership"): the joining side, which asks the member named in
 * join.json until an operator decides or a token admits it, and the member side of the join
 * protocol (open to any peer), with the operator's decisions on the requests and the join tokens.
 *
 * Owns, and alone changes:
 *   - #joins (joins.json: requests waiting for an operator, peers rejected, token hashes, spent
 *     token hashes): changed
 *     only inside the node's list changes (JoinHost.serially), by onJoin, approve, reject and
 *     createToken, each saving the file (fsync) before answering; a token is spent on disk before
 *     the approval it pays for exists anywhere;
 *   - #joinTarget (join.json: whom this node asks): written by requestJoin (`ouro node join`,
 *     before the node starts), cleared by ask() once approved;
 *   - #lastJoinAnswer, #lastRefusal: the answer to this node's latest request and, when it was a
 *     rejection, why; set by ask().
 * The member list and this node's role are the node's: it changes them through the JoinHost it
 * gives (adopt, rejected), and this module does not import it.
 */
import crypto from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';
import type { Logger } from 'pino';
import { BadArgumentError, NotFoundError, ProtocolError, RefusedError } from '../lib/errors.js';
import { protocolId } from './carrier.js';
import { ClusterFiles, type JoinState, type PendingJoin } from './cluster-files.js';
import { type MemberList, change, isMember, verify } from './membership.js';

export const JOIN_PROTOCOL = protocolId('join');

/** At most this many join requests wait for an operator; the oldest is dropped beyond it. */
const MAX_PENDING = 100;
const TOKEN_PREFIX = 'ouro-join-v1';
const TOKEN_RE = /^ouro-join-v1\.[0-9a-f]{32}\.[A-Za-z0-9_-]{43}$/;
/**
 * Expired and spent token hashes are kept this long (the longest ttl), so that a late or second
 * try is told `token-expired` or `token-used` rather than `token-unknown`; at most MAX_SPENT spent.
 */
const RETAIN_MS = 30 * 24 * 3600_000;
const MAX_SPENT = 1000;

/**
 * Why a join was rejected: a stable code, sent to the joiner as `reason` (docs/FORMAT.md,
 * "Cluster protocols"), logged on the member (`join-rejected`), and the `reason` of the
 * joiner's RefusedError (docs/errors.md). None tells a stranger anything it could probe with:
 * the token codes tell malformed text, another cluster's id (which pending answers give anyway)
 * and a secret this member never issued apart; only the holder of a secret this member did issue
 * learns that it expired or was spent, and no code says how near a wrong secret came.
 */
export const JOIN_REFUSALS = {
  revoked: 'this node was revoked from the cluster (it rejoins only with a new identity)',
  rejected: 'an operator of the member rejected this node',
  'not-a-member': 'not a member of this cluster here',
  'token-malformed': 'the token is malformed (expected ouro-join-v1.<cluster id>.<secret>)',
  'token-foreign': 'the token was made for another cluster',
  'token-unknown': 'no member asked made this token (the member that made it checks it, and must be reachable)',
  'token-expired': 'the token expired',
  'token-used': 'the token was already used',
} as const;
export type JoinRefusal = keyof typeof JOIN_REFUSALS;

/** The text for a refusal: a known code's, or what an older member sent in its place. */
export function refusalText(reason: string | null | undefined): string {
  if (reason === null || reason === undefined) return 'no reason given';
  return Object.hasOwn(JOIN_REFUSALS, reason) ? JOIN_REFUSALS[reason as JoinRefusal] : reason;
}

export interface JoinAnswer {
  status: 'approved' | 'pending' | 'rejected';
  clusterId?: string;
  /** With `rejected`: a JoinRefusal code (a member of an older release sends free text). */
  reason?: string;
  list?: MemberList;
}

export interface JoinRequest {
  v: number;
  addresses: string[];
  token?: string;
  /**
   * Set by a member whose heartbeat this peer refused, asking why: the answer is as for a join
   * (a revoked peer gets the signed list that revokes it), but a peer the member does not know is
   * neither recorded as pending nor counted, only answered `rejected`.
   */
  check?: true;
}

/**
 * The members-only protocol by which the member a joiner asked has a token it did not make
 * checked and spent by the member that made it (docs/FORMAT.md, "Cluster protocols"): a token
 * made on any member admits through any member, and stays single-use and time-limited cluster
 * wide because only its maker, holding its hash, spends it (one at a time, on disk).
 */
export const TOKEN_SPEND = 'join-token';
/** Spend answers, best first: one member spent it, else the most telling refusal wins. */
const SPEND_RANK = ['spent', 'token-used', 'token-expired', 'token-unknown'] as const;
type SpendAnswer = (typeof SPEND_RANK)[number];

/** onJoin's inner answer when a token is not this member's: ask its maker, outside the serial section. */
const ELSEWHERE = Symbol('ask the token\'s maker');

const hashToken = (secret: string) => crypto.createHash('sha256').update(secret).digest('hex');

/**
 * Records whom to ask to join (`ouro node join`, Node.requestJoin); a node started with no member
 * list asks there until an operator approves or rejects it, or at once with a token. With
 * `database`, the node is to take the cluster's database once approved (see databaseToTake).
 */
export async function requestJoin(dir: string, peer: string[], token?: string, options: { database?: boolean } = {}): Promise<void> {
  const files = new ClusterFiles(dir);
  if (await files.readList()) throw new BadArgumentError(`${dir} already belongs to a cluster`);
  for (const p of peer) if (!/\/p2p\/[^/]+$/.test(p)) throw new BadArgumentError(`--peer ${p} must end in /p2p/<peer id>`);
  await files.writeJoinTarget(peer, token, options.database === true);
}

/**
 * The member to take the cluster's database from (its multiaddrs), when the node in `dir` joined
 * with `--database` and has not taken it yet; else undefined. Approved or not yet: the caller
 * runs the node until it is a member, then takes it and calls databaseTaken.
 */
export async function databaseToTake(dir: string): Promise<string[] | undefined> {
  const target = await new ClusterFiles(dir).readJoinTarget();
  return target?.database ? target.peer : undefined;
}

/** The node in `dir` holds the cluster's database now: its join is over. */
export function databaseTaken(dir: string): Promise<void> {
  return new ClusterFiles(dir).removeJoinTarget();
}

/** What joining needs of its node (carrier/node.ts gives it). */
export interface JoinHost {
  readonly peerId: string;
  readonly log: Logger;
  readonly metrics: { join(outcome: string): void };
  /** The addresses this node listens on (sent with its join request). */
  addresses(): string[];
  /** This node's role now ('member', 'joining', ...). */
  role(): string;
  /** The member list this node holds. */
  list(): MemberList | undefined;
  /** Runs `fn` after the list and join-state changes before it, one at a time. */
  serially<T>(fn: () => Promise<T>): Promise<T>;
  /** Saves `list`, then acts on it (call it serially). */
  adopt(list: MemberList, why: string): Promise<void>;
  /** The list, when this node is a member; refuses otherwise. */
  requireMember(): MemberList;
  /** Sends the current list to `peers` now, best effort. */
  announce(peers: string[]): Promise<void>;
  /** Members other than this node. */
  others(): string[];
  /** Sends a join request to the member at `peer` (multiaddrs) and returns its answer. */
  askJoin(peer: string[], request: JoinRequest): Promise<unknown>;
  /** Sends `message` on the members-only protocol `name` to the member `peer`. */
  request(peer: string, name: string, message: unknown, options: { timeoutMs?: number }): Promise<unknown>;
  /** Whether `peer` may answer now (not dead to this node): a dead one is not waited for. */
  reachable(peer: string): boolean;
  /** The time limit of a request to another member. */
  readonly requestTimeoutMs: number;
  /** The member asked rejected this node. */
  rejected(): void;
  /** This node joined (heartbeats may start at once). */
  joined(): void;
}

export class Joins {
  readonly #host: JoinHost;
  readonly #files: ClusterFiles;
  readonly #key: PrivateKey;
  #joins: JoinState;
  #joinTarget: { peer: string[]; token?: string; database?: true } | undefined;
  #lastJoinAnswer: JoinAnswer['status'] | null = null;
  #lastRefusal: string | null = null;

  constructor(host: JoinHost, files: ClusterFiles, key: PrivateKey, joins: JoinState, joinTarget: { peer: string[]; token?: string; database?: true } | undefined) {
    this.#host = host;
    this.#files = files;
    this.#key = key;
    this.#joins = joins;
    this.#joinTarget = joinTarget;
  }

  /** The answer to this node's latest join request (null before one arrives). */
  get lastJoinAnswer(): JoinAnswer['status'] | null {
    return this.#lastJoinAnswer;
  }

  /** Why the member asked rejected this node (a JoinRefusal code), or null. */
  get lastRefusal(): string | null {
    return this.#lastRefusal;
  }

  /** Join requests waiting for an operator. */
  get pendingCount(): number {
    return this.#joins.pending.length;
  }

  // ------------------------------------------------------------------ joining

  /** The joining side: asks the member named in join.json. */
  async ask(): Promise<void> {
    const target = this.#joinTarget!;
    const answer = (await this.#host.askJoin(target.peer, { v: 1, addresses: this.#host.addresses(), ...(target.token ? { token: target.token } : {}) } satisfies JoinRequest)) as JoinAnswer;
    if (answer !== null && typeof answer === 'object' && ['approved', 'pending', 'rejected'].includes(answer.status)) this.#lastJoinAnswer = answer.status;
    if (answer?.status === 'approved' && answer.list) {
      const list = await verify(answer.list);
      if (!isMember(list, this.#host.peerId)) throw new ProtocolError('join approved with a list that does not name this node');
      await this.#host.serially(async () => {
        await this.#host.adopt(list, 'joined');
        // One that is to take the cluster's database keeps join.json until it has (databaseTaken).
        if (!target.database) await this.#files.removeJoinTarget();
      });
      this.#joinTarget = undefined;
      this.#host.log.info({ event: 'joined', clusterId: list.clusterId, epoch: list.epoch }, 'joined the cluster');
      this.#host.joined();
    } else if (answer?.status === 'rejected') {
      this.#lastRefusal = typeof answer.reason === 'string' ? answer.reason.slice(0, 200) : null;
      this.#host.rejected();
      this.#host.log.error({ event: 'join-rejected', reason: this.#lastRefusal }, `join request rejected: ${refusalText(this.#lastRefusal)}`);
    } else if (answer?.status === 'pending') {
      this.#host.log.info({ event: 'join-pending', clusterId: answer.clusterId ?? null }, 'join request pending: an operator of the member must approve it');
    } else {
      throw new ProtocolError('malformed join answer');
    }
  }

  /** The member side of the join protocol (open to any peer). */
  async onJoin(message: unknown, peer: string): Promise<JoinAnswer> {
    const answer = await this.#onJoin(message, peer);
    if (answer !== ELSEWHERE) return answer;
    // A token this member did not make: its maker checks and spends it. Asked outside the list's
    // serial section (a member asking this one the same at once would wait on it otherwise).
    const m = message as JoinRequest;
    const [, , secret] = m.token!.split('.') as [string, string, string];
    const verdict = await this.#spendElsewhere(hashToken(secret));
    return this.#host.serially(async () => {
      const list = this.#host.list();
      if (this.#host.role() !== 'member' || !list) throw new RefusedError(`this node is not a member of a cluster (${this.#host.role()})`);
      if (isMember(list, peer)) return { status: 'approved', list } as JoinAnswer;
      if (list.revocations.some((r) => r.peerId === peer)) return this.#refuse(peer, 'revoked', 'debug', list);
      if (verdict.answer !== 'spent') return this.#refuse(peer, verdict.answer, 'warn');
      return this.#approveByToken(list, peer, m.addresses, verdict.by!);
    });
  }

  async #onJoin(message: unknown, peer: string): Promise<JoinAnswer | typeof ELSEWHERE> {
    const m = message as JoinRequest | null;
    if (m === null || typeof m !== 'object' || m.v !== 1 || !Array.isArray(m.addresses) || m.addresses.length > 16 || !m.addresses.every((a) => typeof a === 'string' && a.length < 256) || (m.token !== undefined && typeof m.token !== 'string') || (m.check !== undefined && m.check !== true)) throw new ProtocolError('malformed join request');
    if (this.#host.role() !== 'member' || !this.#host.list()) throw new RefusedError(`this node is not a member of a cluster (${this.#host.role()})`);
    return this.#host.serially(async (): Promise<JoinAnswer | typeof ELSEWHERE> => {
      const list = this.#host.list()!;
      if (isMember(list, peer)) return { status: 'approved', list } as JoinAnswer;
      // A revoked peer's, or a rejected one's, later requests: logged at debug only, since a
      // rejected node may ask again and again, and a revoked one asks at each refused heartbeat.
      // The signed list goes with the answer, so a revoked node that missed the news can prove it to itself.
      if (list.revocations.some((r) => r.peerId === peer)) return this.#refuse(peer, 'revoked', 'debug', list);
      if (m.check) return { status: 'rejected', reason: 'not-a-member' };
      if (this.#joins.rejected.some((r) => r.peerId === peer)) return this.#refuse(peer, 'rejected', 'debug');
      if (m.token !== undefined) {
        const now = Date.now();
        const token = this.#checkToken(m.token, list.clusterId, now);
        if (token === 'token-unknown') return ELSEWHERE;
        if (typeof token === 'string') return this.#refuse(peer, token, 'warn');
        // Spend the token before the approval it pays for exists anywhere.
        await this.#spend(token, now);
        return this.#approveByToken(list, peer, m.addresses, this.#host.peerId);
      }
      const pending = this.#joins.pending.filter((p) => p.peerId !== peer);
      const isNew = pending.length === this.#joins.pending.length;
      pending.push({ peerId: peer, addresses: m.addresses, at: Date.now() });
      while (pending.length > MAX_PENDING) pending.shift();
      this.#joins = { ...this.#joins, pending };
      await this.#files.writeJoins(this.#joins);
      if (isNew) this.#host.log.info({ event: 'join-pending', peer, addresses: m.addresses }, 'join request waiting for approval');
      return this.#joinOutcome({ status: 'pending', clusterId: list.clusterId });
    });
  }

  /**
   * The unspent token `text` stands for, or why it does not admit: each case apart, so the
   * joiner and the operator learn which (see JOIN_REFUSALS for what that tells a stranger).
   */
  #checkToken(text: string, clusterId: string, now: number): JoinState['tokens'][number] | JoinRefusal {
    if (!TOKEN_RE.test(text)) return 'token-malformed';
    const [, tokenCluster, secret] = text.split('.') as [string, string, string];
    if (tokenCluster !== clusterId) return 'token-foreign';
    return this.#checkHash(hashToken(secret), now);
  }

  /** The unspent token whose hash is `hex`, or why it does not admit (see #checkToken). */
  #checkHash(hex: string, now: number): JoinState['tokens'][number] | 'token-expired' | 'token-used' | 'token-unknown' {
    const hash = Buffer.from(hex);
    // Constant time per comparison: nothing about a near miss shows in the answer's timing.
    const same = (h: string) => h.length === hash.length && crypto.timingSafeEqual(Buffer.from(h), hash);
    const issued = this.#joins.tokens.find((t) => same(t.hash));
    if (issued) return issued.expiresAt > now ? issued : 'token-expired';
    return (this.#joins.spent ?? []).some((x) => same(x.hash)) ? 'token-used' : 'token-unknown';
  }

  /** Marks `token` spent, on disk (call it serially). */
  async #spend(token: JoinState['tokens'][number], now: number): Promise<void> {
    const spent = [...(this.#joins.spent ?? []).filter((x) => x.at > now - RETAIN_MS), { hash: token.hash, at: now }].slice(-MAX_SPENT);
    this.#joins = { ...this.#joins, tokens: this.#joins.tokens.filter((t) => t !== token), spent };
    await this.#files.writeJoins(this.#joins);
  }

  /** Approves `peer`, admitted by a token that `issuer` made and spent (call it serially). */
  async #approveByToken(list: MemberList, peer: string, addresses: string[], issuer: string): Promise<JoinAnswer> {
    this.#joins = { ...this.#joins, pending: this.#joins.pending.filter((p) => p.peerId !== peer) };
    await this.#files.writeJoins(this.#joins);
    await this.#host.adopt(await change(list, this.#key, { approve: [{ peerId: peer, addresses }] }), `token join of ${peer}`);
    this.#host.log.info({ event: 'join-approved', peer, by: 'token', issuer }, 'join approved by token');
    void this.#host.announce(this.#host.others().filter((p) => p !== peer));
    return this.#joinOutcome({ status: 'approved', list: this.#host.list()! });
  }

  /**
   * Asks every other member to spend the token whose hash is `hash`: only its maker holds that
   * hash, so at most one answers `spent`. A member that is dead to this node is not asked, and
   * one that does not answer in time counts as not knowing it (the joiner may try again later,
   * or through the token's maker).
   */
  async #spendElsewhere(hash: string): Promise<{ answer: SpendAnswer; by?: string }> {
    const timeoutMs = Math.min(this.#host.requestTimeoutMs, 5000);
    const asked = this.#host.others().filter((p) => this.#host.reachable(p));
    return new Promise((resolve) => {
      let best: { answer: SpendAnswer; by?: string } = { answer: 'token-unknown' };
      let left = asked.length;
      if (left === 0) resolve(best);
      for (const peer of asked) {
        this.#host
          .request(peer, TOKEN_SPEND, { v: 1, hash }, { timeoutMs })
          .then((a) => {
            const answer = SPEND_RANK.find((x) => x === (a as { answer?: unknown } | null)?.answer);
            if (answer && SPEND_RANK.indexOf(answer) < SPEND_RANK.indexOf(best.answer)) best = { answer, by: peer };
            // Spent is final (only its maker could spend it): no need to wait for the others.
            if (answer === 'spent') resolve(best);
          })
          .catch((err: unknown) => this.#host.log.debug({ event: 'token-check-failed', peer, err: err instanceof Error ? err.message : String(err) }, 'a member could not be asked about a join token'))
          .finally(() => {
            if (--left === 0) resolve(best);
          });
      }
    });
  }

  /** The maker's side of TOKEN_SPEND: spends the token whose hash a member sends, if it is one of ours and unspent. */
  onSpend(message: unknown, peer: string): Promise<{ answer: SpendAnswer }> {
    const m = message as { v?: unknown; hash?: unknown } | null;
    if (m === null || typeof m !== 'object' || m.v !== 1 || typeof m.hash !== 'string' || !/^[0-9a-f]{64}$/.test(m.hash)) throw new ProtocolError('malformed token check');
    const hash = m.hash;
    return this.#host.serially(async () => {
      const now = Date.now();
      const token = this.#checkHash(hash, now);
      if (typeof token === 'string') return { answer: token };
      await this.#spend(token, now);
      this.#host.log.info({ event: 'token-spent', by: peer }, 'a join token made here was spent through another member');
      return { answer: 'spent' as const };
    });
  }

  /** A rejection answered to `peer`, logged with its reason. */
  #refuse(peer: string, reason: JoinRefusal, level: 'debug' | 'warn', list?: MemberList): JoinAnswer {
    this.#host.log[level]({ event: 'join-rejected', peer, reason }, `join request rejected: ${JOIN_REFUSALS[reason]}`);
    return this.#joinOutcome({ status: 'rejected', reason, ...(list ? { list } : {}) });
  }

  #joinOutcome(a: JoinAnswer): JoinAnswer {
    this.#host.metrics.join(a.status);
    return a;
  }

  // ------------------------------------------------------------------ operator actions

  pending(): PendingJoin[] {
    return this.#joins.pending.map((p) => ({ ...p, addresses: [...p.addresses] }));
  }

  /** Approves a pending join request; the joiner learns it on its next request. */
  approve(peerId: string): Promise<MemberList> {
    return this.#host.serially(async () => {
      const list = this.#host.requireMember();
      const request = this.#joins.pending.find((p) => p.peerId === peerId);
      if (!request) throw new NotFoundError(`no pending join request from ${peerId} on this node`);
      await this.#host.adopt(await change(list, this.#key, { approve: [{ peerId, addresses: request.addresses }] }), `approval of ${peerId}`);
      this.#joins = { ...this.#joins, pending: this.#joins.pending.filter((p) => p.peerId !== peerId) };
      await this.#files.writeJoins(this.#joins);
      this.#host.log.info({ event: 'join-approved', peer: peerId, by: 'operator' }, 'join approved');
      void this.#host.announce(this.#host.others().filter((p) => p !== peerId));
      return this.#host.list()!;
    });
  }

  /** Rejects a pending join request; that peer's later requests are rejected too. */
  reject(peerId: string): Promise<void> {
    return this.#host.serially(async () => {
      this.#host.requireMember();
      if (!this.#joins.pending.some((p) => p.peerId === peerId)) throw new NotFoundError(`no pending join request from ${peerId} on this node`);
      this.#joins = { ...this.#joins, pending: this.#joins.pending.filter((p) => p.peerId !== peerId), rejected: [...this.#joins.rejected.filter((r) => r.peerId !== peerId), { peerId, at: Date.now() }] };
      await this.#files.writeJoins(this.#joins);
      this.#host.log.info({ event: 'join-rejected', peer: peerId, reason: 'rejected', by: 'operator' }, 'join rejected by an operator');
    });
  }

  /** A one-time join token valid for `ttlMs`; only its hash is kept. */
  createToken(ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1000 || ttlMs > 30 * 24 * 3600_000) throw new BadArgumentError('token ttl must be between 1 s and 30 days');
    return this.#host.serially(async () => {
      const list = this.#host.requireMember();
      const secret = crypto.randomBytes(32).toString('base64url');
      const now = Date.now();
      const expiresAt = now + ttlMs;
      // Expired ones stay a while, so that a late try is told it came late (RETAIN_MS).
      this.#joins = { ...this.#joins, tokens: [...this.#joins.tokens.filter((t) => t.expiresAt > now - RETAIN_MS), { hash: hashToken(secret), expiresAt }] };
      await this.#files.writeJoins(this.#joins);
      this.#host.log.info({ event: 'token-created', expiresAt }, 'join token created');
      return { token: `${TOKEN_PREFIX}.${list.clusterId}.${secret}`, expiresAt };
    });
  }
}
