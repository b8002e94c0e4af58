/**
 * What a node keeps about its cluster, in `<dir>/cluster/` (docs/FORMAT.md, "Cluster files").
 * Every file is JSON, written whole with fsync and an atomic rename, so a crash leaves the old or
 * the new version and never a mix:
 *   members.json  the member list (carrier/membership.ts), saved before this node acts on it;
 *   joins.json    this member's join requests waiting for an operator, the peers it rejected, and
 *                 the hashes and expiry times of the join tokens it issued;
 *   join.json     on a node that asked to join and is not approved yet: whom it asked (and on
 *                 one that joined to take the cluster's database, until it has).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { CorruptionError, UnsupportedVersionError, ioError } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { type MemberList, verify } from './membership.js';

export const CLUSTER_DIR = 'cluster';
const FILES_VERSION = 1;

export interface PendingJoin {
  peerId: string;
  addresses: string[];
  /** When the request (its latest retry) arrived, ms since the epoch. */
  at: number;
}

export interface JoinState {
  version: number;
  pending: PendingJoin[];
  rejected: Array<{ peerId: string; at: number }>;
  /** SHA-256 (hex) of each unused token's secret, with its expiry (expired ones kept 30 days). */
  tokens: Array<{ hash: string; expiresAt: number }>;
  /**
   * SHA-256 (hex) of each token spent in the last 30 days, and when: a second try is told the
   * token was used. Optional (files written before it lack it; older releases leave it be).
   */
  spent?: Array<{ hash: string; at: number }>;
}

export interface JoinTarget {
  version: number;
  /** Multiaddrs of the member asked (each ending in /p2p/<id>). */
  peer: string[];
  token?: string;
  /**
   * The node joins without its database and takes the cluster's once approved (`ouro node join
   * --database` on a node that has none yet). The file then stays after the approval, until the
   * database is taken, so that a stop in between does not lose that.
   */
  database?: true;
  at: number;
}

export class ClusterFiles {
  readonly dir: string;

  constructor(nodeDir: string) {
    this.dir = path.join(nodeDir, CLUSTER_DIR);
  }

  async #read<T>(name: string): Promise<T | undefined> {
    const file = path.join(this.dir, name);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw ioError(`reading ${file}`, err);
    }
    let value: { version?: unknown };
    try {
      value = JSON.parse(text) as { version?: unknown };
    } catch (err) {
      throw new CorruptionError(`${file} is not valid JSON`, { cause: err, location: { file } });
    }
    if (value === null || typeof value !== 'object') throw new CorruptionError(`${file} is malformed`, { location: { file } });
    return value as T;
  }

  async #write(name: string, value: unknown): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(nodeVfs, path.join(this.dir, name), JSON.stringify(value, null, 1) + '\n');
  }

  async #remove(name: string): Promise<void> {
    await fs.rm(path.join(this.dir, name), { force: true });
  }

  /** The saved member list, checked like one from the network (a bad one is corruption). */
  async readList(): Promise<MemberList | undefined> {
    const list = await this.#read<MemberList>('members.json');
    if (list === undefined) return undefined;
    try {
      return await verify(list);
    } catch (err) {
      throw new CorruptionError(`${path.join(this.dir, 'members.json')} does not verify: ${(err as Error).message}`, { cause: err, location: { file: path.join(this.dir, 'members.json') } });
    }
  }

  writeList(list: MemberList): Promise<void> {
    return this.#write('members.json', list);
  }

  async readJoins(): Promise<JoinState> {
    const s = await this.#read<JoinState>('joins.json');
    if (s === undefined) return { version: FILES_VERSION, pending: [], rejected: [], tokens: [] };
    if (s.version !== FILES_VERSION) throw new UnsupportedVersionError(`${path.join(this.dir, 'joins.json')} has version ${String(s.version)}; this release reads ${FILES_VERSION}`);
    if (!Array.isArray(s.pending) || !Array.isArray(s.rejected) || !Array.isArray(s.tokens) || (s.spent !== undefined && !Array.isArray(s.spent))) throw new CorruptionError(`${path.join(this.dir, 'joins.json')} is malformed`);
    return s;
  }

  writeJoins(s: JoinState): Promise<void> {
    return this.#write('joins.json', s);
  }

  async readJoinTarget(): Promise<JoinTarget | undefined> {
    const t = await this.#read<JoinTarget>('join.json');
    if (t === undefined) return undefined;
    if (t.version !== FILES_VERSION) throw new UnsupportedVersionError(`${path.join(this.dir, 'join.json')} has version ${String(t.version)}; this release reads ${FILES_VERSION}`);
    if (!Array.isArray(t.peer) || t.peer.length === 0) throw new CorruptionError(`${path.join(this.dir, 'join.json')} is malformed`);
    return t;
  }

  writeJoinTarget(peer: string[], token: string | undefined, database = false): Promise<void> {
    return this.#write('join.json', { version: FILES_VERSION, peer, ...(token !== undefined ? { token } : {}), ...(database ? { database: true as const } : {}), at: Date.now() } satisfies JoinTarget);
  }

  removeJoinTarget(): Promise<void> {
    return this.#remove('join.json');
  }
}
