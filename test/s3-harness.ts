/**
 * A real `ouro node start` with the S3 gateway, for the S3 tests (test/s3-gateway.test.ts) and
 * the client-tool tests and benchmarks that build on them: a founder node with the database and
 * `--s3 --s3-port 0`, an access key made with `ouro s3 key create`, a bucket it owns, and
 * `@aws-sdk/client-s3` clients pointed at it (path-style, us-east-1).
 */
import fs from 'node:fs';
import { S3Client } from '@aws-sdk/client-s3';
import { type NodeProc, founderWithDb, joinWithDb, keyFile, ouroJson } from './cluster-procs.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface S3Node {
  node: NodeProc;
  /** The gateway's address (node.run.json `s3`). */
  url: string;
  /** The database key file the node was started with. */
  key: string;
}

/** The gateway address of a running node. */
export function s3Url(node: NodeProc): string {
  const url = node.run.s3;
  if (!url) throw new Error(`the node in ${node.dir} runs no S3 gateway (no s3 in node.run.json)`);
  return url;
}

/** A new cluster whose founder runs the database and the S3 gateway on a free port. */
export async function startS3Node(extra: string[] = []): Promise<S3Node> {
  const key = keyFile();
  const node = await founderWithDb(key, ['--s3', '--s3-port', '0', ...extra]);
  return { node, url: s3Url(node), key };
}

/** A second member with the database and the gateway, admitted through `via`. */
export async function joinS3Node(via: S3Node, extra: string[] = []): Promise<S3Node> {
  const node = await joinWithDb(via.node, via.key, ['--s3', '--s3-port', '0', ...extra]);
  return { node, url: s3Url(node), key: via.key };
}

/** `ouro --json s3 --dir DIR ARGS`, parsed. */
export function s3Cli<T = Record<string, unknown>>(node: NodeProc, args: string[]): Promise<T> {
  return ouroJson<T>(['s3', '--dir', node.dir, ...args]);
}

/** An access key named `name` with read, write and owner on each of `buckets` (made if missing). */
export async function keyWithBuckets(node: NodeProc, name: string, buckets: string[]): Promise<S3Credentials> {
  const creds = await s3Cli<S3Credentials>(node, ['key', 'create', name]);
  const existing = new Set((await s3Cli<{ buckets: Array<{ name: string }> }>(node, ['bucket', 'list'])).buckets.map((b) => b.name));
  for (const b of buckets) {
    if (!existing.has(b)) await s3Cli(node, ['bucket', 'create', b]);
    await s3Cli(node, ['allow', name, b, '--read', '--write', '--owner']);
  }
  return creds;
}

/** An SDK client for the gateway at `url`. */
export function s3Client(url: string, credentials: S3Credentials): S3Client {
  return new S3Client({ endpoint: url, region: 'us-east-1', forcePathStyle: true, credentials, maxAttempts: 1 });
}

/** Stops the node and removes its directory. */
export async function stopS3Node(s: S3Node): Promise<void> {
  await s.node.stop();
  fs.rmSync(s.node.dir, { recursive: true, force: true });
}
