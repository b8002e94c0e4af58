/**
 * The bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation.
 * Buckets live in the catalog (catalog.ts). Any access key may create a bucket through S3 and
 * is then granted read, write and owner on it; deleting one needs the owner grant and an empty
 * bucket.
 */
import { grantOf } from './catalog.js';
import { type Ctx, isoDate, needBucket, sendEmpty, sendXml } from './context.js';
import { S3Error } from './errors.js';
import { checkBucketName } from './keys.js';
import { S3_NS, escapeXml, readXml } from './xml.js';

export async function listBuckets(ctx: Ctx): Promise<void> {
  const buckets = (await ctx.catalog.listBuckets()).filter((b) => {
    const g = grantOf(ctx.key, b.name);
    return g.read || g.write || g.owner;
  });
  sendXml(ctx, 200, 'ListAllMyBucketsResult', {
    Owner: { ID: ctx.key.id, DisplayName: ctx.key.name },
    Buckets: { Bucket: buckets.map((b) => ({ Name: b.name, CreationDate: isoDate(b.created) })) },
  });
}

export async function createBucket(ctx: Ctx): Promise<void> {
  const name = ctx.bucket!;
  checkBucketName(name);
  // A CreateBucketConfiguration may name a location: any is taken (one region per gateway),
  // but the body is read, so that a signed payload is verified.
  await readXml(ctx.body);
  if (await ctx.catalog.bucket(name)) {
    const g = grantOf(ctx.key, name);
    if (g.owner) throw new S3Error('BucketAlreadyOwnedByYou', 409, `bucket ${name} is already yours`, { resource: `/${name}` });
    throw new S3Error('BucketAlreadyExists', 409, `bucket ${name} exists`, { resource: `/${name}` });
  }
  await ctx.catalog.createBucket(name, ctx.key.id);
  sendEmpty(ctx, 200, { location: `/${name}` });
}

export async function deleteBucket(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'owner');
  await ctx.catalog.deleteBucket(ctx.bucket!);
  sendEmpty(ctx, 204);
}

export async function headBucket(ctx: Ctx): Promise<void> {
  const g = grantOf(ctx.key, ctx.bucket!);
  await needBucket(ctx, g.read ? 'read' : g.write ? 'write' : 'owner');
  sendEmpty(ctx, 200, { 'x-amz-bucket-region': ctx.region });
}

export async function getBucketLocation(ctx: Ctx): Promise<void> {
  const g = grantOf(ctx.key, ctx.bucket!);
  await needBucket(ctx, g.read ? 'read' : g.write ? 'write' : 'owner');
  // S3 answers an empty constraint for us-east-1, its original region.
  const text = `<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="${S3_NS}">${ctx.region === 'us-east-1' ? '' : escapeXml(ctx.region)}</LocationConstraint>`;
  ctx.res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text) });
  ctx.res.end(text);
}
