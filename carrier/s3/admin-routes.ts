/**
 * The admin API's /s3/ routes (docs/s3.md, "Credentials and grants"): what `ouro s3` does
 * through a running node. All need the admin scope (carrier/admin.ts), reads included: they show
 * who may reach which bucket.
 *
 *   GET  /s3/keys                                      -> {keys: [{id, name, created, grants}]}
 *   POST /s3/keys {name}                               -> {accessKeyId, secretAccessKey, name} (the secret, once)
 *   POST /s3/keys/delete {key}                         -> {deleted: {id, name, ...}}
 *   GET  /s3/buckets                                   -> {buckets: [{name, created}]}
 *   POST /s3/buckets {name}                            -> {name, created}
 *   POST /s3/buckets/delete {name}                     -> {deleted: name} (an empty bucket only)
 *   POST /s3/allow {key, bucket, read?, write?, owner?} -> {key: {id, name, created, grants}}
 *   POST /s3/deny  {key, bucket, read?, write?, owner?} -> the same (none named: all three)
 */
import { BadArgumentError, ConflictError, NotFoundError } from '../../lib/errors.js';
import type { Catalog, Grant } from './catalog.js';
import { S3Error } from './errors.js';

export const S3_ADMIN_ROUTES = ['GET /s3/keys', 'POST /s3/keys', 'POST /s3/keys/delete', 'GET /s3/buckets', 'POST /s3/buckets', 'POST /s3/buckets/delete', 'POST /s3/allow', 'POST /s3/deny'] as const;

type Body = Record<string, unknown>;

function text(body: Body, field: string): string {
  const v = body[field];
  if (typeof v !== 'string' || v === '') throw new BadArgumentError(`body must give ${field}`);
  return v;
}

function only(body: Body, allowed: readonly string[], route: string): void {
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw new BadArgumentError(`${route} takes no body field ${JSON.stringify(k)} (it takes ${allowed.join(', ')})`);
}

/** The permissions a grant change names; deny with none named takes all three. */
function permissions(body: Body, allow: boolean): Partial<Grant> {
  const p: Partial<Grant> = {};
  for (const k of ['read', 'write', 'owner'] as const) {
    if (body[k] === undefined) continue;
    if (typeof body[k] !== 'boolean') throw new BadArgumentError(`${k} must be true or false`);
    p[k] = body[k] as boolean;
  }
  if (!p.read && !p.write && !p.owner) {
    if (allow) throw new BadArgumentError('name what to allow: read, write and/or owner');
    return { read: true, write: true, owner: true };
  }
  return p;
}

/** An S3 error of the catalog as the admin API's error of the same meaning. */
function asAdminError(err: unknown): unknown {
  if (!(err instanceof S3Error)) return err;
  if (err.status === 404) return new NotFoundError(err.message, { cause: err });
  if (err.status === 409) return new ConflictError(err.message, [], []);
  return new BadArgumentError(err.message, { cause: err });
}

/** Answers `route` when it is an /s3/ route (undefined otherwise). */
export async function serveS3Admin(catalog: Catalog | undefined, route: string, body: () => Promise<Body>): Promise<unknown> {
  if (!(S3_ADMIN_ROUTES as readonly string[]).includes(route)) return undefined;
  if (!catalog) throw new NotFoundError('this node runs without a database: S3 credentials and buckets live in it');
  try {
    const b = route.startsWith('POST ') ? await body() : {};
    switch (route) {
      case 'GET /s3/keys':
        return { keys: await catalog.listKeys() };
      case 'POST /s3/keys':
        only(b, ['name'], route);
        return await catalog.createKey(text(b, 'name'));
      case 'POST /s3/keys/delete':
        only(b, ['key'], route);
        return { deleted: await catalog.deleteKey(text(b, 'key')) };
      case 'GET /s3/buckets':
        return { buckets: await catalog.listBuckets() };
      case 'POST /s3/buckets':
        only(b, ['name'], route);
        return await catalog.createBucket(text(b, 'name'));
      case 'POST /s3/buckets/delete':
        only(b, ['name'], route);
        await catalog.deleteBucket(text(b, 'name'));
        return { deleted: text(b, 'name') };
      default: {
        only(b, ['key', 'bucket', 'read', 'write', 'owner'], route);
        const allow = route === 'POST /s3/allow';
        return { key: await catalog.setGrant(text(b, 'key'), text(b, 'bucket'), permissions(b, allow), allow) };
      }
    }
  } catch (err) {
    throw asAdminError(err);
  }
}
