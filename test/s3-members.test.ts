/**
 * Reads anywhere (issue 31, item 5): a key, bucket and object made through one member's gateway
 * are usable through another keyed member's gateway. With s3.replicas 2 a write answers once both
 * hold it, so the other member reads it at once (its index adopts the block as it arrives).
 */
import crypto from 'node:crypto';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from './cluster-procs.js';
import { type S3Node, joinS3Node, keyWithBuckets, s3Client, startS3Node, stopS3Node } from './s3-harness.js';

const nodes: S3Node[] = [];
afterAll(async () => {
  for (const n of nodes.reverse()) await stopS3Node(n);
});

describe('S3 gateway on two members', () => {
  it('writes through one gateway and reads and lists through the other', async () => {
    const a = await startS3Node(['--s3-replicas', '2', '--replication-factor', '2']);
    nodes.push(a);
    const b = await joinS3Node(a, ['--s3-replicas', '2', '--replication-factor', '2']);
    nodes.push(b);
    await waitFor(async () => (await a.node.members()).members.every((m) => m.state === 'alive') && (await a.node.members()).members.length === 2, 20_000, 'two live members');
    const creds = await keyWithBuckets(a.node, 'both', ['shared']);
    const ca = s3Client(a.url, creds);
    const cb = s3Client(b.url, creds);
    try {
      const body = crypto.randomBytes(1024 * 1024 + 3);
      await ca.send(new PutObjectCommand({ Bucket: 'shared', Key: 'from-a/x.bin', Body: body }));
      // The key and bucket were made on a; b knows them, and holds the object, once the blocks reached it.
      await waitFor(async () => {
        const got = await cb.send(new GetObjectCommand({ Bucket: 'shared', Key: 'from-a/x.bin' }));
        return Buffer.from(await got.Body!.transformToByteArray()).equals(body);
      }, 20_000, 'the object through the other gateway');
      const listed = await cb.send(new ListObjectsV2Command({ Bucket: 'shared', Prefix: 'from-a/' }));
      expect(listed.Contents!.map((o) => o.Key)).toEqual(['from-a/x.bin']);
    } finally {
      ca.destroy();
      cb.destroy();
    }
  }, 120_000);
});
