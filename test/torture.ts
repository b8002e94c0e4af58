/**
 * `npm run torture -- --minutes N`: for N minutes (default 2), kills writer processes with SIGKILL
 * at random moments, alternating two workloads on one database: concurrent unkeyed puts with
 * flushes (seals), and keyed puts followed by purges and gc rounds (compaction) while more puts
 * run. After every kill it reopens the database and verifies every acknowledged put of every
 * round so far reads back byte-identical, every acknowledged purge held, and check({ readData })
 * is clean. Prints how many kills the database survived; exits non-zero on the first violation.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type Ack, runKeyedWriter, runWriter, verifyAfterCrash, verifyKeyedRun } from './crash-harness.js';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '2' }, dir: { type: 'string' }, keep: { type: 'boolean', default: false } } });
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error('--minutes must be a positive number');
const dir = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-torture-'));
const key = crypto.randomBytes(32);
const deadline = Date.now() + minutes * 60_000;
const acks: Ack[] = [];
let kills = 0;
let round = 0;
let keyedAcks = 0;
while (Date.now() < deadline) {
  const killAfterMs = 50 + crypto.randomInt(0, 1500);
  if (round % 2 === 0) {
    const run = await runWriter({ dir, key, seed: `torture-${round}`, count: 1_000_000, concurrency: 1 + crypto.randomInt(0, 16), killAfterMs });
    if (run.signal === 'SIGKILL') kills++;
    acks.push(...run.acks);
    process.stdout.write(`round ${round}: puts, killed=${run.signal === 'SIGKILL'} after ${killAfterMs} ms, acks=${run.acks.length}\n`);
  } else {
    const run = await runKeyedWriter('gc-writer.js', dir, key, 20 + crypto.randomInt(0, 60), { killAfterMs });
    if (run.signal === 'SIGKILL') kills++;
    keyedAcks += run.acks.size;
    await verifyKeyedRun(dir, key, run);
    process.stdout.write(`round ${round}: keys+purge+gc, killed=${run.signal === 'SIGKILL'} after ${killAfterMs} ms, acks=${run.acks.size}, purged=${run.purged.size}\n`);
  }
  const r = await verifyAfterCrash(dir, key, acks);
  process.stdout.write(`  verified ${r.verified} acknowledged unkeyed puts\n`);
  round++;
}
console.log(`survived ${kills} kills in ${round} rounds; ${acks.length} acknowledged unkeyed puts and ${keyedAcks} acknowledged keyed puts all read back byte-identical, every acknowledged purge held, check clean after every kill (${dir})`);
if (!values.keep) fs.rmSync(dir, { recursive: true, force: true });
