/**
 * The node ledger (docs/node.md, "Ledger"; format in docs/FORMAT.md, "Ledger events"): what each
 * member did for the cluster, as a storage-incentive scheme would pay on it. It is a set of
 * signed events, and the ledger is a fold over that set that does not depend on the order the
 * events arrived in, so two members holding the same events show the same ledger, to the byte.
 *
 * Each member signs the events it observed itself, numbered 1, 2, 3... per observer:
 *   proofs   the results of the proof-of-storage challenges it made (carrier/proofs.ts)
 *   uptime   for how long it saw each other member alive, over the period since its last one
 *   holding  how many blocks and bytes it holds itself
 *   served   bytes each member sent it for repair or restore
 *   clear    an operator forgave a member's failures (ends a quarantine)
 * Members copy each other's events (`/ouro/ledger-sync/1`) in order, observer by observer, so a
 * member holds a prefix 1..n of each observer's events and the vector of those n is what it asks
 * with. An event is stored and its effect on the ledger applied in one LevelDB batch, at most once.
 *
 * Quarantine: a member with `quarantine.after` failed or late proofs within `quarantine.windowMs`
 * of each other (event times), none of them before its last `clear`, is quarantined: placement
 * leaves it out, so repair copies its blocks elsewhere. It stays so until an operator clears it.
 * The two settings must be the same on every member, like the fold itself.
 *
 * Owns its store (a LevelDB of its own) and the fold kept over it (accounts, vector, quarantines,
 * digest). Events enter only through record() (this node's own: the prover's proofs, the ledger
 * feed's uptime, holding and served, an operator's clear through Node.clearQuarantine) and
 * accept() and catchUp() (events the ledger feed copied from other members), one at a time
 * (#serial). The quarantines that placement reads (#quarantined, quarantined()) change only in
 * #settle, once per record() or accept() call or catch-up, after all its events are applied. The
 * challenge stock kept beside the events (keys `p:`) is the prover's (carrier/proofs.ts).
 */
import crypto from 'node:crypto';
import { peerIdFromString } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import { ClassicLevel } from '../index/leveldb.js';
import { Packr } from 'msgpackr/pack';
import { BadArgumentError, NotFoundError, OuroError, ProtocolError, ioError } from '../lib/errors.js';

export const LEDGER_VERSION = 1;
/** Domain of the signatures over event bytes. */
const SIGNED_PREFIX = Buffer.from('ourodb ledger event v1\0');
/** Largest event accepted from a peer. */
export const MAX_EVENT_BYTES = 64 * 1024;
/** Failures kept per member after its last clear (the newest; enough for any quarantine setting). */
const MAX_FAILS_KEPT = 256;

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

export type ProofResult = 'pass' | 'fail' | 'late';

export type EventBody =
  | { k: 'proofs'; b: Array<{ s: string; blk: string; r: ProofResult; ms: number }> }
  | { k: 'uptime'; b: { p: number; a: Record<string, number> } }
  | { k: 'holding'; b: { blocks: number; bytes: number } }
  | { k: 'served'; b: Record<string, number> }
  | { k: 'clear'; b: { s: string } };

/** An event as signed: version, cluster, observer, number, time (ms), kind and body. */
export type LedgerEvent = { v: number; c: string; o: string; n: number; t: number } & EventBody;

/** An event on the wire and on disk: the exact signed bytes and the signature. */
export interface WireEvent {
  d: Uint8Array;
  s: Uint8Array;
}

/** A point in the total order of events (time, observer, number, index within the event). */
type Mark = [number, string, number, number];

const before = (x: Mark, y: Mark): boolean => {
  for (let i = 0; i < 4; i++) if (x[i] !== y[i]) return x[i]! < y[i]!;
  return false;
};

/** Per-member state of the fold (persisted as `s:<peer>`). */
export interface Account {
  passed: number;
  failed: number;
  late: number;
  lastProofAt: number | null;
  servedBytes: number;
  holding: { n: number; t: number; blocks: number; bytes: number } | null;
  /** Per observer: ms it saw this member alive, over ms it watched. */
  uptime: Record<string, { alive: number; period: number }>;
  /** The newest clear, and the failures (fail or late) after it, oldest first. */
  cleared: Mark | null;
  fails: Mark[];
}

export interface LedgerEntry {
  peerId: string;
  blocksHeld: number;
  bytesHeld: number;
  /** Time of the holding report the two figures above come from. */
  heldAsOf: number | null;
  proofs: { passed: number; failed: number; late: number };
  lastProofAt: number | null;
  /** Median over the other members that reported: ms they saw this one alive, and that over the ms they watched. */
  uptimeSeenMs: number;
  uptimeRatio: number | null;
  observers: number;
  servedForRepairBytes: number;
  quarantined: boolean;
  /** [time, observer, event number] of the failure that made it quarantined. */
  quarantinedBy: [number, string, number] | null;
  /** [time, observer, event number] of its newest clear, and the failed or late proofs after it (what the quarantine rule reads). */
  clearedBy: [number, string, number] | null;
  failsSinceClear: number;
}

export interface LedgerView {
  clusterId: string;
  /** Events held, per observer the highest number, and a digest of the set (XOR of each event's SHA-256). */
  events: number;
  observers: Record<string, number>;
  digest: string;
  members: LedgerEntry[];
}

export interface QuarantinePolicy {
  after: number;
  windowMs: number;
}

const emptyAccount = (): Account => ({ passed: 0, failed: 0, late: 0, lastProofAt: null, servedBytes: 0, holding: null, uptime: {}, cleared: null, fails: [] });

const seqKey = (observer: string, n: number) => `e:${observer}:${n.toString(16).padStart(12, '0')}`;

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const PEER_RE = /^[1-9A-HJ-NP-Za-km-z]{20,128}$/;
const isPeer = (x: unknown): x is string => typeof x === 'string' && PEER_RE.test(x);

/** Checks the shape of a decoded event (whatever its origin); returns it typed. */
export function checkEvent(e: unknown): LedgerEvent {
  const bad = (why: string) => new ProtocolError(`malformed ledger event: ${why}`);
  if (e === null || typeof e !== 'object') throw bad('not a map');
  const x = e as Record<string, unknown>;
  if (!Number.isSafeInteger(x.v)) throw bad('no version');
  if (x.v !== LEDGER_VERSION) throw new OuroError('OURO_UNSUPPORTED_VERSION', `ledger event version ${String(x.v)} (this build reads ${LEDGER_VERSION})`);
  if (typeof x.c !== 'string' || !isPeer(x.o) || !isCount(x.n) || x.n < 1 || !isCount(x.t)) throw bad('header');
  const b = x.b as Record<string, unknown> | unknown[] | null;
  switch (x.k) {
    case 'proofs':
      if (!Array.isArray(b) || b.length > 4096) throw bad('proofs');
      for (const p of b as Array<Record<string, unknown>>) if (!isPeer(p?.s) || typeof p.blk !== 'string' || !/^[0-9a-f]{64}$/.test(p.blk) || !['pass', 'fail', 'late'].includes(p.r as string) || !isCount(p.ms)) throw bad('proof result');
      break;
    case 'uptime': {
      const u = b as { p?: unknown; a?: unknown } | null;
      if (u === null || typeof u !== 'object' || !isCount(u.p) || u.a === null || typeof u.a !== 'object') throw bad('uptime');
      for (const [k, v] of Object.entries(u.a as object)) if (!isPeer(k) || !isCount(v) || v > (u.p as number)) throw bad('uptime entry');
      break;
    }
    case 'holding':
      if (b === null || typeof b !== 'object' || !isCount((b as { blocks?: unknown }).blocks) || !isCount((b as { bytes?: unknown }).bytes)) throw bad('holding');
      break;
    case 'served':
      if (b === null || typeof b !== 'object' || Array.isArray(b)) throw bad('served');
      for (const [k, v] of Object.entries(b)) if (!isPeer(k) || !isCount(v)) throw bad('served entry');
      break;
    case 'clear':
      if (!isPeer((b as { s?: unknown } | null)?.s)) throw bad('clear');
      break;
    default:
      throw bad(`kind ${String(x.k)}`);
  }
  return x as unknown as LedgerEvent;
}

/**
 * Applies one event to the accounts it touches (the fold; order of events does not matter).
 * `acc(peer)` gives the account to change, made if the peer has none yet.
 */
export function applyEvent(acc: (peer: string) => Account, e: LedgerEvent): void {
  switch (e.k) {
    case 'proofs':
      e.b.forEach((p, i) => {
        const a = acc(p.s);
        if (p.r === 'pass') a.passed++;
        else {
          if (p.r === 'fail') a.failed++;
          else a.late++;
          const mark: Mark = [e.t, e.o, e.n, i];
          if (!a.cleared || before(a.cleared, mark)) {
            a.fails.push(mark);
            a.fails.sort((x, y) => (before(x, y) ? -1 : before(y, x) ? 1 : 0));
            if (a.fails.length > MAX_FAILS_KEPT) a.fails.splice(0, a.fails.length - MAX_FAILS_KEPT);
          }
        }
        a.lastProofAt = Math.max(a.lastProofAt ?? 0, e.t);
      });
      break;
    case 'uptime':
      for (const [peer, alive] of Object.entries(e.b.a)) {
        if (peer === e.o) continue;
        const u = (acc(peer).uptime[e.o] ??= { alive: 0, period: 0 });
        u.alive += alive;
        u.period += e.b.p;
      }
      break;
    case 'holding': {
      const a = acc(e.o);
      if (!a.holding || a.holding.n < e.n) a.holding = { n: e.n, t: e.t, blocks: e.b.blocks, bytes: e.b.bytes };
      break;
    }
    case 'served':
      for (const [peer, bytes] of Object.entries(e.b)) if (peer !== e.o) acc(peer).servedBytes += bytes;
      break;
    case 'clear': {
      const a = acc(e.b.s);
      const mark: Mark = [e.t, e.o, e.n, 0];
      if (!a.cleared || before(a.cleared, mark)) {
        a.cleared = mark;
        a.fails = a.fails.filter((f) => before(mark, f));
      }
      break;
    }
  }
}

/** The failure that quarantined a member: the first one closing `after` failures within `windowMs`. */
export function quarantineMark(a: Account, policy: QuarantinePolicy): Mark | null {
  const f = a.fails;
  for (let i = 0; i + policy.after - 1 < f.length; i++) {
    const last = f[i + policy.after - 1]!;
    if (last[0] - f[i]![0] <= policy.windowMs) return last;
  }
  return null;
}

const lowerMedian = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[(s.length - 1) >> 1]!;
};

export function entryOf(peerId: string, a: Account, policy: QuarantinePolicy): LedgerEntry {
  const ups = Object.values(a.uptime).filter((u) => u.period > 0);
  const q = quarantineMark(a, policy);
  return {
    peerId,
    blocksHeld: a.holding?.blocks ?? 0,
    bytesHeld: a.holding?.bytes ?? 0,
    heldAsOf: a.holding?.t ?? null,
    proofs: { passed: a.passed, failed: a.failed, late: a.late },
    lastProofAt: a.lastProofAt,
    uptimeSeenMs: ups.length ? lowerMedian(ups.map((u) => u.alive)) : 0,
    uptimeRatio: ups.length ? Math.round(lowerMedian(ups.map((u) => u.alive / u.period)) * 10_000) / 10_000 : null,
    observers: ups.length,
    servedForRepairBytes: a.servedBytes,
    quarantined: q !== null,
    quarantinedBy: q && [q[0], q[1], q[2]],
    clearedBy: a.cleared && [a.cleared[0], a.cleared[1], a.cleared[2]],
    failsSinceClear: a.fails.length,
  };
}

export interface LedgerOptions {
  dir: string;
  key: PrivateKey;
  peerId: string;
  /** The cluster's id once this node has a member list. */
  clusterId: () => string | undefined;
  /** Whether `peer` was ever approved into the cluster (only their events are taken). */
  knownMember: (peer: string) => boolean;
  policy: QuarantinePolicy;
  /** A member's quarantine started or ended. */
  onQuarantine?: (peer: string, quarantined: boolean) => void;
  /** A peer sent an event that differs from the one held under the same number (a forger or a broken member). */
  onConflict?: (observer: string, n: number) => void;
}

export class Ledger {
  readonly #db: ClassicLevel<string, Buffer>;
  readonly #o: LedgerOptions;
  readonly #accounts = new Map<string, Account>();
  readonly #vector = new Map<string, number>();
  /** Members quarantined now (kept beside the accounts: placement asks for every block). */
  readonly #quarantined = new Set<string>();
  #digest: Buffer = Buffer.alloc(32);
  #count = 0;
  /** Every change to the store runs through here, one at a time (exactly-once application). */
  #serial: Promise<unknown> = Promise.resolve();
  /** The members touched by each catch-up under way: their quarantines wait for its end(). */
  readonly #rounds = new Set<Set<string>>();

  private constructor(db: ClassicLevel<string, Buffer>, options: LedgerOptions) {
    this.#db = db;
    this.#o = options;
  }

  static async open(options: LedgerOptions): Promise<Ledger> {
    const db = new ClassicLevel<string, Buffer>(options.dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    try {
      await db.open();
    } catch (err) {
      throw ioError(`opening the ledger at ${options.dir}`, err);
    }
    const l = new Ledger(db, options);
    for await (const [k, v] of db.iterator({ gte: 's:', lt: 's;' })) {
      const a = packr.unpack(v) as Account;
      l.#accounts.set(k.slice(2), a);
      if (quarantineMark(a, options.policy)) l.#quarantined.add(k.slice(2));
    }
    for await (const [k, v] of db.iterator({ gte: 'v:', lt: 'v;' })) l.#vector.set(k.slice(2), packr.unpack(v) as number);
    const meta = await db.get('x:meta');
    if (meta) ({ digest: l.#digest, count: l.#count } = unpackMeta(meta));
    return l;
  }

  async close(): Promise<void> {
    await this.#serial.catch(() => {});
    await this.#db.close();
  }

  /** The raw store, for the proof stock kept beside the events (carrier/proofs.ts, keys `p:`). */
  get store(): ClassicLevel<string, Buffer> {
    return this.#db;
  }

  /** Highest event number held per observer. */
  vector(): Record<string, number> {
    return Object.fromEntries([...this.#vector].sort(([a], [b]) => (a < b ? -1 : 1)));
  }

  quarantined(peer: string): boolean {
    return this.#quarantined.has(peer);
  }

  /** Signs and stores an event this node observed. */
  record(body: EventBody, at = Date.now()): Promise<void> {
    return this.#serially(async () => {
      const c = this.#o.clusterId();
      if (c === undefined) return;
      const n = (this.#vector.get(this.#o.peerId) ?? 0) + 1;
      const d = packr.pack({ v: LEDGER_VERSION, c, o: this.#o.peerId, n, t: at, ...body });
      const s = await this.#o.key.sign(Buffer.concat([SIGNED_PREFIX, d]));
      const touched = new Set<string>();
      try {
        await this.#store(checkEvent(packr.unpack(d)), { d, s }, touched);
      } finally {
        // A member a catch-up under way has touched is settled at its end, not half-way through it.
        for (const round of this.#rounds) for (const p of round) touched.delete(p);
        this.#settle(touched);
      }
    });
  }

  /**
   * Takes events a peer sent: each is checked (shape, cluster, signature by its observer) and
   * stored if it is the next one of its observer. Returns how many were new.
   *
   * Quarantines change once, after the whole batch (also when an event in it is refused): a
   * member catching up on a failure run and the clear that ends it goes from where it was to
   * where the events leave it. Applied event by event, the run quarantined the member in this
   * node's view until the clear came; meanwhile placement left it out and repair acted on that
   * (a quarantined member removes its own copies as surplus), only to put it all back.
   */
  accept(events: WireEvent[]): Promise<number> {
    return this.#serially(async () => {
      const touched = new Set<string>();
      try {
        return await this.#acceptAll(events, touched);
      } finally {
        this.#settle(touched);
      }
    });
  }

  /**
   * A catch-up from several members at once (one ledger sync round, carrier/ledger-feed.ts):
   * accept() takes each member's reply as it comes, as accept() above does, and quarantines
   * change once, at end(), where everything the round brought leaves them.
   *
   * Why not per reply: members lag behind each other. A member whose ledger holds a failure run
   * but not yet the clear that ended it answers with the run; one that holds the clear answers
   * with both. Applied reply by reply, the order the replies arrived in decided whether this
   * node went through a quarantine the cluster had already ended (stale reply first) or not;
   * in that moment placement left the member out and repair acted on it (a member that saw
   * itself quarantined removed its own copies as surplus). Taken as one, the round's outcome
   * depends only on the events it brought, whatever the order and grouping of the replies.
   * This node's own events recorded meanwhile (a writer's proof rounds go on) leave the members
   * the round touched to its end. end() must be called once, also when a reply failed (the
   * events stored count).
   */
  catchUp(): { accept(events: WireEvent[]): Promise<number>; end(): Promise<void> } {
    const touched = new Set<string>();
    this.#rounds.add(touched);
    return {
      accept: (events) => this.#serially(() => this.#acceptAll(events, touched)),
      end: () =>
        this.#serially(async () => {
          this.#rounds.delete(touched);
          this.#settle(touched);
        }),
    };
  }

  async #acceptAll(events: WireEvent[], touched: Set<string>): Promise<number> {
    let added = 0;
    for (const w of events) {
      if (!(w?.d instanceof Uint8Array) || !(w.s instanceof Uint8Array) || w.d.length > MAX_EVENT_BYTES) throw new ProtocolError('malformed ledger event on the wire');
      let e: LedgerEvent;
      try {
        e = checkEvent(packr.unpack(w.d));
      } catch (err) {
        if (err instanceof OuroError) throw err;
        throw new ProtocolError('ledger event does not decode', { cause: err });
      }
      if (e.c !== this.#o.clusterId()) throw new ProtocolError(`ledger event of another cluster (${e.c})`);
      const have = this.#vector.get(e.o) ?? 0;
      if (e.n <= have) {
        const held = await this.#db.get(seqKey(e.o, e.n));
        if (held && !Buffer.from((packr.unpack(held) as WireEvent).d).equals(Buffer.from(w.d))) this.#o.onConflict?.(e.o, e.n);
        continue;
      }
      if (e.n !== have + 1) continue; // a gap: the next sync brings the ones before it
      if (!this.#o.knownMember(e.o)) throw new ProtocolError(`ledger event observed by ${e.o}, who is not a member`);
      const publicKey = peerIdFromString(e.o).publicKey;
      if (!publicKey || !(await publicKey.verify(Buffer.concat([SIGNED_PREFIX, w.d]), w.s))) throw new ProtocolError(`ledger event ${e.o}#${e.n}: bad signature`);
      await this.#store(e, w, touched);
      added++;
    }
    return added;
  }

  /** Events after `have` (per observer), in order, up to `maxBytes` of them (what a syncing peer lacks). */
  async since(have: Record<string, number>, maxBytes: number): Promise<{ events: WireEvent[]; more: boolean }> {
    const events: WireEvent[] = [];
    let bytes = 0;
    for (const [observer, top] of this.#vector) {
      const from = (isCount(have[observer]) ? have[observer] : 0) + 1;
      if (from > top) continue;
      for await (const v of this.#db.values({ gte: seqKey(observer, from), lte: seqKey(observer, top) })) {
        if (bytes + v.length > maxBytes && events.length > 0) return { events, more: true };
        bytes += v.length;
        events.push(packr.unpack(v) as WireEvent);
      }
    }
    return { events, more: false };
  }

  view(): LedgerView {
    return this.#viewOf(this.#accounts, this.#count, this.#digest, this.vector());
  }

  /**
   * The ledger over exactly the events 1..at[o] of each observer o (others: none), folded from
   * the stored events: the figures of a cut that every member holding those events gives alike
   * (for a payout, or to compare members while events keep coming). Throws NotFoundError if
   * this node lacks some of them.
   */
  async viewAt(at: Record<string, number>): Promise<LedgerView> {
    const accounts = new Map<string, Account>();
    const digest = Buffer.alloc(32);
    let count = 0;
    const vector: Record<string, number> = {};
    for (const [observer, top] of Object.entries(at).sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (!isCount(top)) throw new BadArgumentError(`ledger cut: ${observer} must map to an event number`);
      if (top === 0) continue;
      if ((this.#vector.get(observer) ?? 0) < top) throw new NotFoundError(`this node holds ${this.#vector.get(observer) ?? 0} events of ${observer}, not ${top}`);
      vector[observer] = top;
      for await (const v of this.#db.values({ gte: seqKey(observer, 1), lte: seqKey(observer, top) })) {
        const w = packr.unpack(v) as WireEvent;
        applyEvent(accountIn(accounts), checkEvent(packr.unpack(w.d)));
        xorDigest(digest, w.d);
        count++;
      }
    }
    return this.#viewOf(accounts, count, digest, vector);
  }

  #viewOf(accounts: Map<string, Account>, count: number, digest: Buffer, vector: Record<string, number>): LedgerView {
    return {
      clusterId: this.#o.clusterId() ?? '',
      events: count,
      observers: vector,
      digest: digest.toString('hex'),
      members: [...accounts.keys()].sort().map((p) => entryOf(p, accounts.get(p)!, this.#o.policy)),
    };
  }

  entry(peer: string): LedgerEntry | undefined {
    const a = this.#accounts.get(peer);
    return a && entryOf(peer, a, this.#o.policy);
  }

  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#serial.then(fn, fn);
    this.#serial = run.catch(() => {});
    return run;
  }

  /** Stores one event and applies it, in one synced batch; adds the members whose accounts it changed to `touched` (see #settle). */
  async #store(e: LedgerEvent, w: WireEvent, touched: Set<string>): Promise<void> {
    // The fold works on copies of the accounts it touches, so that a failed write leaves memory as the disk is.
    const accounts = new Map<string, Account>();
    applyEvent(accountIn(accounts, this.#accounts), e);
    const digest = Buffer.from(this.#digest);
    xorDigest(digest, w.d);
    const batch = this.#db.batch();
    batch.put(seqKey(e.o, e.n), packr.pack({ d: w.d, s: w.s }));
    batch.put(`v:${e.o}`, packr.pack(e.n));
    for (const [p, a] of accounts) batch.put(`s:${p}`, packr.pack(a));
    batch.put('x:meta', packr.pack({ digest, count: this.#count + 1 }));
    try {
      await batch.write({ sync: true });
    } catch (err) {
      throw ioError('writing the ledger', err);
    }
    for (const [p, a] of accounts) this.#accounts.set(p, a);
    this.#vector.set(e.o, e.n);
    this.#digest = digest;
    this.#count++;
    for (const p of accounts.keys()) touched.add(p);
  }

  /** Brings the quarantines of `touched` members in line with their accounts, and tells of each that changed. */
  #settle(touched: Set<string>): void {
    for (const p of touched) {
      const now = quarantineMark(this.#accounts.get(p)!, this.#o.policy) !== null;
      if (now === this.#quarantined.has(p)) continue;
      if (now) this.#quarantined.add(p);
      else this.#quarantined.delete(p);
      this.#o.onQuarantine?.(p, now);
    }
  }
}

/** `acc` for applyEvent over `accounts`: on first touch a peer's account is a copy of its account in `base`, or a new one. */
function accountIn(accounts: Map<string, Account>, base?: Map<string, Account>): (peer: string) => Account {
  return (peer) => {
    let a = accounts.get(peer);
    if (!a) {
      const held = base?.get(peer);
      accounts.set(peer, (a = held ? structuredClone(held) : emptyAccount()));
    }
    return a;
  };
}

/** The ledger digest: XOR of each event's SHA-256. */
function xorDigest(digest: Buffer, eventBytes: Uint8Array): void {
  const h = crypto.createHash('sha256').update(eventBytes).digest();
  for (let i = 0; i < 32; i++) digest[i]! ^= h[i]!;
}

function unpackMeta(v: Buffer): { digest: Buffer; count: number } {
  const m = packr.unpack(v) as { digest: Uint8Array; count: number };
  return { digest: Buffer.from(m.digest), count: m.count };
}
