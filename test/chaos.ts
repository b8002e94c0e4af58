/**
 * `npm run chaos -- --minutes N [--seed S] [--no-net]`: five real `ouro node` processes (two with
 * the database, three replicas only; RF 3) under a steady write load, while members are killed at
 * random (SIGKILL, or now and then SIGTERM), the writer included, and restarted after a random
 * pause; at most two are down at once, so every block keeps a copy. Where network namespaces are
 * available (test/netns.ts) each member runs in one of its own, and the rounds also break the
 * network between members: partitions into random groups, one-way cuts, delay, jitter and loss on
 * random links, and heals (test/chaos-net.ts). With `--no-net`, or where namespaces are
 * unavailable (it prints why), the members run on loopback QUIC and only processes fail. When the
 * time is up the network is healed, every member is brought back and the script checks, and prints:
 *   - every write the writer acknowledged reads back byte for byte on both keyed members;
 *   - every block is held by its full placement (computed here from the member list, as the
 *     nodes do), and by nobody else once repair has settled;
 *   - no member reported a corrupt replica;
 *   - no member is revoked or quarantined in any member's view, and no proof of storage failed
 *     (proofs run every 2 s, so the partitions and slow links meet challenges: they must not
 *     pass for failed proofs);
 * and the count of each fault it injected.
 * With `--ec K+M` (e.g. 3+2, which loses nothing with two members down) the cluster runs at ec K+M
 * instead (`ouro cluster redundancy ec`, docs/node.md "Redundancy"): the placement check then
 * asks, for the blocks from the small-block line up (K x 64 KiB), that the writer's last repair
 * pass found every one at K+M healthy shards, and that no member but the writer holds them whole.
 * Exit 0 when all hold, 1 otherwise. Run it with `npm run build` done (it drives dist/bin/ouro.js).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { replicaSet } from '../carrier/placement.js';
import { type LogLine, type NodeProc, converged, heldBlocks, dbApi, keyFile, killAll, ouroJson, waitFor } from './cluster-procs.js';
import { NetChaos, inLab, loopback, openLab } from './chaos-net.js';

const { values: args } = parseArgs({ options: { minutes: { type: 'string', default: '2' }, seed: { type: 'string' }, 'no-net': { type: 'boolean', default: false }, ec: { type: 'string' } } });
const ec = args.ec === undefined ? undefined : (/^(\d+)\+(\d+)$/.exec(args.ec)?.slice(1).map(Number) as [number, number] | undefined);
if (args.ec !== undefined && !ec) throw new Error('--ec takes K+M, e.g. 3+2');
/** At ec K+M, blocks from this size up are coded (docs/node.md, "Redundancy"); below it, replicated. */
const LINE = ec ? ec[0] * 64 * 1024 : Infinity;
const minutes = Number(args.minutes);
if (!(minutes > 0)) throw new Error('--minutes takes a positive number');
const seed = args.seed ?? crypto.randomBytes(4).toString('hex');

/** A small seeded generator (xorshift32), so a run can be repeated with --seed. */
let state = Number.parseInt(crypto.createHash('sha256').update(seed).digest('hex').slice(0, 8), 16) || 1;
function rand(): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 2 ** 32;
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

const RF = 3;
const log = (text: string) => process.stdout.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

interface Member {
  name: string;
  proc: NodeProc;
  keyed: boolean;
  down: boolean;
  /** Every process this member ran, the current one last (their logs). */
  runs: NodeProc[];
}

/** Writes each process's log lines to DIR/<member>-<run>.jsonl; returns DIR. */
function dumpLogs(members: Member[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ouro-chaos-${seed}-`));
  for (const m of members) m.runs.forEach((p, i) => fs.writeFileSync(path.join(dir, `${m.name[0]}-${i}.jsonl`), p.logs.map((l) => JSON.stringify(l)).join('\n') + '\n'));
  return dir;
}

async function main(): Promise<number> {
  const where = await openLab(5, !args['no-net']);
  log(`seed ${seed}, ${minutes} min, five members, ${ec ? `ec ${ec.join('+')}` : `RF ${RF}`}, ${'lab' in where ? 'each in a network namespace, with network faults' : `on loopback, no network faults (${where.reason})`}`);
  const placement = 'lab' in where ? inLab(where.lab) : loopback;
  const key = keyFile();
  // Debug logs (heartbeat failures among them), kept for every process a member ran: a run that
  // fails writes them out for the post-mortem. Proofs every 2 s (default deadline, 5 s): the
  // faults meet many challenges, and none may count against a member.
  const DEBUG = ['--log-level', 'debug', '--proof-interval-ms', '2000', '--replication-factor', String(RF)];
  const a = await placement.founder(key, DEBUG);
  const b = await placement.join(1, a, key, DEBUG);
  const rest = [await placement.join(2, a, undefined, DEBUG), await placement.join(3, a, undefined, DEBUG), await placement.join(4, a, undefined, DEBUG)];
  const members: Member[] = [
    { name: 'a (writer)', proc: a, keyed: true, down: false, runs: [a] },
    { name: 'b (keyed)', proc: b, keyed: true, down: false, runs: [b] },
    ...rest.map((proc, i) => ({ name: `${'cde'[i]} (replica)`, proc, keyed: false, down: false, runs: [proc] })),
  ];
  const peers = members.map((m) => m.proc.peerId);
  log(`peers: ${members.map((m) => `${m.name[0]}=${m.proc.peerId.slice(-6)}`).join(' ')}`);
  await waitFor(() => converged(members.map((m) => m.proc), peers), 30_000, 'five members');
  const net = 'lab' in where ? new NetChaos(where.lab, rand, log, members.map((m) => m.name)) : undefined;
  if (ec) await ouroJson(['cluster', '--dir', a.dir, 'redundancy', 'ec', ec.join('+')]);
  const restart = async (m: Member) => {
    m.proc = await placement.restart(members.indexOf(m), m.proc.dir, m.keyed ? key : undefined);
    m.runs.push(m.proc);
    m.down = false;
  };

  // Load: puts on the writer whenever it is up; only what it acknowledged is checked later.
  const acked: Array<{ hash: string; sha256: string; size: number }> = [];
  let failedWhileDown = 0;
  let bytes = 0;
  let running = true;
  const writer = members[0]!;
  const load = (async () => {
    for (let i = 0; running; i++) {
      if (writer.down) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const size = 1 + Math.floor(rand() ** 3 * 300_000);
      const value = crypto.randomBytes(size);
      try {
        const r = await dbApi.put(writer.proc, value, { key: `chaos/${i % 64}` });
        acked.push({ hash: r.hash, sha256: crypto.createHash('sha256').update(value).digest('hex'), size });
        bytes += size;
      } catch {
        // A put the writer never acknowledged (it was killed under it) promises nothing.
        failedWhileDown++;
        if (!writer.down) await new Promise((r) => setTimeout(r, 200));
      }
    }
  })();

  // Chaos: every 2 to 6 s, kill an up member (at most two down) or bring a down one back.
  const counts = { sigkill: 0, sigterm: 0, restarts: 0 };
  const until = Date.now() + minutes * 60_000;
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, 2000 + rand() * 4000));
    const down = members.filter((m) => m.down);
    const up = members.filter((m) => !m.down);
    if (down.length > 0 && (down.length === 2 || rand() < 0.5)) {
      const m = pick(down);
      await restart(m);
      counts.restarts++;
      log(`restarted ${m.name}; ${acked.length} writes acknowledged so far`);
    } else {
      const m = pick(up);
      m.down = true;
      if (rand() < 0.8) {
        await m.proc.kill9();
        counts.sigkill++;
        log(`SIGKILL ${m.name}`);
      } else {
        await m.proc.stop();
        counts.sigterm++;
        log(`SIGTERM ${m.name}`);
      }
    }
    await net?.step();
  }
  running = false;
  await load;
  await net?.heal();
  for (const m of members.filter((x) => x.down)) {
    await restart(m);
    counts.restarts++;
  }
  log(`load stopped: ${acked.length} writes acknowledged (${(bytes / 2 ** 20).toFixed(1)} MiB), ${failedWhileDown} refused while the writer was going down; every member back`);
  const procs = () => members.map((m) => m.proc);
  const back = Date.now();
  try {
    await waitFor(() => converged(procs(), peers), 120_000, 'five members alive again');
    log(`one member list, five alive, after ${((Date.now() - back) / 1000).toFixed(1)} s`);
  } catch (err) {
    // What each member sees, to tell a slow start from a list that does not converge.
    for (const m of members) {
      const v = await m.proc.members().catch((e: unknown) => ({ error: String(e) }));
      log(`${m.name} sees: ${JSON.stringify('error' in v ? v : { epoch: v.epoch, signer: v.signer.slice(-6), members: v.members.map((x) => `${x.peerId.slice(-6)}:${x.status === 'member' ? x.state : x.status}`) })}`);
    }
    log(`logs of every process: ${dumpLogs(members)}`);
    throw err;
  }

  const failures: string[] = [];
  // 1. Every acknowledged write, on both keyed members.
  for (const m of members.filter((x) => x.keyed)) {
    let ok = 0;
    try {
      await waitFor(async () => {
        for (const w of acked.slice(ok)) {
          const res = await dbApi.get(m.proc, `/db/objects/${w.hash}`);
          if (res.status !== 200) return false;
          const sha = crypto.createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex');
          if (sha !== w.sha256) throw new Error(`${w.hash} on ${m.name}: wrong bytes`);
          ok++;
        }
        return true;
      }, 180_000, `acknowledged writes on ${m.name}`);
    } catch (err) {
      failures.push(`${m.name}: ${ok} of ${acked.length} acknowledged writes read back; ${String(err)}`);
    }
    log(`${m.name}: ${ok} of ${acked.length} acknowledged writes read back byte for byte`);
  }
  // 2. Placement: every block the writer sealed held by exactly its placement (the writer keeps its own too).
  await dbApi.json(writer.proc, '/db/flush', 'POST', {});
  const heldBy = async () => new Map(await Promise.all(members.map(async (m) => [m.proc.peerId, new Set(await heldBlocks(m.proc))] as const)));
  const sizes = new Map((await writer.proc.get<{ blocks: Array<{ id: string; size: number }> }>('/replication/blocks')).blocks.map((b) => [b.id, b.size]));
  let blocks: string[] = [];
  let wrong: string[] = [];
  try {
    await waitFor(async () => {
      const held = await heldBy();
      blocks = [...held.get(writer.proc.peerId)!];
      wrong = [];
      for (const id of blocks) {
        // A coded block is held whole by its writer only (its shards are checked below).
        const placed = (sizes.get(id) ?? 0) >= LINE ? [] : replicaSet(id, peers, RF);
        for (const m of members) {
          const want = placed.includes(m.proc.peerId) || m === writer;
          if (held.get(m.proc.peerId)!.has(id) !== want) wrong.push(`${id.slice(0, 12)} ${want ? 'missing on' : 'surplus on'} ${m.name}`);
        }
      }
      return wrong.length === 0;
    }, 180_000, 'every block on its placement');
  } catch {
    failures.push(`placement not reached: ${wrong.slice(0, 5).join('; ')}${wrong.length > 5 ? ` and ${wrong.length - 5} more` : ''}`);
  }
  log(`${blocks.length} blocks: ${wrong.length === 0 ? 'each held by exactly its placement of three (coded ones: by the writer only)' : `${wrong.length} placement errors`}`);
  if (ec) {
    // Every coded block at K+M healthy shards, by the writer's own repair pass.
    let health = { blocks: 0, full: 0, atThreshold: 0, unreadable: 0 };
    try {
      await waitFor(async () => {
        await writer.proc.post('/replication/repair', {});
        health = (await writer.proc.get<{ replication: { shardHealth: typeof health } }>('/status')).replication.shardHealth;
        return health.full === health.blocks;
      }, 180_000, 'every coded block at K+M');
    } catch {
      failures.push(`coded blocks not all at K+M: ${JSON.stringify(health)}`);
    }
    log(`${health.blocks} coded blocks, ${health.full} at ${ec[0] + ec[1]} healthy shards`);
  }
  // 3. Repair's own account, per member.
  for (const m of members) {
    const s = await m.proc.get<{ replication: { passes: number; pushed: number; removed: number; corrupt: number; failures: number } }>('/status');
    const r = s.replication;
    log(`${m.name}: ${r.passes} repair passes, ${r.pushed} blocks pushed, ${r.removed} surplus removed, ${r.corrupt} corrupt, ${r.failures} transfer failures`);
    if (r.corrupt > 0) failures.push(`${m.name} found ${r.corrupt} corrupt replicas`);
  }
  // 4. No member revoked or quarantined, in any member's view (ledgers copied first): no member
  // misbehaves here, so every revocation or quarantine would be a fault taken for a cheat.
  await Promise.all(members.map((m) => m.proc.post('/ledger/sync', {})));
  let wrongly = 0;
  for (const m of members) {
    const view = await m.proc.members();
    const seen = view.members.filter((x) => x.status !== 'member' || x.quarantined).map((x) => `${members.find((y) => y.proc.peerId === x.peerId)?.name ?? x.peerId} ${x.status}${x.quarantined ? ' quarantined' : ''}`);
    wrongly += seen.length;
    if (seen.length > 0) failures.push(`${m.name} sees ${seen.join(', ')}`);
  }
  const events = (match: (l: LogLine) => boolean) => members.reduce((n, m) => n + m.runs.reduce((k, p) => k + p.logs.filter(match).length, 0), 0);
  const proofs = (r: string) => events((l) => l.event === `proof-${r}`);
  log(`${wrongly === 0 ? 'no member revoked or quarantined in any view' : `${wrongly} revoked or quarantined (member, view) pairs`}; proofs: ${proofs('pass')} passed, ${proofs('fail')} failed, ${proofs('late')} late, ${proofs('unreachable')} unanswered while the holder was unreachable (no verdict)`);
  // A failed proof (a wrong answer, or a placed holder saying it lacks the block) is never the
  // network's doing, and no member here cheats: one is a lost replica or a wrong verdict.
  if (proofs('fail') > 0) failures.push(`${proofs('fail')} failed proofs of storage`);
  log(`failure detector: ${events((l) => l.event === 'member-state' && l.to === 'dead')} transitions to dead, ${events((l) => l.event === 'member-state' && l.to === 'suspect')} to suspect (over all members' views)`);
  log(`kills: ${counts.sigkill} SIGKILL, ${counts.sigterm} SIGTERM; ${counts.restarts} restarts`);
  log(net ? net.summary() : 'network faults: none (loopback)');
  for (const m of members) await m.proc.stop();
  for (const m of members) fs.rmSync(m.proc.dir, { recursive: true, force: true });
  if (failures.length > 0) {
    for (const f of failures) log(`FAILED: ${f}`);
    log(`logs of every process: ${dumpLogs(members)}`);
    return 1;
  }
  log('all checks passed');
  return 0;
}

main().then(
  (code) => {
    killAll();
    process.exit(code);
  },
  (err: unknown) => {
    log(`chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    killAll();
    process.exit(1);
  },
);
