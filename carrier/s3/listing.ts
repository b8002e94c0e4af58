/**
 * ListObjects and ListObjectsV2, in key order straight from the key index (db.list over the
 * bucket's object prefix): prefix, delimiter, max-keys, marker / start-after / continuation-token,
 * encoding-type=url. A common prefix is one entry; the listing then jumps past every key under it
 * (a new db.list after the prefix followed by U+10FFFF, the highest character), so a prefix
 * holding a million keys costs one step, not a million.
 *
 * A continuation token is the last name listed (key or common prefix), base64url: the next page
 * lists what sorts after it, skipping a common prefix it already gave.
 */
import { type Ctx, isoDate, needBucket, quoted, sendXml } from './context.js';
import { S3Error } from './errors.js';
import { objectPrefix } from './keys.js';
import type { XmlTree } from './xml.js';

const MAX_KEYS = 1000;
const HIGHEST = '\u{10FFFF}';

interface Page {
  contents: Array<{ name: string; hash: string }>;
  prefixes: string[];
  truncated: boolean;
  /** The last name listed (the next page's marker), when any. */
  last: string | undefined;
}

const utf8Compare = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** One page of the bucket's names after `marker`. */
async function page(ctx: Ctx, prefix: string, delimiter: string, marker: string | undefined, maxKeys: number): Promise<Page> {
  const base = objectPrefix(ctx.bucket!);
  const out: Page = { contents: [], prefixes: [], truncated: false, last: undefined };
  let after = marker !== undefined && utf8Compare(marker, prefix) > 0 ? base + marker : undefined;
  const full = () => out.contents.length + out.prefixes.length >= maxKeys;
  restart: for (;;) {
    for await (const e of ctx.db.list({ prefix: base + prefix, ...(after !== undefined ? { after } : {}) })) {
      const name = e.key.slice(base.length);
      const cut = delimiter === '' ? -1 : name.indexOf(delimiter, prefix.length);
      const entry = cut < 0 ? name : name.slice(0, cut + delimiter.length);
      const skip = cut >= 0 && ((marker !== undefined && utf8Compare(entry, marker) <= 0) || entry === out.prefixes.at(-1));
      if (!skip) {
        if (full()) {
          out.truncated = true;
          break restart;
        }
        if (cut < 0) out.contents.push({ name, hash: e.hash });
        else out.prefixes.push(entry);
        out.last = entry;
      }
      if (cut >= 0) {
        // Past every key under this common prefix at once. A key too long to take the suffix
        // is passed one at a time instead.
        const next = base + entry + HIGHEST;
        if (Buffer.byteLength(next) <= 1024) {
          after = next;
          continue restart;
        }
      }
    }
    break;
  }
  return out;
}

function maxKeysOf(ctx: Ctx): number {
  const given = ctx.query.get('max-keys');
  if (given === undefined) return MAX_KEYS;
  if (!/^\d+$/.test(given)) throw new S3Error('InvalidArgument', 400, 'max-keys must be a whole number');
  return Math.min(Number(given), MAX_KEYS);
}

function encoder(ctx: Ctx): (s: string) => string {
  const type = ctx.query.get('encoding-type');
  if (type === undefined) return (s) => s;
  if (type !== 'url') throw new S3Error('InvalidArgument', 400, 'encoding-type takes only url');
  // As S3 does: every byte escaped but the unreserved characters and "/".
  return (s) => encodeURIComponent(s).replaceAll('%2F', '/').replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

async function contents(ctx: Ctx, p: Page, enc: (s: string) => string): Promise<XmlTree[]> {
  const out: XmlTree[] = [];
  for (const c of p.contents) {
    const stat = await ctx.db.stat(c.hash);
    out.push({ Key: enc(c.name), LastModified: isoDate(stat.created.getTime()), ETag: quoted(stat.meta.etag ?? ''), Size: stat.size, StorageClass: 'STANDARD' });
  }
  return out;
}

export async function listObjectsV2(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'read');
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') ?? '';
  const token = ctx.query.get('continuation-token');
  const startAfter = ctx.query.get('start-after');
  let marker = startAfter;
  if (token !== undefined) {
    marker = Buffer.from(token, 'base64url').toString('utf8');
    if (token === '' || Buffer.from(marker, 'utf8').toString('base64url') !== token) throw new S3Error('InvalidArgument', 400, 'the continuation token is not one this gateway gave');
  }
  const maxKeys = maxKeysOf(ctx);
  const enc = encoder(ctx);
  const p = await page(ctx, prefix, delimiter, marker, maxKeys);
  sendXml(ctx, 200, 'ListBucketResult', {
    Name: ctx.bucket!,
    Prefix: enc(prefix),
    Delimiter: delimiter === '' ? undefined : enc(delimiter),
    MaxKeys: maxKeys,
    KeyCount: p.contents.length + p.prefixes.length,
    IsTruncated: p.truncated,
    ContinuationToken: token,
    NextContinuationToken: p.truncated && p.last !== undefined ? Buffer.from(p.last, 'utf8').toString('base64url') : undefined,
    StartAfter: startAfter === undefined ? undefined : enc(startAfter),
    EncodingType: ctx.query.get('encoding-type'),
    Contents: await contents(ctx, p, enc),
    CommonPrefixes: p.prefixes.map((cp) => ({ Prefix: enc(cp) })),
  });
}

export async function listObjects(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'read');
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') ?? '';
  const marker = ctx.query.get('marker');
  const maxKeys = maxKeysOf(ctx);
  const enc = encoder(ctx);
  const p = await page(ctx, prefix, delimiter, marker, maxKeys);
  sendXml(ctx, 200, 'ListBucketResult', {
    Name: ctx.bucket!,
    Prefix: enc(prefix),
    Marker: enc(marker ?? ''),
    NextMarker: p.truncated && p.last !== undefined ? enc(p.last) : undefined,
    MaxKeys: maxKeys,
    Delimiter: delimiter === '' ? undefined : enc(delimiter),
    IsTruncated: p.truncated,
    EncodingType: ctx.query.get('encoding-type'),
    Contents: await contents(ctx, p, enc),
    CommonPrefixes: p.prefixes.map((cp) => ({ Prefix: enc(cp) })),
  });
}
