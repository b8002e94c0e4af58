/**
 * `ouro s3 --dir DIR ...`: the S3 gateway's access keys, buckets and grants (docs/s3.md). They
 * live in the node's database, so they are cluster-wide: made through one member, they reach
 * every member with the database. While the node runs, the commands go through its admin API
 * (/s3/ routes); on a stopped node they open its database (credentials as every `ouro` command
 * takes them) and change it directly.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { KeyView } from '../../carrier/s3/catalog.js';
import { NotFoundError } from '../../lib/errors.js';
import { admin, dbTarget } from './node-admin.js';
import { type GlobalOptions, UsageError, output, withDb } from './support.js';

type Perms = { read?: boolean; write?: boolean; owner?: boolean };

export function registerS3Commands(program: Command, g: () => GlobalOptions): void {
  const s3 = program
    .command('s3')
    .description("the S3 gateway's access keys, buckets and grants, cluster-wide (docs/s3.md)")
    .option('--dir <dir>', "the node's directory (default $OURO_NODE_DIR)");
  const dirOf = () => s3.opts<{ dir?: string }>().dir ?? process.env.OURO_NODE_DIR ?? (() => { throw new UsageError('name the node with --dir DIR (or OURO_NODE_DIR)'); })();

  /**
   * Runs `route` on the running node, or `direct` on the stopped node's database. Both answer
   * the same shape.
   */
  async function call(method: 'GET' | 'POST', route: string, body?: Record<string, unknown>): Promise<unknown> {
    const dir = dirOf();
    const { CONFIG_FILE } = await import('../../carrier/config.js');
    if (!fs.existsSync(path.join(dir, CONFIG_FILE))) throw new NotFoundError(`${dir} is not a node directory (no ${CONFIG_FILE})`);
    const target = await dbTarget(dir);
    if (target.kind === 'node') return admin(target.nodeDir, method, route, body);
    const { Catalog } = await import('../../carrier/s3/catalog.js');
    const { serveS3Admin } = await import('../../carrier/s3/admin-routes.js');
    // The same code as the admin route, on the database opened here.
    return withDb(target.dir, g(), (db) => serveS3Admin(new Catalog(db), `${method} ${route}`, async () => body ?? {}));
  }

  const key = s3.command('key').description('access keys');
  key
    .command('create')
    .description('make an access key; prints its id and secret, once')
    .argument('<name>', 'a name for it (letters, digits, . _ -)')
    .action(async (name: string) => {
      const r = (await call('POST', '/s3/keys', { name })) as { accessKeyId: string; secretAccessKey: string };
      output(g(), r, () => `access key id:     ${r.accessKeyId}\nsecret access key: ${r.secretAccessKey}\n(the secret is not shown again)`);
    });
  key
    .command('list')
    .description('access keys and their grants (never the secrets)')
    .action(async () => {
      const r = (await call('GET', '/s3/keys')) as { keys: KeyView[] };
      output(g(), r, () => (r.keys.length ? r.keys.map((k) => `${k.id}  ${k.name}  ${grantsText(k)}`).join('\n') : '(no access keys)'));
    });
  key
    .command('delete')
    .description('delete an access key (by id or name): requests signed with it are refused from then on')
    .argument('<key>', 'access key id or name')
    .action(async (k: string) => {
      const r = (await call('POST', '/s3/keys/delete', { key: k })) as { deleted: KeyView };
      output(g(), r, () => `deleted access key ${r.deleted.id} (${r.deleted.name})`);
    });

  const bucket = s3.command('bucket').description('buckets');
  bucket
    .command('create')
    .description('make a bucket (grant keys access with `ouro s3 allow`)')
    .argument('<name>', 'bucket name (3 to 63 of a-z 0-9 . -)')
    .action(async (name: string) => {
      const r = await call('POST', '/s3/buckets', { name });
      output(g(), r, () => `created bucket ${name}`);
    });
  bucket
    .command('list')
    .description('every bucket')
    .action(async () => {
      const r = (await call('GET', '/s3/buckets')) as { buckets: Array<{ name: string; created: number }> };
      output(g(), r, () => (r.buckets.length ? r.buckets.map((b) => `${b.name}  ${new Date(b.created).toISOString()}`).join('\n') : '(no buckets)'));
    });
  bucket
    .command('delete')
    .description('delete an empty bucket, and every grant on it')
    .argument('<name>', 'bucket name')
    .action(async (name: string) => {
      const r = await call('POST', '/s3/buckets/delete', { name });
      output(g(), r, () => `deleted bucket ${name}`);
    });

  for (const [verb, help] of [
    ['allow', 'grant an access key permissions on a bucket'],
    ['deny', 'take permissions away (all three when none is named)'],
  ] as const) {
    s3.command(verb)
      .description(help)
      .argument('<key>', 'access key id or name')
      .argument('<bucket>', 'bucket name')
      .option('--read', 'list and read objects')
      .option('--write', 'put, copy and delete objects, multipart uploads')
      .option('--owner', 'delete the bucket')
      .action(async (k: string, b: string, o: Perms) => {
        const body = { key: k, bucket: b, ...(o.read ? { read: true } : {}), ...(o.write ? { write: true } : {}), ...(o.owner ? { owner: true } : {}) };
        if (verb === 'allow' && !o.read && !o.write && !o.owner) throw new UsageError('name what to allow: --read, --write and/or --owner');
        const r = (await call('POST', `/s3/${verb}`, body)) as { key: KeyView };
        output(g(), r, () => `${r.key.id} (${r.key.name}): ${grantsText(r.key) || 'no grants'}`);
      });
  }
}

function grantsText(k: KeyView): string {
  return Object.entries(k.grants)
    .map(([b, p]) => `${b}:${[p.read ? 'read' : '', p.write ? 'write' : '', p.owner ? 'owner' : ''].filter(Boolean).join('+')}`)
    .join(' ');
}
