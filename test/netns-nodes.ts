/**
 * `ouro node` processes inside a network lab (test/netns.ts): member i of the lab runs its node
 * (and every `ouro node init/join` for its directory, which listen too) inside its namespace,
 * listening for QUIC on the lab address at a fixed port and serving its admin API on the same
 * address, which the test process reaches. `ouro cluster` commands run from the test process
 * through that admin API (node.run.json), as an operator's would.
 */
import type { NetLab } from './netns.js';
import { FAST_FLAGS, type NodeProc, REPL_FLAGS, ouroJson, startNode, tempDir } from './cluster-procs.js';

/** The QUIC port every lab member listens on (each namespace has its ports to itself). */
export const LAB_PORT = 4100;

/** The flags that put member i's node on its lab address. */
export function labFlags(lab: NetLab, i: number): string[] {
  const { ip } = lab.hosts[i]!;
  return ['--listen', `/ip4/${ip}/udp/${LAB_PORT}/quic-v1`, '--admin-host', ip];
}

/** A new cluster founded by member i (with the database when `key` is given), started. */
export async function labFounder(lab: NetLab, i: number, opts: { key?: string; extra?: string[] } = {}): Promise<NodeProc> {
  const dir = tempDir();
  const keyed = opts.key !== undefined ? ['--key-file', opts.key] : [];
  await ouroJson([...keyed, 'node', 'init', dir, '--new-cluster', ...(opts.key !== undefined ? ['--database'] : []), ...labFlags(lab, i), ...FAST_FLAGS, ...REPL_FLAGS, ...(opts.extra ?? [])], lab.wrap(i));
  return startNode(dir, [], keyed, lab.wrap(i));
}

/** Member i admitted by token through `via` (taking the cluster's database when `key` is given), started. */
export async function labJoin(lab: NetLab, i: number, via: NodeProc, opts: { key?: string; extra?: string[] } = {}): Promise<NodeProc> {
  const { token } = await ouroJson<{ token: string }>(['cluster', '--dir', via.dir, 'token', '--ttl', '5m']);
  const dir = tempDir();
  const keyed = opts.key !== undefined ? ['--key-file', opts.key] : [];
  const r = await ouroJson<{ status: string }>([...keyed, 'node', 'join', dir, '--peer', via.address, '--token', token, ...(opts.key !== undefined ? ['--database'] : []), ...labFlags(lab, i), ...FAST_FLAGS, ...REPL_FLAGS, ...(opts.extra ?? [])], lab.wrap(i));
  if (r.status !== 'joined') throw new Error(`token join answered ${r.status}`);
  return startNode(dir, [], keyed, lab.wrap(i));
}
