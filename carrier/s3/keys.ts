/**
 * The database keys the S3 gateway owns, all in one place (docs/s3.md, "Data model"). Every one
 * starts with RESERVED, "\x01s3/": a control character no application key is expected to start
 * with, and that sorts before every printable key. The second part names the kind, so no kind's
 * keys can be another's whatever the names in them (a bucket name has no "/"):
 *
 *   \x01s3/b/<bucket>                          a bucket: JSON {v, created}
 *   \x01s3/k/<access key id>                   an access key: JSON {v, name, secret, created, grants}
 *   \x01s3/o/<bucket>/<object name>            an object: its value, S3 metadata in the meta
 *   \x01s3/u/<bucket>/<upload id>              a multipart upload: JSON {v, name, meta, created}
 *   \x01s3/p/<upload id>/<part number, 5 digits>  one uploaded part: its value, {etag, size} in meta
 *   \x01s3/t/<writer>/<random>                 a single PUT's staging version (below)
 *
 * These are part of the on-disk data of a database that serves S3: never change them.
 *
 * A key is at most MAX_KEY_BYTES (1024) bytes of UTF-8, so an object name may have up to
 * 1024 - 7 - (bytes of the bucket name) bytes: a known difference from S3 (docs/s3.md).
 */
import { MAX_KEY_BYTES } from '../../lib/keyname.js';
import { S3Error } from './errors.js';

export const RESERVED = '\x01s3/';
const BUCKET = `${RESERVED}b/`;
const KEY = `${RESERVED}k/`;
const OBJECT = `${RESERVED}o/`;
const UPLOAD = `${RESERVED}u/`;
const PART = `${RESERVED}p/`;
const STAGING = `${RESERVED}t/`;

export const bucketKey = (bucket: string) => BUCKET + bucket;
export const bucketPrefix = BUCKET;
export const accessKeyKey = (id: string) => KEY + id;
export const accessKeyPrefix = KEY;
export const objectPrefix = (bucket: string) => `${OBJECT}${bucket}/`;
export const objectKey = (bucket: string, name: string) => objectPrefix(bucket) + name;
export const uploadPrefix = (bucket: string) => `${UPLOAD}${bucket}/`;
export const uploadKey = (bucket: string, uploadId: string) => uploadPrefix(bucket) + uploadId;
export const partPrefix = (uploadId: string) => `${PART}${uploadId}/`;
export const partKey = (uploadId: string, part: number) => partPrefix(uploadId) + String(part).padStart(5, '0');
export const stagingPrefix = (writer: string) => `${STAGING}${writer}/`;

/** S3's bucket naming rules (the DNS-compatible ones every client accepts). */
export function checkBucketName(name: string): void {
  const ok = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) && !name.includes('..') && !/^\d+\.\d+\.\d+\.\d+$/.test(name);
  if (!ok) throw new S3Error('InvalidBucketName', 400, 'a bucket name has 3 to 63 characters: lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit', { resource: name });
}

/** An object name: non-empty well-formed UTF-8 without NUL, short enough for its key. */
export function checkObjectName(bucket: string, name: string): void {
  const max = MAX_KEY_BYTES - Buffer.byteLength(objectPrefix(bucket));
  if (name.length === 0) throw new S3Error('InvalidArgument', 400, 'an object name must not be empty');
  if (!name.isWellFormed() || name.includes('\0')) throw new S3Error('InvalidArgument', 400, 'an object name must be UTF-8 without NUL', { resource: name.slice(0, 64) });
  if (Buffer.byteLength(name) > max) throw new S3Error('KeyTooLongError', 400, `an object name in bucket ${bucket} may have at most ${max} bytes of UTF-8`, { resource: name.slice(0, 64) });
}
