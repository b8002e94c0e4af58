/**
 * `npm run torture -- --minutes N`: kills a concurrent writer with SIGKILL at random moments for
 * N minutes (default 2), verifying after every kill that every acknowledged put reads back
 * byte-identical, and prints how many kills the database survived. Exits non-zero on the first
 * lost or wrong write.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type Ack, runWriter, verifyAfterCrash } from './crash-harness.js';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '2' }, dir: { type: 'string' }, keep: { type: 'boolean', default: false } } });
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error('--minutes must be a positive number');
const dir = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-torture-'));
const key = crypto.randomBytes(32);
const deadline = Date.now() + minutes * 60_000;
const acks: Ack[] = [];
let kills = 0;
let round = 0;
while (Date.now() < deadline) {
  const run = await runWriter({ dir, key, seed: `torture-${round++}`, count: 1_000_000, concurrency: 1 + crypto.randomInt(0, 16), killAfterMs: 50 + crypto.randomInt(0, 1500) });
  if (run.signal === 'SIGKILL') kills++;
  acks.push(...run.acks);
  const r = await verifyAfterCrash(dir, key, acks);
  process.stdout.write(`round ${round}: killed=${run.signal === 'SIGKILL'} acks this round=${run.acks.length} verified=${r.verified}\n`);
}
console.log(`survived ${kills} kills; ${acks.length} acknowledged puts all read back byte-identical (${dir})`);
if (!values.keep) fs.rmSync(dir, { recursive: true, force: true });
