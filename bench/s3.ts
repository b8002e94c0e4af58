/**
 * The `s3` part of bench/run.ts (issue 31): the S3 gateway of a real `ouro node start` process,
 * driven by the AWS SDK, against the same work done by the library in-process.
 *
 *   - one large object (1 GiB; 64 MiB with --quick; --size-mib N): PUT through @aws-sdk/lib-storage's
 *     Upload (multipart, 8 MiB parts, 4 at a time, as a backup tool sends it) and GET streamed back,
 *     vs db.put from a stream and db.stream back in this process. The same ChaCha20 keystream feeds
 *     both, so generation costs them equally; the ratio is the gateway's overhead (HTTP, SigV4,
 *     MD5 for the ETag, the process boundary). Target: at least 0.8x both ways.
 *   - 1 KiB objects, 64 concurrent clients (each its own S3Client and connection): PUTs, then GETs
 *     of the same keys; ops/s and p50/p99 latency, beside db.put({key}) / getByKey in-process at
 *     the same concurrency.
 *   - the node process's peak RSS over the whole part (VmHWM from /proc).
 *
 * Peers: neither MinIO nor Garage can be installed on this machine (no Debian package in bookworm,
 * `apt-cache policy minio garage` has no candidate; npm's `minio` is a client library, not the
 * server), so no peer S3 server runs on the same workload; `skipped` says so in the report.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { OuroDB } from '../lib/index.js';
import { quantile } from './carrier.js';
import { keystream } from './peers.js';

const MiB = 1 << 20;
const OURO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ouro.js');
const secsSince = (t: number) => (performance.now() - t) / 1000;

export interface S3BenchResult {
  objectMiB: number;
  sdkPutMiBs: number;
  sdkGetMiBs: number;
  libPutMiBs: number;
  libGetMiBs: number;
  small: number;
  putOps: number;
  putP50ms: number;
  putP99ms: number;
  getOps: number;
  getP50ms: number;
  getP99ms: number;
  libPutOps: number;
  libGetOps: number;
  nodePeakRssMiB: number;
  /** Why no peer S3 server ran. */
  skipped: string;
}

function ouro(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [OURO, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => (err ? reject(new Error(`ouro ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

/** A founder with the database and the gateway on a free port; resolves once node.run.json names it. */
async function startNode(dir: string, keyFile: string): Promise<{ child: ChildProcess; url: string }> {
  await ouro(['--json', '--key-file', keyFile, 'node', 'init', dir, '--new-cluster', '--database', '--s3', '--s3-port', '0']);
  const child = spawn(process.execPath, [OURO, '--key-file', keyFile, 'node', 'start', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const runFile = path.join(dir, 'node.run.json');
  for (const started = performance.now(); !fs.existsSync(runFile); ) {
    if (child.exitCode !== null) throw new Error(`ouro node start exited ${child.exitCode}: ${stderr}`);
    if (secsSince(started) > 60) throw new Error('ouro node start did not write node.run.json within 60 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, url: (JSON.parse(fs.readFileSync(runFile, 'utf8')) as { s3: string }).s3 };
}

/** The peak resident set of process `pid` so far (Linux VmHWM), in MiB. */
function peakRssMiB(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Runs `op(i)` for i < count from `width` workers; ops/s and each op's latency in ms, sorted. */
async function timed(count: number, width: number, op: (i: number, worker: number) => Promise<unknown>): Promise<{ ops: number; latencies: number[] }> {
  let next = 0;
  const latencies: number[] = [];
  const started = performance.now();
  await Promise.all(Array.from({ length: width }, async (_, w) => {
    while (next < count) {
      const i = next++;
      const t = performance.now();
      await op(i, w);
      latencies.push(performance.now() - t);
    }
  }));
  return { ops: count / secsSince(started), latencies: latencies.sort((a, b) => a - b) };
}

async function drain(body: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const piece of body) n += piece.length;
  return n;
}

export async function s3Bench(work: string, options: { objectMiB: number; small: number }): Promise<S3BenchResult> {
  const total = options.objectMiB * MiB;
  const seed = crypto.randomBytes(32);
  const keyFile = path.join(work, 's3-db.key');
  fs.writeFileSync(keyFile, crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
  const dir = path.join(work, 's3-node');
  const { child, url } = await startNode(dir, keyFile);
  try {
    const creds = JSON.parse(await ouro(['--json', 's3', '--dir', dir, 'key', 'create', 'bench'])) as { accessKeyId: string; secretAccessKey: string };
    await ouro(['--json', 's3', '--dir', dir, 'bucket', 'create', 'bench']);
    await ouro(['--json', 's3', '--dir', dir, 'allow', 'bench', 'bench', '--read', '--write']);
    const client = () => new S3Client({ endpoint: url, region: 'us-east-1', forcePathStyle: true, credentials: creds, maxAttempts: 1 });

    // One large object through the SDK.
    const c = client();
    let t = performance.now();
    await new Upload({ client: c, params: { Bucket: 'bench', Key: 'large', Body: Readable.from(keystream(total, seed)) }, partSize: 8 * MiB, queueSize: 4 }).done();
    const sdkPutMiBs = total / MiB / secsSince(t);
    t = performance.now();
    const got = await c.send(new GetObjectCommand({ Bucket: 'bench', Key: 'large' }));
    const n = await drain(got.Body as AsyncIterable<Uint8Array>);
    const sdkGetMiBs = n / MiB / secsSince(t);
    if (n !== total) throw new Error(`GET read ${n} bytes of ${total}`);
    c.destroy();

    // The same bytes through the library in this process.
    const db = await OuroDB.open(path.join(work, 's3-lib'), { key: crypto.randomBytes(32) });
    t = performance.now();
    const put = await db.put(keystream(total, seed), { key: 'large' });
    const libPutMiBs = total / MiB / secsSince(t);
    t = performance.now();
    const m = await drain(db.stream(put.hash));
    const libGetMiBs = m / MiB / secsSince(t);
    if (m !== total) throw new Error(`db.stream read ${m} bytes of ${total}`);

    // 1 KiB objects, 64 concurrent clients.
    const pool = Array.from({ length: 1024 }, () => crypto.randomBytes(1024));
    const value = (i: number) => {
      const v = Buffer.from(pool[i % 1024]!);
      v.writeUInt32LE(i, 0); // every value distinct: no dedup shortcut
      return v;
    };
    const name = (i: number) => `small/${i.toString().padStart(8, '0')}`;
    const clients = Array.from({ length: 64 }, client);
    const puts = await timed(options.small, 64, (i, w) => clients[w]!.send(new PutObjectCommand({ Bucket: 'bench', Key: name(i), Body: value(i) })));
    const gets = await timed(options.small, 64, async (i, w) => {
      const r = await clients[w]!.send(new GetObjectCommand({ Bucket: 'bench', Key: name(i) }));
      if ((await r.Body!.transformToByteArray()).length !== 1024) throw new Error(`GET ${name(i)}: not 1 KiB`);
    });
    for (const x of clients) x.destroy();
    const libPuts = await timed(options.small, 64, (i) => db.put(value(i), { key: name(i) }));
    const libGets = await timed(options.small, 64, (i) => db.getByKey(name(i)));
    await db.close();

    return {
      objectMiB: options.objectMiB,
      sdkPutMiBs,
      sdkGetMiBs,
      libPutMiBs,
      libGetMiBs,
      small: options.small,
      putOps: puts.ops,
      putP50ms: quantile(puts.latencies, 0.5),
      putP99ms: quantile(puts.latencies, 0.99),
      getOps: gets.ops,
      getP50ms: quantile(gets.latencies, 0.5),
      getP99ms: quantile(gets.latencies, 0.99),
      libPutOps: libPuts.ops,
      libGetOps: libGets.ops,
      nodePeakRssMiB: peakRssMiB(child.pid!),
      skipped: 'peer S3 servers: neither MinIO nor Garage is installable here (no Debian bookworm package, npm has only the MinIO client), so none ran on this workload',
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
  }
}
