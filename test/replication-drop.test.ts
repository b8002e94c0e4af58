/**
 * Dropping a surplus copy (carrier/replication-repair.ts, #dropIfSurplus and onHave), with the
 * moments that matter held still: a Replicator in this process over a fake host and an in-memory
 * shelf, whose peers' answers and file removals wait on gates the test opens. Two members must
 * never each drop a copy while counting the other's: a block-have asked during a removal answers
 * "no", and a list learned from an asker before the removal's last check calls the removal off.
 */
import crypto from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { replicaSet } from '../carrier/placement.js';
import { type ReplicationHost, Replicator } from '../carrier/replication.js';
import type { HeldBlock, Shelf } from '../carrier/shelf.js';

function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

const SELF = 'self';
const RF = 2;

/** An in-memory shelf; remove() waits for `removeGate` when one is set. */
class MemoryShelf {
  readonly held = new Set<string>();
  removeGate: Promise<void> | undefined;
  removeStarted = gate();
  async prepare(): Promise<void> {}
  path(id: string): string {
    return `/nonexistent/ourodb-test/${id}`;
  }
  async has(id: string): Promise<boolean> {
    return this.held.has(id);
  }
  async *list(after = ''): AsyncIterable<HeldBlock> {
    for (const id of [...this.held].sort()) if (id > after) yield { id, size: 1 };
  }
  async removable(): Promise<boolean> {
    return true;
  }
  async remove(id: string): Promise<void> {
    this.removeStarted.open();
    await this.removeGate;
    this.held.delete(id);
  }
  async tombstoned(): Promise<boolean> {
    return false;
  }
  /** No copy of the database descriptor is kept here (the timed passes skip copying one). */
  descriptorCopy(): undefined {
    return undefined;
  }
  /** No shards held here (every repair pass looks for shards no longer placed here, and scrubs them). */
  readonly shards = { blocks: async (): Promise<string[]> => [] };
}

/**
 * A host whose members are `members` (some draining, some dead long past any grace, unreachable),
 * whose live peers hold everything they are asked about (after `haveGate`); `onLearn` runs when a
 * list from an asker is merged.
 */
function fakeHost(members: string[], o: { draining?: Set<string>; dead?: Set<string>; haveGate?: Promise<void>; onLearn?: () => void } = {}) {
  const draining = o.draining ?? new Set<string>();
  const dead = o.dead ?? new Set<string>();
  const handlers = new Map<string, (m: unknown, ctx: { peer: string; signal: AbortSignal }) => unknown>();
  const learned: unknown[] = [];
  const asked = gate();
  const noop = () => {};
  const log = { debug: noop, info: noop, warn: noop, error: noop };
  const metrics = new Proxy({}, { get: () => noop });
  const host = {
    peerId: SELF,
    replicationFactor: RF,
    log,
    metrics,
    maxFrameBytes: 1 << 20,
    requestTimeoutMs: 5000,
    memberViews: () => members.map((peerId) => ({ peerId, self: peerId === SELF, status: 'member' as const, state: dead.has(peerId) ? 'dead' : 'alive', since: 0, draining: draining.has(peerId), quarantined: false })),
    served: noop,
    handle: async (name: string, handler: (m: unknown, ctx: { peer: string; signal: AbortSignal }) => unknown) => void handlers.set(name, handler),
    handleStream: async () => {},
    request: async (peer: string, name: string, message: unknown) => {
      if (name !== 'block-have') throw new Error(`unexpected request ${name}`);
      if (dead.has(peer)) throw new Error(`${peer} does not answer`);
      asked.open();
      await o.haveGate;
      return { have: (message as { ids: string[] }).ids.map(() => true) };
    },
    openStream: async () => {
      throw new Error('no streams here');
    },
    memberList: () => ({ fake: 'list' }),
    learnList: async (list: unknown) => {
      learned.push(list);
      o.onLearn?.();
    },
  };
  return { host: host as unknown as ReplicationHost, handlers, learned, asked: asked.opened };
}

/** A block id whose placement over `candidates` leaves SELF out. */
function surplusId(candidates: string[]): string {
  for (;;) {
    const id = crypto.randomBytes(32).toString('hex');
    if (!replicaSet(id, candidates, RF).includes(SELF)) return id;
  }
}

const config = { deadGraceMs: 60_000, repairIntervalMs: 3_600_000, repairBytesPerSec: 1 << 30, repairThreshold: 1 };
const started: Replicator[] = [];
/** Gates a failing test left shut are opened before the replicators stop (which waits for their passes). */
const gates: Array<() => void> = [];
afterEach(async () => {
  for (const open of gates.splice(0)) open();
  await Promise.all(started.splice(0).map((r) => r.stop()));
});

/** A shut gate, opened in any case when the test ends. */
function testGate(): ReturnType<typeof gate> {
  const g = gate();
  gates.push(g.open);
  return g;
}

/** Three members; this node holds one block placed on the two others. */
function surplusSetup(): { members: string[]; id: string; shelf: MemoryShelf } {
  const members = [SELF, 'p1', 'p2'];
  const id = surplusId(members);
  const shelf = new MemoryShelf();
  shelf.held.add(id);
  return { members, id, shelf };
}

/** Starts a Replicator (its first repair pass begins at once). */
async function startReplicator(host: ReplicationHost, shelf: MemoryShelf): Promise<Replicator> {
  const r = new Replicator(host, shelf as unknown as Shelf, undefined, config);
  started.push(r);
  await r.start();
  return r;
}

const ctx = (peer: string) => ({ peer, signal: new AbortController().signal });

describe('dropping a surplus copy', () => {
  it('a block-have asked while the copy is being removed waits for the removal and answers no', async () => {
    const { members, id, shelf } = surplusSetup();
    const removal = testGate();
    shelf.removeGate = removal.opened;
    const { host, handlers } = fakeHost(members);
    const r = await startReplicator(host, shelf);
    await shelf.removeStarted.opened;
    // The repair pass is deleting the file now; a peer asks whether we hold the block.
    let answered = false;
    const asked = Promise.resolve(handlers.get('block-have')!({ v: 1, ids: [id] }, ctx('p3'))).then((a) => {
      answered = true;
      return a;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    removal.open();
    expect(await asked).toEqual({ have: [false] });
    await r.idle();
    expect(shelf.held.has(id)).toBe(false);
    expect(r.progress.removed).toBe(1);
  });

  it('a list learned from an asker between the confirmations and the removal calls the removal off', async () => {
    // Surplus here while all three are candidates; placed here once p2 drains (two candidates, RF 2).
    const { members, id, shelf } = surplusSetup();
    const answers = testGate();
    const draining = new Set<string>();
    // Merging the asker's list is what tells this node of the drain.
    const { host, handlers, learned, asked } = fakeHost(members, { draining, haveGate: answers.opened, onLearn: () => draining.add('p2') });
    const r = await startReplicator(host, shelf);
    // The pass has asked p1 and p2 (both will say they hold it); meanwhile p2, draining, asks us.
    await asked;
    const answer = await handlers.get('block-have')!({ v: 1, ids: [id], list: { drain: 'p2' } }, ctx('p2'));
    expect(learned).toEqual([{ drain: 'p2' }]);
    expect(answer).toEqual({ have: [true] });
    expect(replicaSet(id, [SELF, 'p1'], RF)).toContain(SELF);
    answers.open();
    await r.idle();
    // p2 counted our copy: we keep it.
    expect(shelf.held.has(id)).toBe(true);
    expect(r.progress.removed).toBe(0);
  });

  it('a copy is kept while a member this node thinks dead may count on it', async () => {
    // p3 is dead past the grace as this node sees it, so the block's placement here is p1 and p2,
    // which hold it; but to a member that sees p3 alive the placement is p3 and one of them, and
    // this copy may be what that member counts on.
    const members = [SELF, 'p1', 'p2', 'p3'];
    let id: string;
    do id = surplusId([SELF, 'p1', 'p2']);
    while (!replicaSet(id, members, RF).includes('p3'));
    const shelf = new MemoryShelf();
    shelf.held.add(id);
    const dead = new Set(['p3']);
    const { host } = fakeHost(members, { dead });
    const r = await startReplicator(host, shelf);
    await r.idle();
    expect(shelf.held.has(id)).toBe(true);
    expect(r.progress.removed).toBe(0);
    // p3 answers again, holding the block: now the copy goes.
    dead.delete('p3');
    r.kick();
    await r.idle();
    expect(shelf.held.has(id)).toBe(false);
    expect(r.progress.removed).toBe(1);
  });
});
