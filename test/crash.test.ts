import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type Ack, runWriter, verifyAfterCrash } from './crash-harness.js';
import { tempDir } from './helpers.js';

/**
 * Every named step of the write and seal protocols (lib/db.ts, blockstore/store.ts). The writer
 * kills itself with SIGKILL the 3rd time it reaches the step, so earlier puts and seals exist.
 */
const FAILPOINTS = [
  'commit.after-write',
  'commit.after-datasync',
  'commit.after-wal',
  'seal.before-footer',
  'seal.after-footer',
  'seal.after-fsync',
  'seal.after-rename',
  'seal.after-dir-fsync',
  'seal.after-register',
];

/**
 * Rounds of one database's writer, each killed with SIGKILL: half at a random moment (which on a
 * loaded machine may come before the first ack: the start-up and recovery are worth killing
 * too), half once a random number of puts were acknowledged, so the run has acks to check however
 * slow the machine is. After each round every put acknowledged so far must read back.
 */
async function killRounds(o: { rounds: number; seed: string; concurrency: number; afterMs: [number, number]; atLine: number; stream?: boolean }): Promise<Ack[]> {
  const dir = tempDir();
  const key = crypto.randomBytes(32);
  const acks: Ack[] = [];
  let kills = 0;
  for (let round = 0; round < o.rounds; round++) {
    const when = round % 2 === 0 ? { killAfterMs: o.afterMs[0] + crypto.randomInt(0, o.afterMs[1]) } : { killAtLine: crypto.randomInt(1, o.atLine) };
    const run = await runWriter({ dir, key, seed: `${o.seed}-${round}`, count: 100_000, concurrency: o.concurrency, stream: o.stream, ...when });
    if (run.signal === 'SIGKILL') kills++;
    acks.push(...run.acks);
    const result = await verifyAfterCrash(dir, key, acks);
    expect(result.verified).toBe(acks.length);
  }
  expect(kills).toBe(o.rounds);
  return acks;
}

describe('crash at every step of commit and seal (failpoints, real SIGKILL)', () => {
  it.each(FAILPOINTS)('%s: acknowledged puts survive, the database reopens and accepts writes', async (name) => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const run = await runWriter({ dir, key, seed: `fp-${name}`, count: 400, concurrency: 4, failpoint: `${name}:3` });
    // The failpoint must actually have fired, or this test proved nothing.
    expect(run.signal).toBe('SIGKILL');
    expect(run.finished).toBe(false);
    const result = await verifyAfterCrash(dir, key, run.acks);
    expect(result.verified).toBe(run.acks.length);
    // A second reopen must find the same state (recovery is idempotent and completes).
    const again = await verifyAfterCrash(dir, key, run.acks);
    expect(again.verified).toBe(run.acks.length);
  });
});

describe('crash while a streamed put\'s chunks gather (wal/commit.ts, GATHER_BYTES)', () => {
  it.each(['commit.gathering:10', 'commit.gathering:40', 'commit.after-datasync:20'])('%s: acknowledged streamed puts survive', async (failpoint) => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    const run = await runWriter({ dir, key, seed: `gather-${failpoint}`, count: 400, concurrency: 4, failpoint, stream: true });
    // The failpoint fired: the writer died while its queue held chunks alone, waiting for more.
    expect(run.signal).toBe('SIGKILL');
    expect(run.finished).toBe(false);
    expect(run.acks.length).toBeGreaterThan(0); // and puts had resolved before it: there is something to lose
    const result = await verifyAfterCrash(dir, key, run.acks);
    expect(result.verified).toBe(run.acks.length);
  });

  it('survives SIGKILLs at random moments of streaming writers', async () => {
    const acks = await killRounds({ rounds: 6, seed: 'gather-kill', concurrency: 4, afterMs: [300, 700], atLine: 60, stream: true });
    expect(acks.length).toBeGreaterThan(20);
  });
});

describe('kill -9 at random moments', () => {
  it('survives repeated SIGKILLs of a concurrent writer, before, during and after seals', async () => {
    const acks = await killRounds({ rounds: 12, seed: 'kill', concurrency: 8, afterMs: [150, 600], atLine: 400 });
    // The writers got far enough to make the test meaningful.
    expect(acks.length).toBeGreaterThan(100);
  });
});

