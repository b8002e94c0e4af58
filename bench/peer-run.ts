/**
 * One ingest run (OuroDB or a peer, bench/peers.ts) in a process of its own, so that its peak RSS
 * is its own: `node dist/bench/peer-run.js NAME WORK_DIR BYTES` prints the PeerRun as one JSON
 * line. Run by the ingest part of bench/run.ts.
 */
import crypto from 'node:crypto';
import { PEERS, keystream, ouroIngest } from './peers.js';

const [name, work, bytes] = process.argv.slice(2);
const runners = { OuroDB: ouroIngest, ...PEERS };
const run = name ? runners[name as keyof typeof runners] : undefined;
if (!run || !work || !bytes) throw new Error(`usage: peer-run.js (${Object.keys(runners).join(' | ')}) WORK_DIR BYTES`);
const total = Number(bytes);
const result = await run(work, total, () => keystream(total, crypto.randomBytes(32)));
process.stdout.write(JSON.stringify(result) + '\n');
