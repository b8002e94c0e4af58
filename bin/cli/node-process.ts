/**
 * The `ouro node start` process: a Node with its admin API, JSON log lines on stdout, and a clean
 * stop on SIGTERM or SIGINT (in-flight requests finish, the database seals and closes, exit 0).
 * The config file is read once; a change to it while running is logged as needing a restart,
 * never applied silently.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { AdminServer } from '../../carrier/admin.js';
import { CONFIG_FILE, type NodeConfigPatch, loadConfig } from '../../carrier/config.js';
import { Node } from '../../carrier/node.js';
import type { S3Gateway } from '../../carrier/s3/server.js';
import { ConfigError } from '../../lib/errors.js';
import type { OpenOptions } from '../../lib/index.js';

export async function runNode(dir: string, patch: NodeConfigPatch, dbOpen: OpenOptions | undefined): Promise<void> {
  const config = await loadConfig(dir, patch);
  // Synchronous writes: every line is out before the process exits, also on a fatal error.
  const log = pino({ level: config.log.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 1, sync: true }));
  // A bug that escapes is fatal (the process exits; a restart recovers from the files), but it is logged first.
  process.on('uncaughtExceptionMonitor', (err, origin) => log.fatal({ event: 'crash', origin, err: err instanceof Error ? err.stack : String(err) }, 'uncaught error; exiting'));
  // The gateway stores in the node's database: a node without one refuses before it starts.
  if (config.s3.enabled && !config.database.enabled) throw new ConfigError('s3.enabled needs the database (database.enabled, --database): the S3 gateway stores its buckets and objects there', 's3.enabled');
  const node = await Node.start({ dir, config: patch, dbOpen, logger: log });
  let admin: AdminServer;
  let s3: S3Gateway | undefined;
  try {
    if (config.s3.enabled) {
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
  log.info({ event: 'admin', url: admin.url, open: config.admin.host }, 'admin API listening');

  const configFile = path.join(dir, CONFIG_FILE);
  fs.watchFile(configFile, { interval: 2000, persistent: false }, (now, before) => {
    if (now.mtimeMs !== before.mtimeMs) log.warn({ event: 'config-changed', file: configFile }, 'the config file changed; restart the node to apply it (nothing was reloaded)');
  });

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ event: 'signal', signal }, 'stopping');
      fs.unwatchFile(configFile);
      void (async () => {
        try {
          await admin.stop();
          await s3?.stop();
          await node.stop();
          process.exitCode = 0;
        } catch (err) {
          log.error({ event: 'stop-failed', err: err instanceof Error ? err.message : String(err) }, 'stop failed');
          process.exitCode = 1;
        }
        resolve();
      })();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
