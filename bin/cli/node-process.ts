/**
 * The `ouro node start` process: a Node with its admin API, JSON log lines on stdout, and a clean
 * stop on SIGTERM or SIGINT (in-flight requests finish, the database seals and closes, exit 0).
 * The config file is read once; a change to it while running is logged as needing a restart,
 * never applied silently.
 *
 * A node that joined with `--database` and has no database yet (its join was pending) runs
 * without one until it is approved, asking as any joining node does, then takes the cluster's
 * database (takeClusterDescriptor) and goes on with it in the same process.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type Logger, pino } from 'pino';
import { AdminServer } from '../../carrier/admin.js';
import { CONFIG_FILE, type NodeConfigPatch, loadConfig } from '../../carrier/config.js';
import { databaseTaken, databaseToTake } from '../../carrier/joins.js';
import { Node } from '../../carrier/node.js';
import type { S3Gateway } from '../../carrier/s3/server.js';
import { ConfigError, NotFoundError, OuroError } from '../../lib/errors.js';
import { writeFileAtomic } from '../../lib/fsutil.js';
import { OuroDB, type OpenOptions } from '../../lib/index.js';
import { nodeVfs } from '../../lib/vfs/vfs.js';

export async function runNode(dir: string, patch: NodeConfigPatch, dbOpen: OpenOptions | undefined): Promise<void> {
  const config = await loadConfig(dir, patch);
  // Synchronous writes: every line is out before the process exits, also on a fatal error.
  const log = pino({ level: config.log.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 1, sync: true }));
  // A bug that escapes is fatal (the process exits; a restart recovers from the files), but it is logged first.
  process.on('uncaughtExceptionMonitor', (err, origin) => log.fatal({ event: 'crash', origin, err: err instanceof Error ? err.stack : String(err) }, 'uncaught error; exiting'));
  // The gateway stores in the node's database: a node without one refuses before it starts.
  if (config.s3.enabled && !config.database.enabled) throw new ConfigError('s3.enabled needs the database (database.enabled, --database): the S3 gateway stores its buckets and objects there', 's3.enabled');
  const signalled = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });

  const dbDir = path.join(dir, config.database.path);
  const via = dbOpen && !fs.existsSync(path.join(dbDir, 'OURODB.json')) ? await databaseToTake(dir) : undefined;
  if (via) {
    log.info({ event: 'database-wanted', via }, 'this node joined to hold the cluster\'s database: it runs without it until approved, then takes it');
    let taken = false;
    const stopped = await serve(dir, { ...patch, database: { ...config.database, enabled: false } }, undefined, log, signalled, async (node, signal) => {
      // A rejected node goes on running (its /health says so) until stopped, as any rejected node.
      while (node.role !== 'member') {
        await new Promise((r) => setTimeout(r, 200));
        if (signal.aborted) return;
      }
      await takeClusterDescriptor(node, via, dbDir, dbOpen!);
      await databaseTaken(dir);
      taken = true;
      log.info({ event: 'database-taken', dir: dbDir }, 'took the cluster\'s database: restarting with it');
    });
    if (stopped || !taken) return;
  }
  await serve(dir, patch, dbOpen, log, signalled);
}

/**
 * Runs a node with its admin API until a signal (then stops cleanly and answers true), or until
 * `until` resolves (then stops it and answers false).
 */
async function serve(dir: string, patch: NodeConfigPatch, dbOpen: OpenOptions | undefined, log: Logger, signalled: Promise<string>, until?: (node: Node, signal: AbortSignal) => Promise<void>): Promise<boolean> {
  const node = await Node.start({ dir, config: patch, dbOpen, logger: log });
  let admin: AdminServer;
  let s3: S3Gateway | undefined;
  try {
    // Not while a node waits to take the cluster's database (it runs without one until then).
    if (node.config.s3.enabled && node.db) {
      const { S3Gateway } = await import('../../carrier/s3/server.js');
      s3 = await S3Gateway.start({ db: node.db!, settings: node.config.s3, log, registry: node.metrics.registry, writer: node.peerId });
      log.info({ event: 's3', url: s3.url, region: node.config.s3.region }, 'S3 API listening');
    }
    admin = await AdminServer.start(node, { s3 });
  } catch (err) {
    await s3?.stop();
    await node.stop();
    throw err;
  }
  log.info({ event: 'admin', url: admin.url, open: node.config.admin.host }, 'admin API listening');

  const configFile = path.join(dir, CONFIG_FILE);
  fs.watchFile(configFile, { interval: 2000, persistent: false }, (now, before) => {
    if (now.mtimeMs !== before.mtimeMs) log.warn({ event: 'config-changed', file: configFile }, 'the config file changed; restart the node to apply it (nothing was reloaded)');
  });
  const over = new AbortController();
  const done = until?.(node, over.signal);
  // A failure of `until` stops the node, then fails the process.
  const first = await Promise.race([signalled.then((signal) => ({ signal })), ...(done ? [done.then(() => ({ signal: null }))] : [])]).catch((err: unknown) => ({ signal: null, err }));
  over.abort();
  if (first.signal !== null) log.info({ event: 'signal', signal: first.signal }, 'stopping');
  fs.unwatchFile(configFile);
  try {
    await admin.stop();
    await s3?.stop();
    await node.stop();
    process.exitCode = 0;
  } catch (err) {
    log.error({ event: 'stop-failed', err: err instanceof Error ? err.message : String(err) }, 'stop failed');
    process.exitCode = 1;
  }
  if ('err' in first) throw first.err;
  return first.signal !== null;
}

/**
 * Writes the cluster's database descriptor into `dbDir`, asked of the member at `via` (the one
 * this node joined through) or, failing that, of any other member, then opens the database once
 * to prove the credentials unlock it.
 */
export async function takeClusterDescriptor(node: Node, via: string[], dbDir: string, creds: OpenOptions): Promise<void> {
  const first = /\/p2p\/([^/]+)$/.exec(via[0]!)![1]!;
  const others = node.memberViews().filter((m) => !m.self && m.status === 'member' && m.peerId !== first).map((m) => m.peerId);
  let descriptor: string | undefined;
  let lastErr: unknown;
  for (const peer of [first, ...others]) {
    try {
      const r = (await node.request(peer, 'descriptor', { v: 1 })) as { descriptor?: unknown };
      if (typeof r?.descriptor === 'string') {
        descriptor = r.descriptor;
        break;
      }
    } catch (err) {
      lastErr = err;
    }
  }
  if (descriptor === undefined) throw new NotFoundError('no member reached runs with the database: start one with it, or join without --database', { cause: lastErr });
  let parsed: { format?: unknown };
  try {
    parsed = JSON.parse(descriptor) as { format?: unknown };
  } catch (err) {
    throw new OuroError('OURO_PROTOCOL', 'the cluster sent a database descriptor that is not JSON', { cause: err });
  }
  if (parsed?.format !== 'ourodb') throw new OuroError('OURO_PROTOCOL', 'the cluster sent something that is not a database descriptor');
  fs.mkdirSync(dbDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(nodeVfs, path.join(dbDir, 'OURODB.json'), descriptor);
  const db = await OuroDB.open(dbDir, { ...creds, create: false });
  await db.close();
}
