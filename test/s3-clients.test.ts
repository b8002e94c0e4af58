/**
 * The S3 gateway (docs/s3.md) driven by the client tools people already use, against a real
 * `ouro node start`: Debian's rclone, s3cmd and awscli, configured as Garage's smoke test
 * (script/test-smoke.sh, script/dev-env-*.sh in deuxfleurs-org/garage) configures them: path-style,
 * plain HTTP, region us-east-1. Every byte is checked by SHA-256 after the round trip, and every
 * listing against what was sent.
 *
 * `.ci/run` installs the three from Debian. A tool that is missing is skipped with a printed reason
 * (never silently). awscli is run once per distinct binary: Debian's v2 (/usr/bin/aws, 2.9: signed
 * payloads, no checksums) and whatever `aws` is first on PATH when it is another (pip's v1 with
 * botocore >= 1.36 adds an x-amz-checksum-crc32 header; it would send a CRC32 trailer in
 * STREAMING-UNSIGNED-PAYLOAD-TRAILER only over TLS, botocore/httpchecksum.py, so the trailer form
 * is covered by the JavaScript SDK in test/s3-gateway.test.ts, not here).
 */
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type S3Credentials, type S3Node, keyWithBuckets, startS3Node, stopS3Node } from './s3-harness.js';
import { repoRoot } from './paths.js';

/** The absolute path of `name` on PATH, or undefined. */
function which(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
/** The tool's version line, or undefined when it does not run (a pyenv shim with no aws behind it, say). */
function version(bin: string, args = ['--version']): string | undefined {
  try {
    return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 }).trim().split('\n')[0];
  } catch {
    return undefined;
  }
}

const RCLONE = which('rclone');
const S3CMD = which('s3cmd');
const rcloneVersion = RCLONE && version(RCLONE);
const s3cmdVersion = S3CMD && version(S3CMD);
/** Each distinct awscli: Debian's, and the one on PATH when it is another. */
const AWS: Array<{ bin: string; version: string }> = [];
for (const bin of new Set([which('aws'), '/usr/bin/aws'].filter((b): b is string => !!b && fs.existsSync(b)))) {
  const v = version(bin);
  if (v && !AWS.some((a) => a.version === v)) AWS.push({ bin, version: v });
}
if (!rcloneVersion) console.warn('rclone test skipped: no rclone on PATH (install Debian\'s rclone, as .ci/run does)');
if (!s3cmdVersion) console.warn('s3cmd test skipped: no s3cmd on PATH (install Debian\'s s3cmd, as .ci/run does)');
if (!AWS.length) console.warn('awscli test skipped: no aws on PATH nor at /usr/bin/aws (install Debian\'s awscli, as .ci/run does)');

let s: S3Node;
let creds: S3Credentials;
let work: string;
const BUCKET = 'clients';

beforeAll(async () => {
  s = await startS3Node();
  creds = await keyWithBuckets(s.node, 'tools', [BUCKET]);
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-s3-clients-'));
}, 60_000);
afterAll(async () => {
  if (s) await stopS3Node(s);
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

/**
 * Runs a client; resolves with its stdout, or rejects with its stderr in the message (`allowExit`:
 * exit codes that still resolve). The tool sees none of the environment's AWS_* or RCLONE_*
 * variables, only `env`: a CI machine's AWS_CA_BUNDLE, say, makes rclone 1.60 refuse to start even
 * for a plain-HTTP endpoint, and a stray profile or region would change what is signed.
 */
function run(bin: string, args: string[], env: Record<string, string> = {}, allowExit: number[] = []): Promise<{ stdout: string; stderr: string }> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(AWS_|RCLONE_)/.test(k)));
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env: { ...inherited, ...env }, maxBuffer: 64 << 20, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && !(typeof err.code === 'number' && allowExit.includes(err.code))) reject(new Error(`${path.basename(bin)} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
/** Every regular file under `dir`, relative path -> [size, sha256]. */
function tree(dir: string): Map<string, [number, string]> {
  const out = new Map<string, [number, string]>();
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const full = path.join(e.parentPath, e.name);
    out.set(path.relative(dir, full), [fs.statSync(full).size, sha256(full)]);
  }
  return out;
}
const sorted = (m: Map<string, unknown>) => [...m.keys()].sort();
/** A file of `size` random bytes. */
function randomFile(file: string, size: number): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, crypto.randomBytes(size));
  return file;
}

describe.skipIf(!rcloneVersion)(`rclone (${rcloneVersion})`, () => {
  // rclone's config from the environment (RCLONE_CONFIG_<REMOTE>_<OPTION>): the remote `ouro`.
  const env = () => ({
    RCLONE_CONFIG: path.join(work, 'rclone.conf'), // absent: no user config is read
    RCLONE_CONFIG_OURO_TYPE: 's3',
    RCLONE_CONFIG_OURO_PROVIDER: 'Other',
    RCLONE_CONFIG_OURO_ENV_AUTH: 'false',
    RCLONE_CONFIG_OURO_ACCESS_KEY_ID: creds.accessKeyId,
    RCLONE_CONFIG_OURO_SECRET_ACCESS_KEY: creds.secretAccessKey,
    RCLONE_CONFIG_OURO_ENDPOINT: s.url,
    RCLONE_CONFIG_OURO_REGION: 'us-east-1',
    RCLONE_CONFIG_OURO_FORCE_PATH_STYLE: 'true',
    RCLONE_CONFIG_OURO_NO_CHECK_BUCKET: 'true',
    // Multipart above 5 MiB, in 5 MiB parts, so the tree's big file goes up in three parts.
    RCLONE_CONFIG_OURO_UPLOAD_CUTOFF: '5M',
    RCLONE_CONFIG_OURO_CHUNK_SIZE: '5M',
  });
  const rclone = (...args: string[]) => run(RCLONE!, args, env());
  /** `rclone ls` as relative path -> size. */
  async function ls(remote: string): Promise<Map<string, number>> {
    const { stdout } = await rclone('ls', remote);
    return new Map(stdout.split('\n').filter(Boolean).map((l) => {
      const m = /^\s*(\d+) (.*)$/.exec(l)!;
      return [m[2]!, Number(m[1])] as const;
    }));
  }

  it('copies, checks, syncs, lists, reads back and deletes a real directory tree', async () => {
    // The repo's lib/ and docs/, a 3 MiB and a 12 MiB random file (multipart), odd names.
    const src = path.join(work, 'rclone-src');
    fs.cpSync(path.join(repoRoot, 'lib'), path.join(src, 'lib'), { recursive: true });
    fs.cpSync(path.join(repoRoot, 'docs'), path.join(src, 'docs'), { recursive: true });
    randomFile(path.join(src, 'blobs', 'three.bin'), 3 * 1024 * 1024 + 5);
    randomFile(path.join(src, 'blobs', 'twelve.bin'), 12 * 1024 * 1024 + 7);
    fs.mkdirSync(path.join(src, 'odd'));
    fs.writeFileSync(path.join(src, 'odd', 'a b&é+%.txt'), 'odd name');
    const local = tree(src);
    expect(local.size).toBeGreaterThan(50);

    await rclone('copy', src, `ouro:${BUCKET}/tree`);
    // rclone check compares sizes and MD5s (the ETag of a single-part object; rclone's own
    // md5chksum metadata for a multipart one) of every file both ways.
    const check = await rclone('check', src, `ouro:${BUCKET}/tree`);
    expect(check.stderr).toMatch(/\b0 differences found/);
    const listed = await ls(`ouro:${BUCKET}/tree`);
    expect(sorted(listed)).toEqual(sorted(local));
    for (const [name, [size]] of local) expect(listed.get(name)).toBe(size);

    // Change the tree: one file removed, one changed, one added; sync makes the bucket match.
    const removed = [...local.keys()].find((k) => k.startsWith('docs/'))!;
    fs.rmSync(path.join(src, removed));
    fs.appendFileSync(path.join(src, 'blobs', 'three.bin'), 'changed');
    randomFile(path.join(src, 'blobs', 'new', 'added.bin'), 70_000);
    await rclone('sync', src, `ouro:${BUCKET}/tree`);
    expect((await rclone('check', src, `ouro:${BUCKET}/tree`)).stderr).toMatch(/\b0 differences found/);
    const after = await ls(`ouro:${BUCKET}/tree`);
    expect(after.has(removed)).toBe(false);
    expect(after.get('blobs/new/added.bin')).toBe(70_000);

    // Back down into an empty directory: every byte identical.
    const back = path.join(work, 'rclone-back');
    await rclone('copy', `ouro:${BUCKET}/tree`, back);
    expect(tree(back)).toEqual(tree(src));

    await rclone('delete', `ouro:${BUCKET}/tree`);
    expect((await ls(`ouro:${BUCKET}`)).size).toBe(0);
  }, 90_000);
});

describe.skipIf(!s3cmdVersion)(`s3cmd (${s3cmdVersion})`, () => {
  it('puts, lists, gets and removes objects, multipart and odd names included', async () => {
    const cfg = path.join(work, 's3cmd.cfg');
    const host = new URL(s.url).host;
    fs.writeFileSync(cfg, [
      '[default]',
      `access_key = ${creds.accessKeyId}`,
      `secret_key = ${creds.secretAccessKey}`,
      `host_base = ${host}`,
      `host_bucket = ${host}`, // no %(bucket)s: path-style
      'use_https = False',
      'bucket_location = us-east-1',
      'signature_v2 = False',
      'multipart_chunk_size_mb = 5',
      '',
    ].join('\n'));
    const s3cmd = (...args: string[]) => run(S3CMD!, [`--config=${cfg}`, ...args]);
    const files = [
      ['small', randomFile(path.join(work, 's3cmd', 'small.bin'), 2048)],
      ['chunked', randomFile(path.join(work, 's3cmd', 'chunked.bin'), 5 * 1024 * 1024)],
      ['multipart', randomFile(path.join(work, 's3cmd', 'multipart.bin'), 11 * 1024 * 1024 + 1)], // three 5 MiB parts
    ] as const;
    expect((await s3cmd('ls')).stdout).toContain(`s3://${BUCKET}`);
    for (const [name, file] of files) {
      const key = `s3cmd/&+-é"/${name}`;
      await s3cmd('put', file, `s3://${BUCKET}/${key}`);
      const listed = (await s3cmd('ls', '--recursive', `s3://${BUCKET}/s3cmd/`)).stdout;
      expect(listed).toContain(`s3://${BUCKET}/${key}`);
      expect(listed).toMatch(new RegExp(`\\s${fs.statSync(file).size}\\s+s3://${BUCKET}/s3cmd/`));
      const got = `${file}.dl`;
      await s3cmd('get', `s3://${BUCKET}/${key}`, got);
      expect(sha256(got)).toBe(sha256(file));
      await s3cmd('rm', `s3://${BUCKET}/${key}`);
    }
    expect((await s3cmd('ls', '--recursive', `s3://${BUCKET}/s3cmd/`)).stdout.trim()).toBe('');
  }, 90_000);
});

describe.skipIf(!AWS.length)('awscli', () => {
  const env = (): Record<string, string> => ({
    AWS_ACCESS_KEY_ID: creds.accessKeyId,
    AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_CONFIG_FILE: path.join(work, 'aws-config'), // absent: no user profile is read
    AWS_SHARED_CREDENTIALS_FILE: path.join(work, 'aws-credentials'),
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_PAGER: '',
  });

  for (const { bin, version: v } of AWS) {
    const tag = v.split(' ')[0]!.replace('/', '-');
    const aws = (...args: string[]) => run(bin, ['--endpoint-url', s.url, ...args], env());
    /** `aws s3 ls --recursive`: it exits 1 when nothing matches. */
    const lsRecursive = async (prefix: string) => (await run(bin, ['--endpoint-url', s.url, 's3', 'ls', '--recursive', prefix], env(), [1])).stdout;
    it(`${v} (${bin}): s3 cp, ls, rm of small, chunked and multipart files under odd names`, async () => {
      const files = [
        randomFile(path.join(work, tag, 'small.bin'), 2048),
        randomFile(path.join(work, tag, 'chunked.bin'), 5 * 1024 * 1024),
        randomFile(path.join(work, tag, 'multipart.bin'), 10 * 1024 * 1024), // the CLI goes multipart at 8 MiB
      ];
      expect((await aws('s3', 'ls')).stdout).toContain(BUCKET);
      for (const file of files) {
        const key = `${tag}/&+-é"/${path.basename(file)}`;
        await aws('s3', 'cp', file, `s3://${BUCKET}/${key}`);
        const listed = (await lsRecursive(`s3://${BUCKET}/${tag}/`));
        expect(listed).toMatch(new RegExp(`\\s${fs.statSync(file).size} ${key.replace(/[+"]/g, '\\$&')}$`, 'm'));
        const got = `${file}.dl`;
        await aws('s3', 'cp', `s3://${BUCKET}/${key}`, got);
        expect(sha256(got)).toBe(sha256(file));
        await aws('s3', 'rm', `s3://${BUCKET}/${key}`);
      }
      expect((await lsRecursive(`s3://${BUCKET}/${tag}/`)).trim()).toBe('');
    }, 90_000);

    it(`${v} (${bin}): s3api multipart, parts sent out of order and one sent again`, async () => {
      const key = `${tag}/upload`;
      const parts = [1, 2, 3, 4].map((i) => randomFile(path.join(work, tag, `part${i}.bin`), i === 4 ? 1234 : 5 * 1024 * 1024));
      const api = async <T>(...args: string[]) => JSON.parse((await aws('s3api', ...args, '--output', 'json')).stdout || '{}') as T;
      const { UploadId } = await api<{ UploadId: string }>('create-multipart-upload', '--bucket', BUCKET, '--key', key);
      const upload = async (n: number, file: string) => (await api<{ ETag: string }>('upload-part', '--bucket', BUCKET, '--key', key, '--upload-id', UploadId, '--part-number', String(n), '--body', file)).ETag;
      // As Garage's smoke test: part 3 first with the wrong bytes, then 2, then 3 again, then 6.
      await upload(3, parts[0]!);
      const e2 = await upload(2, parts[1]!);
      const e3 = await upload(3, parts[2]!);
      const e6 = await upload(6, parts[3]!);
      const mpu = path.join(work, tag, 'mpu.json');
      fs.writeFileSync(mpu, JSON.stringify({ Parts: [{ PartNumber: 2, ETag: e2 }, { PartNumber: 3, ETag: e3 }, { PartNumber: 6, ETag: e6 }] }));
      const done = await api<{ ETag: string }>('complete-multipart-upload', '--bucket', BUCKET, '--key', key, '--upload-id', UploadId, '--multipart-upload', `file://${mpu}`);
      const md5s = Buffer.concat([parts[1]!, parts[2]!, parts[3]!].map((f) => crypto.createHash('md5').update(fs.readFileSync(f)).digest()));
      expect(done.ETag).toBe(`"${crypto.createHash('md5').update(md5s).digest('hex')}-3"`);
      const got = path.join(work, tag, 'mpu.get');
      await api('get-object', '--bucket', BUCKET, '--key', key, got);
      const want = crypto.createHash('sha256').update(Buffer.concat([parts[1]!, parts[2]!, parts[3]!].map((f) => fs.readFileSync(f)))).digest('hex');
      expect(sha256(got)).toBe(want);
      await api('delete-object', '--bucket', BUCKET, '--key', key);
      expect((await lsRecursive(`s3://${BUCKET}/${tag}/`)).trim()).toBe('');
    }, 90_000);
  }
});
