/**
 * `ouro node ...` and `ouro cluster ...`: running a cluster member and operating on it
 * (docs/node.md). The cluster code (libp2p, QUIC) is loaded only by these commands, so the
 * database commands start as fast as before and without it.
 *
 * `node start` is the process: JSON log lines on stdout, SIGTERM/SIGINT finish in-flight work,
 * seal and close, exit 0. The `cluster` commands talk to a running node through its admin API,
 * found in `<dir>/node.run.json`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { NodeConfigPatch } from '../../carrier/config.js';
import type { LedgerView } from '../../carrier/ledger.js';
import { NotFoundError, OuroError, RefusedError } from '../../lib/errors.js';
import type { OpenOptions, OuroDB } from '../../lib/index.js';
import { admin } from './node-admin.js';
import { type GlobalOptions, UsageError, credentials, output } from './support.js';

interface ConfigFlags {
  name?: string;
  listen?: string[];
  announce?: string[];
  relayServe?: boolean;
  relayVia?: string[];
  adminHost?: string;
  adminPort?: string;
  heartbeatMs?: string;
  suspectAfterMs?: string;
  deadAfterMs?: string;
  logLevel?: string;
  database?: boolean;
  maxFrameBytes?: string;
  requestTimeoutMs?: string;
  replicationFactor?: string;
  maxUnsealedMs?: string;
  deadGraceMs?: string;
  repairIntervalMs?: string;
  repairBytesPerSec?: string;
  repairThreshold?: string;
  proofIntervalMs?: string;
  proofDeadlineMs?: string;
  proofsPerRound?: string;
  quarantineAfter?: string;
  proofs?: boolean;
  ledgerIntervalMs?: string;
  ledgerSyncMs?: string;
  s3?: boolean;
  s3Host?: string;
  s3Port?: string;
  s3Region?: string;
  s3Replicas?: string;
}

const num = (v: string | undefined) => (v === undefined ? undefined : /^\d+$/.test(v) ? Number(v) : Number.NaN);

/** Flags as a config patch (validation, with the field named, happens in resolveConfig). */
function patchOf(o: ConfigFlags): NodeConfigPatch {
  const heartbeat = { intervalMs: num(o.heartbeatMs), suspectAfterMs: num(o.suspectAfterMs), deadAfterMs: num(o.deadAfterMs) };
  const admin = { host: o.adminHost, port: num(o.adminPort) };
  const replication = { factor: num(o.replicationFactor), maxUnsealedMs: num(o.maxUnsealedMs), deadGraceMs: num(o.deadGraceMs), repairIntervalMs: num(o.repairIntervalMs), repairBytesPerSec: num(o.repairBytesPerSec), repairThreshold: num(o.repairThreshold) };
  const proofs = { enabled: o.proofs, intervalMs: num(o.proofIntervalMs), deadlineMs: num(o.proofDeadlineMs), perRound: num(o.proofsPerRound), quarantineAfter: num(o.quarantineAfter) };
  const ledger = { intervalMs: num(o.ledgerIntervalMs), syncIntervalMs: num(o.ledgerSyncMs) };
  const relay = { serve: o.relayServe, via: o.relayVia };
  const s3 = { enabled: o.s3, host: o.s3Host, port: num(o.s3Port), region: o.s3Region, replicas: num(o.s3Replicas) };
  const clean = <T extends object>(x: T) => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined)) as Partial<T>;
  return {
    ...(o.name !== undefined ? { name: o.name } : {}),
    listen: o.listen,
    announce: o.announce,
    maxFrameBytes: num(o.maxFrameBytes),
    requestTimeoutMs: num(o.requestTimeoutMs),
    ...(Object.keys(clean(heartbeat)).length ? { heartbeat: clean(heartbeat) } : {}),
    ...(Object.keys(clean(admin)).length ? { admin: clean(admin) } : {}),
    ...(Object.keys(clean(replication)).length ? { replication: clean(replication) } : {}),
    ...(Object.keys(clean(proofs)).length ? { proofs: clean(proofs) } : {}),
    ...(Object.keys(clean(ledger)).length ? { ledger: clean(ledger) } : {}),
    ...(Object.keys(clean(s3)).length ? { s3: clean(s3) } : {}),
    ...(Object.keys(clean(relay)).length ? { relay: clean(relay) } : {}),
    ...(o.logLevel !== undefined ? { log: { level: o.logLevel as 'info' } } : {}),
    ...(o.database !== undefined ? { database: { enabled: o.database } } : {}),
  };
}

function configOptions(cmd: Command): Command {
  return cmd
    .option('--name <name>', "this node's name, shown by every member (config: name)")
    .option('--listen <multiaddr...>', 'QUIC addresses to listen on (config: listen)')
    .option('--announce <multiaddr...>', 'QUIC addresses the other members dial, instead of the listen addresses (config: announce)')
    .option('--relay-serve', 'serve circuit relay to members behind NAT (config: relay.serve)')
    .option('--relay-via <multiaddr...>', 'behind NAT: reserve a slot on these relay members (/.../p2p/<id>) and announce their /p2p-circuit addresses (config: relay.via)')
    .option('--admin-host <host>', 'admin API host (config: admin.host)')
    .option('--admin-port <port>', 'admin API port, 0 for any free one (config: admin.port)')
    .option('--heartbeat-ms <ms>', 'heartbeat interval (config: heartbeat.intervalMs)')
    .option('--suspect-after-ms <ms>', 'silence before a member is suspect (config: heartbeat.suspectAfterMs)')
    .option('--dead-after-ms <ms>', 'silence before a member is dead (config: heartbeat.deadAfterMs)')
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent (config: log.level)')
    .option('--max-frame-bytes <n>', 'largest carrier frame (config: maxFrameBytes)')
    .option('--request-timeout-ms <ms>', 'default request time limit (config: requestTimeoutMs)')
    .option('--replication-factor <n>', 'members each sealed block is placed on; the same on every member (config: replication.factor)')
    .option('--max-unsealed-ms <ms>', 'seal written data at the latest this long after it was written (config: replication.maxUnsealedMs)')
    .option('--dead-grace-ms <ms>', 'how long a dead member keeps its placements before repair copies its blocks (config: replication.deadGraceMs)')
    .option('--repair-interval-ms <ms>', 'pause between repair passes (config: replication.repairIntervalMs)')
    .option('--repair-bytes-per-sec <n>', 'bandwidth repair may use (config: replication.repairBytesPerSec)')
    .option('--repair-threshold <n>', 'at ec K+M, repair a block once its healthy shards fall to K + n (config: replication.repairThreshold, default 1)')
    .option('--proof-interval-ms <ms>', 'pause between proof-of-storage challenge rounds (config: proofs.intervalMs)')
    .option('--proof-deadline-ms <ms>', 'a correct proof later than this is late (config: proofs.deadlineMs)')
    .option('--proofs-per-round <n>', 'challenges per round (config: proofs.perRound)')
    .option('--quarantine-after <n>', 'failed or late proofs that quarantine a member; the same on every member (config: proofs.quarantineAfter)')
    .option('--proofs', 'challenge the holders of the blocks this node seals (config: proofs.enabled; the default)')
    .option('--no-proofs', 'make no proof-of-storage challenges (config: proofs.enabled)')
    .option('--ledger-interval-ms <ms>', 'how often this node records uptime, holding and served events (config: ledger.intervalMs)')
    .option('--ledger-sync-ms <ms>', "how often it copies the other members' ledger events (config: ledger.syncIntervalMs)")
    .option('--s3', 'serve the S3 API; needs the database (config: s3.enabled; docs/s3.md)')
    .option('--no-s3', 'do not serve the S3 API')
    .option('--s3-host <host>', 'S3 API host (config: s3.host)')
    .option('--s3-port <port>', 'S3 API port, 0 for any free one (config: s3.port)')
    .option('--s3-region <region>', 'the region S3 clients sign for (config: s3.region)')
    .option('--s3-replicas <n>', 'an S3 write answers once this many members hold it (config: s3.replicas)')
    .option('--database', 'open the embedded database in <dir>/db with the node (config: database.enabled)')
    .option('--no-database', 'run without the database');
}

/** Credentials for the node's database, when its config enables one. */
async function dbOpenOf(g: GlobalOptions, enabled: boolean): Promise<OpenOptions | undefined> {
  if (!enabled) return undefined;
  return { ...(await credentials(g)), create: false };
}

export function registerNodeCommands(program: Command, g: () => GlobalOptions): void {
  const node = program.command('node').description('run a cluster member (docs/node.md)');

  configOptions(
    node
      .command('init')
      .description('prepare a node directory (identity, config); --new-cluster makes a new cluster with this node as founder')
      .argument('<dir>', 'node directory')
      .option('--new-cluster', 'create a new cluster'),
  ).action(async (dir: string, o: ConfigFlags & { newCluster?: boolean }) => {
    const { Node } = await import('../../carrier/node.js');
    const { loadConfig } = await import('../../carrier/config.js');
    const config = await loadConfig(dir, patchOf(o));
    const db = await openNodeDb(dir, g(), config.database);
    let r: Awaited<ReturnType<typeof Node.init>>;
    try {
      r = await Node.init(dir, { newCluster: o.newCluster === true, config: patchOf(o), identityKey: db?.deriveKey('node-identity') });
    } finally {
      await db?.close();
    }
    output(g(), { dir: path.resolve(dir), ...r }, () => (r.clusterId ? `created cluster ${r.clusterId}\nnode ${r.peerId}` : `node ${r.peerId} (in no cluster yet: ouro node join ${dir} --peer ADDR)`));
  });

  configOptions(
    node
      .command('join')
      .description('ask a member to admit this node; waits for the answer (approval by an operator, or at once with a token)')
      .argument('<dir>', 'node directory (prepared if new)')
      .requiredOption('--peer <multiaddr...>', "a member's QUIC address ending in /p2p/<peer id>")
      .option('--token <token>', 'a join token from `ouro cluster token` (admits at once)')
      .option('--wait <seconds>', 'how long to wait for approval; a node started later keeps asking', '10'),
  ).action(async (dir: string, o: ConfigFlags & { peer: string[]; token?: string; wait: string }) => {
    const { Node } = await import('../../carrier/node.js');
    const { loadConfig } = await import('../../carrier/config.js');
    const patch = patchOf(o);
    const config = await loadConfig(dir, patch);
    // A node that has no database yet joins without one and then takes the cluster's database
    // descriptor (its wrapped keys: the credentials must unlock it), so that every keyed member
    // holds the same database: at once when admitted now, else `node start` does once approved
    // (join.json records it). One that has one opens it once (one passphrase stretch) for the
    // identity and the node.
    const takeDescriptor = config.database.enabled && !fs.existsSync(path.join(dir, config.database.path, 'OURODB.json'));
    const db = takeDescriptor ? undefined : await openNodeDb(dir, g(), config.database);
    const creds = takeDescriptor ? await credentials(g()) : undefined;
    let running: Awaited<ReturnType<typeof Node.start>>;
    try {
      await Node.init(dir, { config: patch, identityKey: db?.deriveKey('node-identity') });
      await Node.requestJoin(dir, o.peer, o.token, { database: takeDescriptor });
      running = await Node.start({ dir, config: takeDescriptor ? { ...patch, database: { ...config.database, enabled: false } } : patch, db });
    } catch (err) {
      await db?.close();
      throw err;
    }
    try {
      const waitMs = Number(o.wait) * 1000;
      if (!Number.isFinite(waitMs) || waitMs < 0) throw new UsageError('--wait takes seconds');
      // Wait for the first answer at least (bounded by the request time limit), then up to --wait for approval.
      const firstBy = Date.now() + running.config.requestTimeoutMs + 1000;
      const until = Date.now() + waitMs;
      while (running.role === 'joining' && (running.lastJoinAnswer === null ? Date.now() < firstBy : Date.now() < until)) await new Promise((r) => setTimeout(r, 100));
      const status = running.role === 'member' ? 'joined' : running.role === 'rejected' ? 'rejected' : running.lastJoinAnswer === 'pending' ? 'pending' : 'unanswered';
      const { refusalText } = await import('../../carrier/joins.js');
      const reason = status === 'rejected' ? running.joinRefusal : null;
      output(g(), { peerId: running.peerId, status, clusterId: running.clusterId ?? null, ...(status === 'rejected' ? { reason } : {}) }, () =>
        status === 'joined'
          ? `joined cluster ${running.clusterId} as ${running.peerId}`
          : status === 'rejected'
            ? `join rejected: ${refusalText(reason)}`
            : `join ${status}: on the member asked, an operator runs \`ouro cluster --dir DIR approve ${running.peerId}\` (DIR: that member's node directory); \`ouro node start ${dir}\` keeps asking${takeDescriptor ? ", and takes the cluster's database once approved" : ''}`,
      );
      if (status === 'rejected') throw new RefusedError(`${running.peerId} was refused by the cluster: ${refusalText(reason)}`, { reason: reason ?? undefined });
      if (status === 'joined' && takeDescriptor) {
        const { takeClusterDescriptor } = await import('./node-process.js');
        const { databaseTaken } = await import('../../carrier/joins.js');
        await takeClusterDescriptor(running, o.peer, path.join(dir, config.database.path), creds!);
        await databaseTaken(dir);
      }
    } finally {
      await running.stop();
      await db?.close();
    }
  });

  configOptions(
    node
      .command('start')
      .description('run a member: QUIC carrier, heartbeats, admin API; JSON logs on stdout; SIGTERM stops it cleanly')
      .argument('<dir>', 'node directory'),
  ).action(async (dir: string, o: ConfigFlags) => {
    const { runNode } = await import('./node-process.js');
    const { loadConfig } = await import('../../carrier/config.js');
    const config = await loadConfig(dir, patchOf(o));
    await runNode(dir, patchOf(o), await dbOpenOf(g(), config.database.enabled));
    // Whatever a library left scheduled, a stopped node's process ends here.
    process.exit(process.exitCode ?? 0);
  });

  node
    .command('drain')
    .description('move every block this running node holds to the other members (no block drops below its placement), then leave the cluster')
    .argument('<dir>', 'the running node\'s directory')
    .option('--no-wait', 'start the drain and return (GET /status shows its progress; the node leaves when done)')
    .action(async (dir: string, o: { wait: boolean }) => {
      await admin(dir, 'POST', '/cluster/drain');
      if (!o.wait) return output(g(), { draining: true }, () => 'draining; the node leaves the cluster when every block it holds is on its placement elsewhere');
      // The node drives the drain; this only watches, so an interrupted watch leaves it going.
      let last = '';
      for (;;) {
        const s = (await admin(dir, 'GET', '/status')) as { role: string; drain: { held: number; unsettled: number; passes: number; done: boolean } | null };
        if (s.role !== 'member') {
          if (s.role !== 'left') throw new RefusedError(`the node is ${s.role}, not drained`);
          return output(g(), { left: true, drain: s.drain }, () => `drained: ${s.drain?.held ?? 0} blocks checked on their new placement; left the cluster`);
        }
        const line = s.drain ? `pass ${s.drain.passes}: ${s.drain.held} blocks held here, ${s.drain.unsettled} not yet on their new placement` : 'starting';
        if (line !== last && !g().json) process.stderr.write(`${line}\n`);
        last = line;
        await new Promise((r) => setTimeout(r, 500));
      }
    });

  node
    .command('token')
    .description("the admin API's bearer tokens (DIR/admin-tokens.json)")
    .command('rotate')
    .description('replace the token of a scope (make it if there is none) and print it; a running node refuses the old one at once')
    .argument('<dir>', 'node directory')
    .option('--scope <scope>', 'read (status, metrics, ledger, members: what Prometheus needs), data (those and /db/) or admin (everything)', 'admin')
    .action(async (dir: string, o: { scope: string }) => {
      const { SCOPES, rotateToken } = await import('../../carrier/admin-tokens.js');
      const { CONFIG_FILE, loadConfig } = await import('../../carrier/config.js');
      const { readRunInfo } = await import('../../carrier/admin.js');
      if (!(SCOPES as readonly string[]).includes(o.scope)) throw new UsageError(`--scope takes ${SCOPES.join(', ')}, not ${o.scope}`);
      const scope = o.scope as (typeof SCOPES)[number];
      if (!fs.existsSync(path.join(dir, CONFIG_FILE))) throw new NotFoundError(`${dir} is not a node directory (no ${CONFIG_FILE}): \`ouro node init ${dir}\` makes one`);
      // A running node rotates it itself, so that it takes the new token at once (and writes
      // node.run.json); a stopped one reads the file at its next start.
      const r = (await readRunInfo(dir))
        ? ((await admin(dir, 'POST', '/admin/token/rotate', { scope })) as { scope: string; token: string })
        : { scope, token: (await rotateToken(dir, scope, (await loadConfig(dir)).admin.token)).token };
      output(g(), r, () => r.token);
    });

  configOptions(
    program
      .command('restore')
      .description("rebuild this node's database from the cluster: every block the live members hold, verified and indexed (the node joined with --database and the key)")
      .argument('<dir>', 'node directory'),
  ).action(async (dir: string, o: ConfigFlags) => {
    const { Node } = await import('../../carrier/node.js');
    const { loadConfig } = await import('../../carrier/config.js');
    const config = await loadConfig(dir, patchOf(o));
    if (!config.database.enabled) throw new UsageError(`${dir} runs without a database: there is nothing to restore into (join with --database)`);
    const node = await Node.start({ dir, config: patchOf(o), dbOpen: (await dbOpenOf(g(), true))! });
    try {
      if (node.role !== 'member') throw new RefusedError(`${node.peerId} is not a member of its cluster (${node.role})`);
      const started = Date.now();
      const r = await node.replication.restore();
      const stats = await node.db!.stats();
      // `adopted`: blocks this run fetched from the members; the rest were here already (an
      // earlier, interrupted restore, or blocks the node received as a member before).
      output(g(), { ...r, objects: stats.objects, logicalBytes: stats.logicalBytes, seconds: (Date.now() - started) / 1000 }, () =>
        `restored ${stats.objects} objects (${stats.logicalBytes} bytes) in ${r.blocks} blocks: ${r.adopted} fetched from the cluster by this run, ${r.blocks - r.adopted} already here`,
      );
    } finally {
      await node.stop();
    }
    process.exit(process.exitCode ?? 0);
  });

  const cluster = program
    .command('cluster')
    .description('operate on the cluster through a running node (its admin API)')
    .option('--dir <dir>', 'the running node\'s directory (default $OURO_NODE_DIR)');
  const dirOf = () => cluster.opts<{ dir?: string }>().dir ?? process.env.OURO_NODE_DIR ?? (() => { throw new UsageError('name the node with --dir DIR (or OURO_NODE_DIR)'); })();

  cluster.command('members').description('members and their states').action(async () => {
    const r = (await admin(dirOf(), 'GET', '/members')) as { clusterId: string; epoch: number; members: Array<{ peerId: string; name: string | null; role: string | null; status: string; state: string | null; self: boolean; draining: boolean }> };
    // Left and revoked members have no state: their status says what they are.
    const line = (m: (typeof r.members)[number]) => [m.peerId, m.name ?? '-', m.role ?? '-', m.status === 'member' ? `${m.state}${m.draining ? ' draining' : ''}` : m.status, m.self ? '(this node)' : ''].join('  ').trimEnd();
    output(g(), r, () => [`cluster ${r.clusterId} epoch ${r.epoch}`, ...r.members.map(line)].join('\n'));
  });
  cluster.command('status').description('the node\'s status').action(async () => {
    const r = await admin(dirOf(), 'GET', '/status');
    output(g(), r, () => JSON.stringify(r, null, 2));
  });
  cluster.command('pending').description('join requests waiting on this node').action(async () => {
    const r = (await admin(dirOf(), 'GET', '/cluster/pending')) as { pending: Array<{ peerId: string; addresses: string[]; at: number }> };
    output(g(), r, () => (r.pending.length ? r.pending.map((p) => `${p.peerId}  ${new Date(p.at).toISOString()}  ${p.addresses.join(' ')}`).join('\n') : '(no pending join requests)'));
  });
  for (const [verb, done, help] of [['approve', 'approved', 'admit a pending peer'], ['reject', 'rejected', 'turn a pending peer away'], ['revoke', 'revoked', 'remove a member for good (it is cut off at once)']] as const) {
    cluster
      .command(verb)
      .description(help)
      .argument('<peerId>', 'peer id')
      .action(async (peerId: string) => {
        const r = await admin(dirOf(), 'POST', `/cluster/${verb}`, { peerId });
        output(g(), r, () => `${done} ${peerId}`);
      });
  }
  cluster
    .command('token')
    .description('a one-time join token (`ouro node join DIR --peer ADDR --token T` admits at once)')
    .option('--ttl <duration>', 'validity: 90s, 15m, 2h, 1d', '15m')
    .action(async (o: { ttl: string }) => {
      const r = (await admin(dirOf(), 'POST', '/cluster/token', { ttlSec: durationSec(o.ttl) })) as { token: string; expiresAt: number };
      output(g(), r, () => `${r.token}\n(valid until ${new Date(r.expiresAt).toISOString()}, once)`);
    });
  cluster
    .command('replication-factor')
    .description("set the cluster's replication factor (a member list change; repair then moves blocks to match)")
    .argument('<n>', 'members each sealed block is placed on')
    .action(async (n: string) => {
      const factor = num(n);
      if (!Number.isSafeInteger(factor)) throw new UsageError(`the replication factor must be a whole number, not ${n}`);
      const r = await admin(dirOf(), 'POST', '/cluster/replication-factor', { factor });
      output(g(), r, () => `replication factor ${factor}`);
    });
  const redundancy = cluster.command('redundancy').description("how the cluster stores each sealed block: whole replicas, or erasure-coded shards (a member list change; docs/node.md, \"Redundancy\")");
  redundancy
    .command('replicas')
    .description('every block whole on N members (erasure coding off)')
    .argument('<n>', 'members each sealed block is placed on')
    .action(async (n: string) => {
      const replicas = num(n);
      if (!Number.isSafeInteger(replicas)) throw new UsageError(`replicas must be a whole number, not ${n}`);
      const r = await admin(dirOf(), 'POST', '/cluster/redundancy', { replicas });
      output(g(), r, () => `redundancy replicas ${replicas}`);
    });
  redundancy
    .command('ec')
    .description('blocks from the small-block line up as K data + M parity shards, one per member (refused while fewer than K+M members are placeable)')
    .argument('<K+M>', 'e.g. 4+2 or 8+3')
    .action(async (km: string) => {
      const parts = /^(\d+)\+(\d+)$/.exec(km);
      if (!parts) throw new UsageError(`ec takes K+M, e.g. 4+2, not ${km}`);
      const ec = { k: Number(parts[1]), m: Number(parts[2]) };
      const r = await admin(dirOf(), 'POST', '/cluster/redundancy', { ec });
      output(g(), r, () => `redundancy ec ${ec.k}+${ec.m}`);
    });
  cluster
    .command('ledger')
    .description('the node ledger: per member, blocks and bytes held, proofs passed/failed/late, uptime seen by others, bytes served for repair')
    .action(async () => {
      const r = (await admin(dirOf(), 'GET', '/ledger')) as LedgerView;
      output(g(), r, () => ledgerTable(r));
    });
  cluster
    .command('clear-quarantine')
    .description("end a member's quarantine (recorded in the ledger; placement takes the member back)")
    .argument('<peerId>', 'peer id')
    .action(async (peerId: string) => {
      const r = await admin(dirOf(), 'POST', '/cluster/quarantine/clear', { peerId });
      output(g(), r, () => `quarantine of ${peerId} cleared`);
    });
  cluster.command('leave').description('this node leaves the cluster (announced to the members)').action(async () => {
    const r = await admin(dirOf(), 'POST', '/cluster/leave');
    output(g(), r, () => 'left the cluster');
  });
}

/** `ouro cluster ledger` as a table, one member a line. */
function ledgerTable(r: LedgerView): string {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const rows = r.members.map((m) => [
    m.peerId,
    String(m.blocksHeld),
    mib(m.bytesHeld),
    `${m.proofs.passed}/${m.proofs.failed}/${m.proofs.late}`,
    m.uptimeRatio === null ? '-' : `${(m.uptimeRatio * 100).toFixed(1)}% of ${Math.round(m.uptimeSeenMs / 1000)}s`,
    mib(m.servedForRepairBytes),
    m.quarantined ? 'QUARANTINED' : '',
  ]);
  const head = ['member', 'blocks', 'held', 'proofs p/f/l', 'uptime seen', 'served', ''];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [`ledger of cluster ${r.clusterId}: ${r.events} events, digest ${r.digest.slice(0, 16)}`, line(head), ...rows.map(line)].join('\n');
}

function durationSec(text: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(text);
  if (!m) throw new UsageError(`--ttl takes a duration such as 90s, 15m, 2h or 1d, not ${text}`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's'];
}

/** The node's database when its config enables one (created if missing), for `node init` and `node join`. */
async function openNodeDb(dir: string, g: GlobalOptions, database: { enabled: boolean; path: string }): Promise<OuroDB | undefined> {
  if (!database.enabled) return undefined;
  const { OuroDB } = await import('../../lib/index.js');
  const exists = fs.existsSync(path.join(dir, database.path, 'OURODB.json'));
  return OuroDB.open(path.join(dir, database.path), { ...(await credentials(g, !exists)), create: true });
}
