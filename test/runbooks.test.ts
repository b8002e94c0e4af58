/**
 * Every runbook of docs/operations.md, run as written (issue 30, item 9). The commands come from
 * the document itself: each `sh` block under a runbook's heading, in order, with the names the
 * Runbooks section defines (`DIR`, `PEER`, `MEMBER`, `T`, `/srv/new`, ...) filled in, run by
 * /bin/sh with `ouro` on the PATH (this build's dist/bin/ouro.js), against real `ouro node start`
 * processes on loopback QUIC. So the docs and this test cannot drift apart: a changed command is
 * run as changed, and a block added or removed fails the count each test expects. Where a step is
 * a judgement ("check the machine"), the test does what the operator would and runs the commands
 * around it. Each test asserts what its runbook promises.
 *
 * The clusters use the fast heartbeat, repair and seal knobs of the other cluster tests; a node
 * directory a runbook creates gets them from its config file, written before the runbook's
 * `node join` (which keeps a config file it finds), so the commands stay as written.
 */
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type NodeConfigPatch, resolveConfig, saveConfig } from '../carrier/config.js';
import type { LedgerView } from '../carrier/ledger.js';
import { replicaSet } from '../carrier/placement.js';
import { type CliResult, FAST, type NodeProc, converged, dbApi, ouro, founderWithDb, heldBlocks as held, joinKeyless, keyFile, startNode, waitFor } from './cluster-harness.js';
import { filesUnder } from './files.js';
import { pseudoRandom, tempDir } from './helpers.js';
import { repoRoot } from './paths.js';

const DOC = path.join(repoRoot, 'docs', 'operations.md');
/** The names docs/operations.md's Runbooks section defines; none may be left in a command run. */
const PLACEHOLDERS = ['DIR', 'PEER', 'MEMBER', 'T', 'NEWDIR', 'OLDDIR', 'OLDPEER', 'PID', 'N'];

/** The runbooks this file runs: every `###` heading of the Runbooks section, checked below. */
const TITLES = ['A dead node', 'A node to replace', 'Restoring from the cluster', 'A corrupt block', 'A full disk', "Rotating a node's identity", 'A block below K+threshold'];

/** The `##` section of the document named `name`. */
function section(name: string): string {
  const doc = fs.readFileSync(DOC, 'utf8');
  const start = doc.indexOf(`\n## ${name}\n`);
  if (start === -1) throw new Error(`docs/operations.md has no section ${name}`);
  const end = doc.indexOf('\n## ', start + 1);
  return doc.slice(start, end === -1 ? undefined : end);
}

/** The `sh` blocks under `### title` in the Runbooks section, each as its command lines (comments and blank lines dropped). */
function runbook(title: string): string[][] {
  const runbooks = section('Runbooks');
  const start = runbooks.indexOf(`\n### ${title}\n`);
  if (start === -1) throw new Error(`docs/operations.md has no runbook ${title}`);
  const end = runbooks.indexOf('\n### ', start + 1);
  const text = runbooks.slice(start, end === -1 ? undefined : end);
  // Blocks inside list items are indented; the fence and the lines are taken without the indent.
  return [...text.matchAll(/^[ \t]*```sh\n([\s\S]*?)^[ \t]*```$/gm)].map((m) =>
    m[1]!
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#')),
  );
}

/** A directory with an `ouro` that runs this build (what an installed package puts on the PATH). */
function ouroOnPath(): string {
  const bin = tempDir();
  const shim = path.join(bin, 'ouro');
  fs.writeFileSync(shim, `#!/bin/sh\nexec "${process.execPath}" "${path.join(repoRoot, 'dist', 'bin', 'ouro.js')}" "$@"\n`, { mode: 0o755 });
  return bin;
}

/** A free port on loopback (UDP for QUIC, TCP for the admin API), free when this returns. */
async function freePort(kind: 'udp' | 'tcp'): Promise<number> {
  if (kind === 'udp') {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    const { port } = s.address();
    await new Promise<void>((resolve) => s.close(() => resolve()));
    return port;
  }
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** The fast knobs of the cluster tests (test/cluster-procs.ts FAST and REPL_FLAGS), as a node config file in `dir`. */
async function fastNodeDir(dir: string, extra: NodeConfigPatch = {}): Promise<string> {
  await saveConfig(dir, resolveConfig(DEFAULT_CONFIG, { heartbeat: FAST, replication: { maxUnsealedMs: 300, repairIntervalMs: 500, deadGraceMs: 1000 }, ...extra }));
  return dir;
}

/**
 * Runs a runbook's commands: fills in the names, runs each line with /bin/sh in a working
 * directory of its own (where `db.key` is), and starts `ouro ... node start DIR &` through the
 * test harness, which keeps the process and its log lines (and kills it after the test).
 */
class Operator {
  readonly #vars = new Map<string, string>();
  readonly #path: string;
  readonly started: NodeProc[] = [];

  constructor(
    readonly cwd: string,
    key: string,
  ) {
    this.#path = `${ouroOnPath()}${path.delimiter}${process.env.PATH ?? ''}`;
    fs.copyFileSync(key, path.join(cwd, 'db.key'));
  }

  set(name: string, value: string): this {
    this.#vars.set(name, value);
    return this;
  }

  fill(line: string): string {
    let out = line;
    for (const [name, value] of this.#vars) out = out.replace(new RegExp(`(?<![\\w.-])${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(?![\\w-])`, 'g'), value);
    const left = PLACEHOLDERS.find((p) => new RegExp(`(?<![\\w.-])${p}(?![\\w-])`).test(out));
    if (left) throw new Error(`${line}: ${left} is not filled in (the test sets no value for it)`);
    return out;
  }

  /** Runs one line. A `token` command's first line of output becomes `T`. */
  async run(line: string): Promise<CliResult> {
    const cmd = this.fill(line);
    const background = /^ouro((?: \S+)*?) node start (\S+) &$/.exec(cmd);
    if (background) {
      const node = await startNode(path.resolve(this.cwd, background[2]!), [], background[1]!.trim().split(' ').filter(Boolean).map((a) => (a === 'db.key' ? path.join(this.cwd, a) : a)));
      this.started.push(node);
      return { code: 0, stdout: '', stderr: '' };
    }
    const r = await new Promise<CliResult>((resolve) => {
      execFile('/bin/sh', ['-c', cmd], { cwd: this.cwd, env: { ...process.env, PATH: this.#path }, timeout: 90_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
    });
    if (/^ouro .*\btoken\b/.test(cmd) && r.code === 0) this.set('T', r.stdout.split('\n')[0]!.trim());
    return r;
  }

  /** Runs every line of a block; each must exit 0. The results, one a line. */
  async block(lines: string[]): Promise<CliResult[]> {
    const results: CliResult[] = [];
    for (const line of lines) {
      const r = await this.run(line);
      if (r.code !== 0) throw new Error(`${this.fill(line)} exited ${r.code}: ${r.stderr}`);
      results.push(r);
    }
    return results;
  }
}

const operator = (key: string) => new Operator(tempDir(), key);

/** Writes `n` objects of ~30 kB on `writer`, each in a block of its own held by `replicas` members. */
async function writeBlocks(writer: NodeProc, n: number, replicas: number, prefix = 'o'): Promise<Map<string, Buffer>> {
  const values = new Map<string, Buffer>();
  for (let i = 0; i < n; i++) {
    const value = pseudoRandom(`${prefix}${i}`, 30_000);
    values.set((await dbApi.put(writer, value, { key: `${prefix}/${i}` })).hash, value);
    await dbApi.json(writer, '/db/flush', 'POST', { replicas });
  }
  return values;
}

/** Holders of each block among `nodes` (a node that does not answer fails the check). */
async function holders(nodes: NodeProc[], blocks: string[]): Promise<Map<string, string[]>> {
  const sets = await Promise.all(nodes.map(async (n) => ({ peer: n.peerId, ids: new Set(await held(n)) })));
  return new Map(blocks.map((id) => [id, sets.filter((s) => s.ids.has(id)).map((s) => s.peer)]));
}

/**
 * Whether each of `nodes` holds exactly the blocks (of `blocks`) that placement over `members`
 * with factor `rf` gives it. The writer is left out by the callers: it keeps every block its
 * database sealed, placed on it or not.
 */
async function onPlacement(nodes: NodeProc[], blocks: string[], rf: number, members: string[]): Promise<boolean> {
  for (const n of nodes) {
    const want = blocks.filter((id) => replicaSet(id, members, rf).includes(n.peerId)).sort();
    if ((await held(n)).filter((id) => blocks.includes(id)).sort().join() !== want.join()) return false;
  }
  return true;
}

/** `ok: B blocks, E entries, R read` (or PROBLEMS), the first line of `ouro check`, as numbers. */
function checkLine(stdout: string): { ok: boolean; entries: number; read: number } {
  const m = /^(ok|PROBLEMS): \d+ blocks, (\d+) entries, (\d+) read/.exec(stdout);
  if (!m) throw new Error(`not a check report: ${stdout}`);
  return { ok: m[1] === 'ok', entries: Number(m[2]), read: Number(m[3]) };
}

/** A cluster of a founder with the database and `keyless` members, all alive, RF 3. */
async function cluster(keyless: number, founderFlags: string[] = [], memberFlags: string[] = []): Promise<{ key: string; a: NodeProc; members: NodeProc[] }> {
  const key = keyFile();
  const a = await founderWithDb(key, founderFlags);
  const members = [a];
  for (let i = 0; i < keyless; i++) members.push(await joinKeyless(a, memberFlags));
  await waitFor(() => converged(members, members.map((m) => m.peerId)), 20_000, `${members.length} members`);
  return { key, a, members };
}

describe('docs/operations.md runbooks, run as written', () => {
  it('the Runbooks section has exactly the runbooks this file runs, each with its commands', () => {
    const titles = [...section('Runbooks').matchAll(/^### (.+)$/gm)].map((m) => m[1]);
    expect(titles).toEqual(TITLES);
    for (const t of TITLES) expect(runbook(t).flat().length, t).toBeGreaterThan(0);
  });

  it('A dead node: it shows dead, repair puts its blocks back on their placement among the live members, revoke removes it', async () => {
    const steps = runbook('A dead node');
    expect(steps).toHaveLength(3);
    const { key, a, members } = await cluster(3);
    const [, b, c, d] = members as [NodeProc, NodeProc, NodeProc, NodeProc];
    const peers = members.map((m) => m.peerId);
    // Premise: some block has only two live holders once d is gone, so repair has something to
    // do: a block placed on a and d (a, the writer, keeps every block it sealed, placed on it or
    // not, so a block placed on b, c and d still has three). Placement hashes ids that are random
    // in every run: six blocks miss it in one run of 64 ((1/2)^6; a CI run did, and no wait can
    // change it), so blocks are written until one has it.
    let written = 6;
    await writeBlocks(a, written, 3);
    const placedOnAD = async () => (await held(a)).some((id) => replicaSet(id, peers, 3).includes(a.peerId) && replicaSet(id, peers, 3).includes(d.peerId));
    while (!(await placedOnAD()) && written < 30) await writeBlocks(a, 1, 3, `extra${written++}`);
    const blocks = await held(a);
    expect(blocks).toHaveLength(written);
    await waitFor(() => onPlacement([b, c, d], blocks, 3, peers), 30_000, 'placement over four');
    const before = await holders([a, b, c], blocks);
    expect(blocks.filter((id) => before.get(id)!.length < 3).length).toBeGreaterThan(0);
    const pushedBefore = (await a.get<{ replication: { pushed: number } }>('/status')).replication.pushed;

    expect(await d.kill9()).toBe(null);
    const op = operator(key).set('DIR', a.dir).set('PEER', d.peerId);
    // 1. The members command shows it dead.
    await waitFor(async () => new RegExp(`^${d.peerId}  \\S+  \\S+  dead$`, 'm').test((await op.block(steps[0]!))[0]!.stdout), 20_000, 'd dead in `ouro cluster members`');
    // 3. Status on every live member: nothing under-replicated, repair pushed; every block on the three live members.
    await waitFor(async () => {
      for (const n of [a, b, c]) {
        const s = JSON.parse((await op.set('DIR', n.dir).block(steps[1]!))[0]!.stdout) as { replication: { underReplicated: number; passes: number } };
        if (s.replication.underReplicated !== 0 || s.replication.passes === 0) return false;
      }
      return [...(await holders([a, b, c], blocks)).values()].every((h) => h.length === 3);
    }, 30_000, 'every block on its three live members');
    const pushed = (await Promise.all([a, b, c].map(async (n) => (await n.get<{ replication: { pushed: number } }>('/status')).replication.pushed))).reduce((x, y) => x + y, 0);
    expect(pushed).toBeGreaterThan(pushedBefore);
    // 4. Revoked for good.
    op.set('DIR', a.dir);
    await op.block(steps[2]!);
    expect((await op.block(steps[0]!))[0]!.stdout).toMatch(new RegExp(`^${d.peerId}  \\S+  \\S+  revoked$`, 'm'));
  });

  it('A node to replace: the new node joins, the old one drains and leaves with every block on RF members; unplanned, revoke and join', async () => {
    const steps = runbook('A node to replace');
    expect(steps).toHaveLength(4);
    const { key, a, members } = await cluster(2);
    const [, b, c] = members as [NodeProc, NodeProc, NodeProc];
    const values = await writeBlocks(a, 6, 3);
    const blocks = await held(a);
    expect(blocks).toHaveLength(values.size);
    const op = operator(key).set('DIR', a.dir).set('MEMBER', a.address).set('NEWDIR', await fastNodeDir(tempDir())).set('OLDDIR', c.dir).set('PID', String(c.child.pid));

    // 1. Token, join, start.
    const [, joined] = await op.block(steps[0]!);
    expect(joined!.stdout).toMatch(/^joined cluster /);
    const e = op.started[0]!;
    await waitFor(() => converged([a, b, c, e], [a.peerId, b.peerId, c.peerId, e.peerId]), 20_000, 'four members');
    // 2. Drain: waits, then the old node has left; every block is on its placement over the three left.
    const [drained] = await op.block(steps[1]!);
    expect(drained!.stdout).toContain('left the cluster');
    expect(await held(c)).toEqual([]);
    await waitFor(async () => (await a.members()).members.find((m) => m.peerId === c.peerId)?.status === 'left', 20_000, 'c left');
    expect((await a.members()).members.find((m) => m.peerId === c.peerId)?.revokedBy).toBe(c.peerId);
    await waitFor(() => onPlacement([b, e], blocks, 3, [a.peerId, b.peerId, e.peerId]), 30_000, 'placement over a, b, e');
    expect([...(await holders([a, b, e], blocks)).values()].every((h) => h.length === 3)).toBe(true);
    // 3. Stop (a clean exit) and wipe.
    await op.block(steps[2]!);
    expect(await c.exited).toBe(0);
    expect(fs.existsSync(c.dir)).toBe(false);

    // Unplanned: b dies; revoke it, join another node as in step 1; repair copies its blocks there.
    expect(await b.kill9()).toBe(null);
    await waitFor(async () => (await a.members()).members.find((m) => m.peerId === b.peerId)?.state === 'dead', 20_000, 'b dead');
    await op.set('OLDPEER', b.peerId).block(steps[3]!);
    await op.set('NEWDIR', await fastNodeDir(tempDir())).block(steps[0]!);
    const f = op.started[1]!;
    expect(f.peerId).not.toBe(e.peerId);
    await waitFor(() => onPlacement([e, f], blocks, 3, [a.peerId, e.peerId, f.peerId]), 30_000, 'placement over a, e, f');
    for (const [hash, value] of values) expect((await dbApi.value(a, hash)).equals(value)).toBe(true);
  });

  it('Restoring from the cluster: every object comes back byte-identical and the check (through the running node) passes', async () => {
    const steps = runbook('Restoring from the cluster');
    expect(steps).toHaveLength(1);
    const { key, a, members } = await cluster(2);
    const [, b] = members as [NodeProc, NodeProc];
    const values = await writeBlocks(a, 4, 3);
    const parent = (await dbApi.put(a, 'v1', { key: 'doc', meta: { n: '1' } })).hash;
    await dbApi.put(a, 'v2', { key: 'doc', parent, meta: { n: '2' } });
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    const byHash = (x: { objects: Array<{ hash: string }> }) => [...x.objects].sort((p, q) => (p.hash < q.hash ? -1 : 1));
    const original = byHash(await dbApi.json<{ objects: Array<{ hash: string }> }>(a, '/db/export'));
    expect(original).toHaveLength(values.size + 2);

    // The writer loses its disk.
    expect(await a.kill9()).toBe(null);
    fs.rmSync(a.dir, { recursive: true, force: true });
    const fresh = await fastNodeDir(path.join(tempDir(), 'new'));
    const op = operator(key).set('DIR', b.dir).set('MEMBER', b.address).set('/srv/new', fresh);
    const [, joined, restored, , checked] = await op.block(steps[0]!);
    expect(joined!.stdout).toMatch(/^joined cluster /);
    expect(restored!.stdout).toMatch(new RegExp(`^restored ${original.length} objects`));
    // The check ran while the node held its database's lock, so it went through the node.
    const node = op.started[0]!;
    expect(node.child.exitCode).toBe(null);
    const report = checkLine(checked!.stdout);
    expect(report.ok).toBe(true);
    expect(report.entries).toBeGreaterThanOrEqual(original.length);
    expect(report.read).toBe(report.entries);
    // Every object, version, parent and metadata field, and every value's bytes (sha256).
    expect(byHash(await dbApi.json<{ objects: Array<{ hash: string }> }>(node, '/db/export'))).toEqual(original);
    for (const [hash, value] of values) expect((await dbApi.value(node, hash)).equals(value)).toBe(true);
  });

  it('A corrupt block: a quarantined member shows in the ledger; once cleared it stays cleared and repair copies its blocks back; check names a corrupt block in the writer\'s database', async () => {
    const steps = runbook('A corrupt block');
    expect(steps).toHaveLength(3);
    // a challenges often; a and b run no timed repair pass, so no scrub finds the damage before
    // the proofs do (b) or before the check does (a); c's passes do the copying.
    const slow = ['--repair-interval-ms', '600000'];
    const { key, a, members } = await cluster(1, ['--proof-interval-ms', '100', '--proofs-per-round', '8', ...slow]);
    const c = members[1]!;
    const b = await joinKeyless(a, slow);
    await waitFor(() => converged([a, b, c], [a.peerId, b.peerId, c.peerId]), 20_000, 'b joined');
    await writeBlocks(a, 3, 3);
    const blocks = await held(a);
    await waitFor(async () => (await held(b)).length === blocks.length, 20_000, 'b holds every block');
    // b's disk goes bad: every copy it holds is overwritten with other bytes of the same length.
    const bFiles = filesUnder(b.dir).filter((f) => f.endsWith('.blk'));
    expect(bFiles).toHaveLength(blocks.length);
    for (const f of bFiles) fs.writeFileSync(f, pseudoRandom(f, fs.statSync(f).size));
    await waitFor(async () => (await a.members()).members.find((m) => m.peerId === b.peerId)?.quarantined === true, 30_000, 'b quarantined');

    const op = operator(key).set('DIR', a.dir).set('PEER', b.peerId);
    // 2. The ledger shows it quarantined.
    const [ledger] = await op.block(steps[0]!);
    expect(ledger!.stdout.split('\n').find((l) => l.startsWith(b.peerId))).toContain('QUARANTINED');
    // Checking the machine finds the bad copies. The operator stops the node, removes them (the
    // fix), starts it again and clears the quarantine.
    expect(await b.stop()).toBe(0);
    for (const f of bFiles) fs.rmSync(f, { force: true });
    const b2 = await startNode(b.dir);
    await waitFor(() => converged([a, b2, c], [a.peerId, b.peerId, c.peerId]), 20_000, 'b back');
    const [cleared] = await op.block(steps[1]!);
    expect(cleared!.stdout).toContain(`quarantine of ${b.peerId} cleared`);
    await waitFor(() => a.logs.some((l) => l.event === 'member-unquarantined' && l.peer === b.peerId), 20_000, 'the clear applied');
    const ledgerOfB = async (n: NodeProc) => {
      const v = await n.get<LedgerView>('/ledger');
      return { heldOfA: v.observers[a.peerId] ?? 0, entry: v.members.find((m) => m.peerId === b.peerId) };
    };
    const proofsOfB = async () => (await ledgerOfB(a)).entry!.proofs;
    const atClear = await proofsOfB();
    // The writer's events up to the clear (it holds the clear now; the number may be past it).
    const clearN = (await ledgerOfB(a)).heldOfA;
    // Every member applies the clear: it holds the writer's events up to it, and b is not
    // quarantined. (Not quarantined alone proves nothing: b2 restarted with none of the
    // writer's events, so it shows b unquarantined before it ever learns of the failures.)
    // Repair copies b's blocks back to it, on its placement (three members, RF 3: every block
    // on every member).
    const ids = [a.peerId, b.peerId, c.peerId];
    await waitFor(async () => (await Promise.all([a, b2, c].map(async (n) => ({ l: await ledgerOfB(n), q: (await n.members()).members.find((m) => m.peerId === b.peerId)?.quarantined })))).every(({ l, q }) => l.heldOfA >= clearN && q === false), 20_000, 'every member applied the clear');
    await waitFor(() => onPlacement([b2, c], blocks, 3, ids), 30_000, "b's blocks back on it");
    // And b stays cleared: the writer challenges it for the copies it got back and they pass,
    // with no failure or late answer since the clear.
    await waitFor(async () => (await proofsOfB()).passed >= atClear.passed + blocks.length, 30_000, "b's copies proved");
    const since = await proofsOfB();
    expect([since.failed, since.late]).toEqual([atClear.failed, atClear.late]);
    for (const [name, n] of [['a', a], ['b2', b2], ['c', c]] as const) {
      const quarantined = (await n.members()).members.find((m) => m.peerId === b.peerId)?.quarantined;
      // Which member, what it holds of the writer's events (the clear is within the first clearN)
      // and its entry for b: the clear it holds (clearedBy), the failures it counts after it
      // (failsSinceClear) and the one that quarantined b (quarantinedBy).
      expect(quarantined, `${name} shows b quarantined: ${JSON.stringify({ clearN, ...(await ledgerOfB(n)) })}`).toBe(false);
    }
    expect(await held(b2)).toEqual(expect.arrayContaining(blocks));

    // 3. The writer's own database: the check passes, then names a block damaged on its disk (exit 5).
    const [ok] = await op.block(steps[2]!);
    expect(checkLine(ok!.stdout)).toMatchObject({ ok: true, read: checkLine(ok!.stdout).entries });
    const victim = blocks[0]!;
    const file = filesUnder(a.dir).find((f) => path.basename(f) === `${victim}.blk` && !f.includes('quarantine'))!;
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    fs.writeFileSync(file, bytes);
    const bad = await op.run(steps[2]![0]!);
    expect(bad.code).toBe(5);
    expect(bad.stdout).toMatch(/^PROBLEMS: /);
    expect(bad.stdout).toContain(victim);
    // The rest of step 3 is "Restoring from the cluster", run by its own test.
  });

  it('A full disk: a restart keeps every acknowledged write, gc (through the node) deletes a dead block across the cluster, a lower RF frees copies', async () => {
    const steps = runbook('A full disk');
    expect(steps).toHaveLength(3);
    const { key, a, members } = await cluster(2);
    const [, b, c] = members as [NodeProc, NodeProc, NodeProc];
    const doomed = await writeBlocks(a, 1, 3, 'doomed');
    const kept = await writeBlocks(a, 3, 3, 'kept');
    const blocks = await held(a);
    await waitFor(async () => [...(await holders([a, b, c], blocks)).values()].every((h) => h.length === 3), 20_000, 'every block on three');
    const op = operator(key).set('DIR', a.dir).set('PID', String(a.child.pid));

    // 1. Restart: a clean stop, a start with the credential; every acknowledged write reads back.
    await op.block(steps[0]!);
    expect(await a.exited).toBe(0);
    const a2 = op.started[0]!;
    expect(a2.peerId).toBe(a.peerId);
    for (const [hash, value] of [...doomed, ...kept]) expect((await dbApi.value(a2, hash)).equals(value)).toBe(true);
    // 2. gc through the running node: the purged key's block goes, here and then on every member.
    await dbApi.json(a2, '/db/purge', 'POST', { key: 'doomed/0' });
    const [gc] = await op.block(steps[1]!);
    expect(gc!.stdout).toMatch(/^removed 1 blocks/);
    const heldNow = await held(a2);
    const gone = blocks.filter((id) => !heldNow.includes(id));
    expect(gone).toHaveLength(1);
    await waitFor(async () => [...(await holders([a2, b, c], gone)).values()].every((h) => h.length === 0), 30_000, 'the block deleted across the cluster');
    for (const [hash, value] of kept) expect((await dbApi.value(a2, hash)).equals(value)).toBe(true);
    // 3. Replication factor 2: every remaining block ends on exactly its two placed members.
    const left = blocks.filter((id) => !gone.includes(id));
    await op.set('N', '2').block(steps[2]!);
    await waitFor(() => onPlacement([b, c], left, 2, [a2.peerId, b.peerId, c.peerId]), 30_000, 'placement with RF 2');
  });

  it("Rotating a node's identity: a new directory on the same machine joins, the old identity is revoked, the new one holds its blocks", async () => {
    const steps = runbook("Rotating a node's identity");
    expect(steps).toHaveLength(3);
    const { key, a, members } = await cluster(2);
    const [, b, c] = members as [NodeProc, NodeProc, NodeProc];
    const values = await writeBlocks(a, 4, 3);
    const blocks = await held(a);
    const [udp, tcp] = [await freePort('udp'), await freePort('tcp')];
    const op = operator(key)
      .set('DIR', a.dir)
      .set('MEMBER', a.address)
      .set('NEWDIR', await fastNodeDir(tempDir()))
      .set('10.0.0.1', '127.0.0.1')
      .set('4101', String(udp))
      .set('8101', String(tcp))
      .set('OLDDIR', c.dir)
      .set('OLDPEER', c.peerId)
      .set('PID', String(c.child.pid));

    // 1. Joined on the ports given.
    await op.block(steps[0]!);
    const e = op.started[0]!;
    expect(e.address).toBe(`/ip4/127.0.0.1/udp/${udp}/quic-v1/p2p/${e.peerId}`);
    expect(e.run.admin).toBe(`http://127.0.0.1:${tcp}`);
    await waitFor(() => converged([a, b, c, e], [a.peerId, b.peerId, c.peerId, e.peerId]), 20_000, 'four members');
    // 2. Revoked: cut off (its own view says so), and every block on its placement over a, b, e.
    await op.block(steps[1]!);
    await waitFor(async () => (await fetch(`${c.run.admin}/health`)).status === 503, 20_000, 'c knows it is revoked');
    await waitFor(() => onPlacement([b, e], blocks, 3, [a.peerId, b.peerId, e.peerId]), 30_000, 'placement over a, b, e');
    for (const [hash, value] of values) expect((await dbApi.value(a, hash)).equals(value)).toBe(true);
    // 3. Stopped and removed; the old peer id stays in the list as revoked.
    await op.block(steps[2]!);
    expect(await c.exited).toBe(0);
    expect(fs.existsSync(c.dir)).toBe(false);
    expect((await e.members()).members.find((m) => m.peerId === c.peerId)?.status).toBe('revoked');
  });
  it('A block below K+threshold: at ec 4+2 a SIGKILLed member shows dead, status counts blocks at the threshold, then repair puts them back at six shards', async () => {
    const steps = runbook('A block below K+threshold');
    expect(steps).toHaveLength(2);
    // A dead grace long enough to see the blocks at the threshold before repair moves anything.
    // 15 s, not 4: the test sees the death through one spawned `ouro cluster members` and the
    // count through spawned `ouro status` runs, each a few seconds on a loaded machine, and a
    // clean-clone CI run (2026-12-07) found the three small blocks repaired before any status
    // run showed them at the threshold ('timed out waiting for three blocks at the threshold').
    const { key, a, members } = await cluster(5, ['--dead-grace-ms', '15000'], ['--dead-grace-ms', '15000']);
    const set = await ouro(['--json', 'cluster', '--dir', a.dir, 'redundancy', 'ec', '4+2']);
    expect(set.code, set.stderr).toBe(0);
    for (const n of members) await waitFor(async () => JSON.stringify((await n.get<{ replication: { ec: unknown } }>('/status')).replication.ec) === '{"k":4,"m":2}', 20_000, 'ec 4+2 taken');
    for (let i = 0; i < 3; i++) {
      await dbApi.put(a, pseudoRandom(`ec${i}`, 300_000), { key: `ec/${i}` });
      await dbApi.json(a, '/db/flush', 'POST', { shards: 6 });
    }
    type Health = { replication: { shardHealth: { blocks: number; full: number; atThreshold: number; unreadable: number }; shardsRepaired: number } };
    const op = operator(key).set('DIR', a.dir);
    const status = async () => JSON.parse((await op.block(steps[1]!))[0]!.stdout) as Health;
    await waitFor(async () => (await status()).replication.shardHealth.full === 3, 20_000, 'three blocks at six shards');
    const victim = members[5]!;
    expect(await victim.kill9()).toBe(null);
    // 1. The members command shows it dead.
    await waitFor(async () => new RegExp(`^${victim.peerId}  \\S+  \\S+  dead$`, 'm').test((await op.block(steps[0]!))[0]!.stdout), 20_000, 'the victim dead in `ouro cluster members`');
    // 2. Status shows the blocks at the threshold (five shards: K + 1), then back at six once repaired.
    await waitFor(async () => (await status()).replication.shardHealth.atThreshold === 3, 20_000, 'three blocks at the threshold');
    await waitFor(async () => {
      const s = (await status()).replication;
      // At least three: a push cut off by its time limit on a loaded machine may have landed and
      // be counted again when repeated.
      return s.shardHealth.full === 3 && s.shardsRepaired >= 3;
    }, 90_000, 'three blocks back at six shards'); // 24 s alone here; over 40 s in a CI run with the machine loaded
  });
});
