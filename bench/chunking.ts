/**
 * Which chunk sizes? (`node dist/bench/chunking.js [versions...]`)
 *
 * Versioned data: consecutive releases of the `typescript` npm package, fetched with `npm pack`,
 * each as its uncompressed tar stream (like successive snapshots of one large file). For each
 * candidate FastCDC size, chunk every release in order and count the bytes of distinct chunks
 * (what a deduplicating store keeps), the number of chunks (index and footer entries, per-entry
 * overhead of ~150 B) and the chunker's speed.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { Chunker } from '../lib/chunker.js';
import { gearTable } from '../lib/crypto.js';

const versions = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['5.6.3', '5.7.2', '5.7.3', '5.8.2', '5.8.3', '5.9.2', '5.9.3'];
const cache = path.join(os.tmpdir(), 'ouro-bench-npm');
fs.mkdirSync(cache, { recursive: true });
const tars = versions.map((v) => {
  const file = path.join(cache, `typescript-${v}.tgz`);
  if (!fs.existsSync(file)) execFileSync('npm', ['pack', `typescript@${v}`, '--silent'], { cwd: cache, stdio: ['ignore', 'ignore', 'inherit'] });
  return zlib.gunzipSync(fs.readFileSync(file));
});
const total = tars.reduce((n, t) => n + t.length, 0);
const gear = gearTable(crypto.randomBytes(32), crypto.randomBytes(16));
const KiB = 1024;
const candidates = [
  { min: 16 * KiB, avg: 64 * KiB, max: 256 * KiB },
  { min: 64 * KiB, avg: 256 * KiB, max: 1024 * KiB },
  { min: 256 * KiB, avg: 1024 * KiB, max: 4096 * KiB },
  { min: 1024 * KiB, avg: 4096 * KiB, max: 16384 * KiB },
];
console.log(`${versions.length} releases of typescript, ${(total / 2 ** 20).toFixed(0)} MiB of tar in all\n`);
console.log('avg chunk   unique MiB  of total   chunks   chunker MiB/s');
for (const sizes of candidates) {
  const chunker = new Chunker(gear, sizes);
  const seen = new Set<string>();
  let unique = 0;
  let chunks = 0;
  const started = process.hrtime.bigint();
  for (const tar of tars) {
    for (const c of chunker.chunkBytes(tar)) {
      chunks++;
      const id = crypto.createHash('sha256').update(c).digest('hex');
      if (!seen.has(id)) {
        seen.add(id);
        unique += c.length;
      }
    }
  }
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`${String(sizes.avg / KiB).padStart(6)} KiB  ${(unique / 2 ** 20).toFixed(1).padStart(10)}  ${((unique / total) * 100).toFixed(1).padStart(7)}%  ${String(chunks).padStart(7)}  ${(total / 2 ** 20 / secs).toFixed(0).padStart(8)}`);
}
