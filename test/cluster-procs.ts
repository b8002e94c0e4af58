/**
 * Running `ouro node` processes, for the cluster tests (through test/cluster-harness.ts) and the
 * chaos script (test/chaos.ts): each node is a real `ouro node start` child process on loopback
 * QUIC, driven through the real CLI and admin API. Every process started here is killed when
 * the process that started it exits (and by killAll).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { RunInfo } from '../carrier/admin.js';
import { repoRoot } from './paths.js';
import os from 'node:os';

const OURO = path.join(repoRoot, 'dist', 'bin', 'ouro.js');

/** Fast failure detection for tests; docs/node.md gives the defaults. */
export const FAST = { intervalMs: 200, suspectAfterMs: 800, deadAfterMs: 2000 };
export const FAST_FLAGS = ['--heartbeat-ms', String(FAST.intervalMs), '--suspect-after-ms', String(FAST.suspectAfterMs), '--dead-after-ms', String(FAST.deadAfterMs)];

let makeDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'ourodb-cluster-'));
/** Where new node directories come from (the tests hand in their cleaned-up temp dirs). */
export function setDirMaker(fn: () => string): void {
  makeDir = fn;
}
/** A new node directory (the tests' temp dirs under cluster-harness.ts). */
export function tempDir(): string {
  return makeDir();
}

const children = new Set<ChildProcess>();
/** SIGKILLs every process started here that is still running. */
export function killAll(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
}
process.once('exit', killAll);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `ouro ARGS` to completion. `wrap` is an argv prefix the command runs under (test/netns.ts:
 * `ip netns exec NS`, to run it inside a lab member's network namespace).
 */
export function ouro(args: string[], env: Record<string, string> = {}, wrap: string[] = []): Promise<CliResult> {
  return new Promise((resolve) => {
    const [cmd, ...argv] = [...wrap, process.execPath, OURO, ...args];
    const child = execFile(cmd!, argv, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      children.delete(child);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    children.add(child);
  });
}

/** `ouro --json ARGS`, parsed; fails the test with stderr when it exits non-zero. */
export async function ouroJson<T = Record<string, unknown>>(args: string[], wrap: string[] = []): Promise<T> {
  const r = await ouro(['--json', ...args], {}, wrap);
  if (r.code !== 0) throw new Error(`ouro ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export interface LogLine {
  level: number;
  event?: string;
  [k: string]: unknown;
}

export class NodeProc {
  readonly logs: LogLine[] = [];
  readonly exited: Promise<number | null>;
  run!: RunInfo;

  constructor(
    readonly dir: string,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.logs.push({ level: 0, event: 'non-json', line });
      }
    });
  }

  get peerId(): string {
    return this.run.peerId;
  }

  get address(): string {
    return this.run.addresses[0]!;
  }

  async get<T = Record<string, unknown>>(route: string): Promise<T> {
    // With the token: off loopback (a node in a network namespace) every admin request needs one.
    const res = await fetch(`${this.run.admin}${route}`, { headers: { authorization: `Bearer ${this.run.token}` } });
    return (await res.json()) as T;
  }

  async post<T = Record<string, unknown>>(route: string, body: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.run.admin}${route}`, { method: 'POST', headers: { authorization: `Bearer ${this.run.token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as T };
  }

  members(): Promise<MembersView> {
    return this.get<MembersView>('/members');
  }

  /** SIGTERM, and the exit code. */
  async stop(): Promise<number | null> {
    this.child.kill('SIGTERM');
    const code = await this.exited;
    children.delete(this.child);
    return code;
  }

  kill9(): Promise<number | null> {
    this.child.kill('SIGKILL');
    children.delete(this.child);
    return this.exited;
  }
}

/** The blocks a node holds now (its admin API). */
export async function heldBlocks(node: NodeProc): Promise<string[]> {
  return (await node.get<{ blocks: Array<{ id: string }> }>('/replication/blocks')).blocks.map((b) => b.id);
}

export interface MembersView {
  clusterId: string;
  epoch: number;
  signer: string;
  members: Array<{ peerId: string; self: boolean; name: string | null; role: 'founder' | 'keyed' | 'keyless' | null; status: 'member' | 'revoked' | 'left'; state: 'unknown' | 'alive' | 'suspect' | 'dead' | null; since: number | null; lastHeard: number | null; addresses: string[]; revokedBy: string | null; draining: boolean; quarantined: boolean }>;
}

/** Starts `ouro node start DIR` (under the argv prefix `wrap`, as ouro()) and waits until its admin API is up. */
export async function startNode(dir: string, flags: string[] = [], globalFlags: string[] = [], wrap: string[] = []): Promise<NodeProc> {
  fs.rmSync(path.join(dir, 'node.run.json'), { force: true });
  const [cmd, ...argv] = [...wrap, process.execPath, OURO, ...globalFlags, 'node', 'start', dir, ...flags];
  const child = spawn(cmd!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const node = new NodeProc(dir, child);
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`ouro node start ${dir} exited ${child.exitCode}: ${stderr}`);
    return fs.existsSync(path.join(dir, 'node.run.json'));
  }, 20_000);
  node.run = JSON.parse(fs.readFileSync(path.join(dir, 'node.run.json'), 'utf8')) as RunInfo;
  return node;
}

/** A new cluster: its founder initialised and running. */
export async function founder(): Promise<NodeProc> {
  const dir = tempDir();
  await ouroJson(['node', 'init', dir, '--new-cluster', ...FAST_FLAGS]);
  return startNode(dir);
}

/** A node admitted with a one-time token from `via`, then started. */
export async function joinByToken(via: NodeProc): Promise<NodeProc> {
  const { token } = await ouroJson<{ token: string }>(['cluster', '--dir', via.dir, 'token', '--ttl', '5m']);
  const dir = tempDir();
  const r = await ouroJson<{ status: string }>(['node', 'join', dir, '--peer', via.address, '--token', token, ...FAST_FLAGS]);
  if (r.status !== 'joined') throw new Error(`token join answered ${r.status}`);
  return startNode(dir);
}

/** Polls `check` until it returns true (or throws its last error after `timeoutMs`). */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 15_000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw last instanceof Error ? last : new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether every node holds the same list (epoch and signer) with exactly `expected` members, all alive. */
export async function converged(nodes: NodeProc[], expected: string[]): Promise<boolean> {
  const views = await Promise.all(nodes.map((n) => n.members()));
  const want = [...expected].sort().join();
  return views.every((v) => v.epoch === views[0]!.epoch && v.signer === views[0]!.signer && v.members.filter((m) => m.status === 'member').map((m) => m.peerId).sort().join() === want && v.members.every((m) => m.status !== 'member' || m.state === 'alive'));
}

// ------------------------------------------------------------------ nodes with the database

/** Fast replication for tests: seal within 300 ms, repair every 500 ms, a dead member's blocks move after 1 s. */
export const REPL_FLAGS = ['--max-unsealed-ms', '300', '--repair-interval-ms', '500', '--dead-grace-ms', '1000'];

/** A key file for the cluster's database (--key-file: no passphrase stretch per process). */
export function keyFile(): string {
  const file = path.join(tempDir(), 'db.key');
  fs.writeFileSync(file, Buffer.alloc(32, 42).toString('hex'), { mode: 0o600 });
  return file;
}

/** A new cluster whose founder runs the database. */
export async function founderWithDb(key: string, extra: string[] = []): Promise<NodeProc> {
  const dir = tempDir();
  await ouroJson(['--key-file', key, 'node', 'init', dir, '--new-cluster', '--database', ...FAST_FLAGS, ...REPL_FLAGS, ...extra]);
  return startNode(dir, [], ['--key-file', key]);
}

/** A node with the database admitted by token through `via` (it takes the cluster's database), then started. */
export async function joinWithDb(via: NodeProc, key: string, extra: string[] = [], dir = tempDir()): Promise<NodeProc> {
  await admitWithDb(via, key, dir, extra);
  return startNode(dir, [], ['--key-file', key]);
}

/** `ouro node join DIR --database` by token through `via`, not started. */
export async function admitWithDb(via: NodeProc, key: string, dir: string, extra: string[] = []): Promise<void> {
  const { token } = await ouroJson<{ token: string }>(['cluster', '--dir', via.dir, 'token', '--ttl', '5m']);
  const r = await ouroJson<{ status: string }>(['--key-file', key, 'node', 'join', dir, '--peer', via.address, '--token', token, '--database', ...FAST_FLAGS, ...REPL_FLAGS, ...extra]);
  if (r.status !== 'joined') throw new Error(`token join answered ${r.status}`);
}

/** A keyless node (replica only) admitted by token through `via`, then started. */
export async function joinKeyless(via: NodeProc, extra: string[] = []): Promise<NodeProc> {
  return startNode((await admitKeyless(via, extra)).dir);
}

/** `ouro node join DIR` (keyless) by token through `via`, not started: a member from now on. */
export async function admitKeyless(via: NodeProc, extra: string[] = []): Promise<{ dir: string; peerId: string }> {
  const { token } = await ouroJson<{ token: string }>(['cluster', '--dir', via.dir, 'token', '--ttl', '5m']);
  const dir = tempDir();
  const r = await ouroJson<{ status: string; peerId: string }>(['node', 'join', dir, '--peer', via.address, '--token', token, ...FAST_FLAGS, ...REPL_FLAGS, ...extra]);
  if (r.status !== 'joined') throw new Error(`token join answered ${r.status}`);
  return { dir, peerId: r.peerId };
}

/** Database calls on a running node through its admin API (docs/node.md). */
export const dbApi = {
  async put(node: NodeProc, value: Uint8Array | string, opts: { key?: string; parent?: string; meta?: Record<string, string> } = {}): Promise<{ hash: string; size: number }> {
    const { meta, ...rest } = opts;
    const q = new URLSearchParams({ ...rest, ...(meta ? { meta: JSON.stringify(meta) } : {}) } as Record<string, string>).toString();
    const res = await fetch(`${node.run.admin}/db/objects${q ? `?${q}` : ''}`, { method: 'PUT', headers: { authorization: `Bearer ${node.run.token}` }, body: value });
    const body = (await res.json()) as { hash: string; size: number; error?: { code: string; message: string } };
    if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code });
    return body;
  },
  async get(node: NodeProc, route: string): Promise<Response> {
    return fetch(`${node.run.admin}${route}`, { headers: { authorization: `Bearer ${node.run.token}` } });
  },
  async json<T = Record<string, unknown>>(node: NodeProc, route: string, method = 'GET', body?: unknown): Promise<T> {
    const res = await fetch(`${node.run.admin}${route}`, { method, headers: { authorization: `Bearer ${node.run.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const out = (await res.json()) as T & { error?: { code: string; message: string } };
    if (out.error) throw Object.assign(new Error(`${route}: ${out.error.message}`), { code: out.error.code });
    return out;
  },
  async value(node: NodeProc, hash: string): Promise<Buffer> {
    const res = await dbApi.get(node, `/db/objects/${hash}`);
    if (res.status !== 200) throw new Error(`GET ${hash} on ${node.peerId}: ${res.status} ${await res.text()}`);
    return Buffer.from(await res.arrayBuffer());
  },
};
