/**
 * Buckets, access keys and grants, kept in the database itself (keys.ts has the layout): each is
 * a small JSON value under a reserved key, so it is encrypted under the database key like every
 * value, and reaches every keyed member with the blocks that hold it. A member learns of a new key,
 * bucket or grant once the block holding it has reached it; every change here therefore seals at
 * once and waits until `replicas` members hold it (s3.replicas, default 1: sealed, so it is pushed
 * and announced now rather than `replication.maxUnsealedMs` later).
 *
 * The secret of an access key is in its value: SigV4 needs it in the clear to verify a signature,
 * so it cannot be kept as a hash. It is sealed by the database's own encryption, and appears
 * nowhere else (the index keeps key names, i.e. access key ids, never values).
 *
 * Changes are compare-and-set on the record's head (ifHead), retried on conflict, so two changes
 * to one key on one member never lose each other; two members changing one record at the same
 * moment leave it with two heads, and the newest head is read (docs/s3.md says so).
 */
import crypto from 'node:crypto';
import type { OuroDB } from '../../lib/db.js';
import { BadArgumentError, ConflictError, NotFoundError, OuroError } from '../../lib/errors.js';
import { S3Error } from './errors.js';
import { accessKeyKey, accessKeyPrefix, bucketKey, bucketPrefix, checkBucketName, objectPrefix, uploadPrefix } from './keys.js';

export interface Grant {
  read: boolean;
  write: boolean;
  owner: boolean;
}

export interface AccessKey {
  v: 1;
  id: string;
  name: string;
  secret: string;
  created: number;
  grants: Record<string, Grant>;
}

/** An access key as listed: never its secret. */
export type KeyView = Omit<AccessKey, 'secret' | 'v'>;

export interface BucketView {
  name: string;
  created: number;
}

const NO_GRANT: Grant = { read: false, write: false, owner: false };
const ACCESS_KEY_ID = /^OURO[0-9A-F]{20}$/;
const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class Catalog {
  readonly #db: OuroDB;
  readonly #replicas: number;

  constructor(db: OuroDB, options: { replicas?: number | undefined } = {}) {
    this.#db = db;
    this.#replicas = options.replicas ?? 1;
  }

  // ------------------------------------------------------------------ access keys

  /** A new access key: its id and secret are returned once, here. */
  async createKey(name: string): Promise<{ accessKeyId: string; secretAccessKey: string; name: string }> {
    if (!KEY_NAME.test(name)) throw new BadArgumentError('a key name has 1 to 64 letters, digits, dots, dashes and underscores, starting with a letter or digit');
    if (await this.#keyByName(name)) throw new ConflictError(`an access key named ${name} exists`, [], []);
    // 20 characters like AWS's ids (upper case and digits); 40 of base64url-free secret like AWS's.
    const id = `OURO${crypto.randomBytes(10).toString('hex').toUpperCase()}`;
    const secret = crypto.randomBytes(30).toString('base64').replaceAll('+', 'A').replaceAll('/', 'B');
    const record: AccessKey = { v: 1, id, name, secret, created: Date.now(), grants: {} };
    await this.#db.put(JSON.stringify(record), { key: accessKeyKey(id), ifHead: null });
    await this.#settle();
    return { accessKeyId: id, secretAccessKey: secret, name };
  }

  async listKeys(): Promise<KeyView[]> {
    const out: KeyView[] = [];
    for await (const e of this.#db.list({ prefix: accessKeyPrefix })) {
      const k = await this.#readKey(e.key);
      if (k) out.push(view(k));
    }
    return out;
  }

  /** The key with this access key id, with its secret (the gateway's lookup), or undefined. */
  async keyById(id: string): Promise<AccessKey | undefined> {
    return ACCESS_KEY_ID.test(id) ? this.#readKey(accessKeyKey(id)) : undefined;
  }

  /** The key named by id or name (an operator's command), or undefined. */
  async key(idOrName: string): Promise<AccessKey | undefined> {
    return (await this.keyById(idOrName)) ?? this.#keyByName(idOrName);
  }

  async deleteKey(idOrName: string): Promise<KeyView> {
    const k = await this.#needKey(idOrName);
    await this.#db.delete(accessKeyKey(k.id));
    await this.#settle();
    return view(k);
  }

  /** Adds the given permissions of `key` on `bucket` (allow) or takes them away (deny). */
  async setGrant(idOrName: string, bucket: string, change: Partial<Grant>, allow: boolean): Promise<KeyView> {
    if (allow && !(await this.bucket(bucket))) throw new NotFoundError(`no bucket ${bucket}`);
    for (;;) {
      const k = await this.#needKey(idOrName);
      const head = await this.#db.head(accessKeyKey(k.id));
      const now = { ...(k.grants[bucket] ?? NO_GRANT) };
      for (const p of ['read', 'write', 'owner'] as const) if (change[p]) now[p] = allow;
      const grants = { ...k.grants };
      if (now.read || now.write || now.owner) grants[bucket] = now;
      else delete grants[bucket];
      try {
        await this.#db.put(JSON.stringify({ ...k, grants }), { key: accessKeyKey(k.id), ifHead: head });
      } catch (err) {
        if (err instanceof ConflictError) continue;
        throw err;
      }
      await this.#settle();
      return view({ ...k, grants });
    }
  }

  // ------------------------------------------------------------------ buckets

  async createBucket(name: string, owner?: string): Promise<BucketView> {
    checkBucketName(name);
    if (await this.bucket(name)) throw bucketExists(name);
    const created = Date.now();
    try {
      // Made only over no version or a deleted one (its tombstone is the head): a bucket made
      // meanwhile by another request here is a conflict, not an overwrite.
      await this.#db.put(JSON.stringify({ v: 1, created }), { key: bucketKey(name), ifHead: await this.#db.head(bucketKey(name)) });
    } catch (err) {
      if (err instanceof ConflictError) throw bucketExists(name);
      throw err;
    }
    if (owner !== undefined) await this.setGrant(owner, name, { read: true, write: true, owner: true }, true);
    else await this.#settle();
    return { name, created };
  }

  async bucket(name: string): Promise<BucketView | undefined> {
    try {
      const r = JSON.parse(Buffer.from(await this.#db.getByKey(bucketKey(name))).toString('utf8')) as { created: number };
      return { name, created: r.created };
    } catch (err) {
      if (err instanceof NotFoundError || (err instanceof OuroError && err.code === 'OURO_BAD_ARGUMENT')) return undefined;
      throw err;
    }
  }

  async listBuckets(): Promise<BucketView[]> {
    const out: BucketView[] = [];
    for await (const e of this.#db.list({ prefix: bucketPrefix })) {
      const b = await this.bucket(e.key.slice(bucketPrefix.length));
      if (b) out.push(b);
    }
    return out;
  }

  /** Deletes an empty bucket (no object, no upload under way) and every grant on it. */
  async deleteBucket(name: string): Promise<void> {
    if (!(await this.bucket(name))) throw new S3Error('NoSuchBucket', 404, `no bucket ${name}`, { resource: name });
    for (const prefix of [objectPrefix(name), uploadPrefix(name)]) {
      for await (const _ of this.#db.list({ prefix, limit: 1 })) throw new S3Error('BucketNotEmpty', 409, `bucket ${name} holds objects or multipart uploads`, { resource: name });
    }
    await this.#db.delete(bucketKey(name));
    for (const k of await this.listKeys()) if (k.grants[name]) await this.setGrant(k.id, name, { read: true, write: true, owner: true }, false);
    await this.#settle();
  }

  // ------------------------------------------------------------------ internals

  async #readKey(dbKey: string): Promise<AccessKey | undefined> {
    try {
      return JSON.parse(Buffer.from(await this.#db.getByKey(dbKey)).toString('utf8')) as AccessKey;
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  async #keyByName(name: string): Promise<AccessKey | undefined> {
    for await (const e of this.#db.list({ prefix: accessKeyPrefix })) {
      const k = await this.#readKey(e.key);
      if (k?.name === name) return k;
    }
    return undefined;
  }

  async #needKey(idOrName: string): Promise<AccessKey> {
    const k = await this.key(idOrName);
    if (!k) throw new NotFoundError(`no access key ${idOrName}`);
    return k;
  }

  /** Seals the change and waits for `replicas` holders, so that the other members learn it now. */
  async #settle(): Promise<void> {
    await this.#db.flush(this.#replicas > 1 ? { replicas: this.#replicas } : {});
  }
}

function view(k: AccessKey): KeyView {
  return { id: k.id, name: k.name, created: k.created, grants: k.grants };
}

function bucketExists(name: string): S3Error {
  return new S3Error('BucketAlreadyExists', 409, `bucket ${name} exists`, { resource: name });
}

export function grantOf(key: AccessKey, bucket: string): Grant {
  return key.grants[bucket] ?? NO_GRANT;
}
