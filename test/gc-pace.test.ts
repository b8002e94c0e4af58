/**
 * gc gives way to puts (lib/gc-pace.ts): it copies in slices and, while puts are being written,
 * rests after each slice so that copying takes at most `pace` of the time; with no puts it
 * does not rest. No wall-clock assertion: the pacer's clock and sleep are injected, and the
 * database test checks only whether gc rested, and that everything survives.
 */
import { describe, expect, it } from 'vitest';
import { GcPacer } from '../lib/gc-pace.js';
import { OuroDB } from '../lib/index.js';
import { FAST_KDF, pseudoRandom, tempDir } from './helpers.js';

describe('GcPacer', () => {
  /** A pacer on a fake clock: each slice "takes" `took` ms; `writes` is bumped by the slice when `busy`. */
  function fake(share: number, took: number, closing = () => false) {
    let clock = 0;
    let writes = 0;
    const rests: number[] = [];
    const pacer = new GcPacer(share, () => writes, closing, async (ms) => void rests.push(ms), () => clock);
    const slice = (busy: boolean) =>
      pacer.slice(async () => {
        clock += took;
        if (busy) writes++;
        return 1;
      });
    return { pacer, rests, slice };
  }

  it('rests (1 - pace) / pace times as long as a slice took when puts were written meanwhile', async () => {
    const { pacer, rests, slice } = fake(0.25, 20);
    expect(await slice(true)).toBe(1);
    await slice(true);
    expect(rests).toEqual([60, 60]);
    expect(pacer.restedMs).toBe(120);
  });

  it('does not rest when no put was written, nor at pace 1', async () => {
    const idle = fake(0.5, 20);
    await idle.slice(false);
    expect(idle.rests).toEqual([]);
    const full = fake(1, 20);
    await full.slice(true);
    expect(full.rests).toEqual([]);
  });

  it('caps one rest and skips them once closing, so that close() never waits long for a resting gc', async () => {
    let closing = false;
    const { rests, slice } = fake(0.1, 1000, () => closing);
    await slice(true);
    expect(rests).toEqual([250]);
    closing = true;
    await slice(true);
    expect(rests).toEqual([250]);
  });
});

describe('gc under writers', () => {
  const key = Buffer.alloc(32, 7);
  const open = (dir: string) => OuroDB.open(dir, { key, blockSize: 8 << 20, kdf: FAST_KDF });

  it('rests between slices while puts are written, not when none are, and keeps every value', async () => {
    const db = await open(tempDir());
    try {
      const value = (i: number) => pseudoRandom(`g${i}`, 300_000);
      // Two rounds, each leaving ~2.4 MB live in its blocks: more than one slice each.
      for (const round of [0, 1]) for (let i = 0; i < 32; i++) await db.put(value(round * 100 + i), { key: `r${round}/${i}` });
      await db.flush();
      for (const round of [0, 1]) for (let i = 0; i < 32; i++) if (i % 4 !== 0) await db.purge(`r${round}/${i}`);

      // Round 0's blocks with a writer putting throughout.
      let stop = false;
      let n = 0;
      const writer = (async () => {
        while (!stop) await db.put(pseudoRandom(`w${n}`, 1024), { key: `w/${n++}` });
      })();
      const busy = await db.gc({ threshold: 1 });
      stop = true;
      await writer;
      expect(busy.bytesCopied).toBeGreaterThan(1 << 20);
      expect(busy.restedMs).toBeGreaterThan(0);

      // Nothing written meanwhile: gc does not rest.
      await db.flush();
      for (let i = 0; i < n; i++) await db.purge(`w/${i}`);
      const idle = await db.gc({ threshold: 1 });
      expect(idle.restedMs).toBe(0);

      for (const round of [0, 1]) for (let i = 0; i < 32; i += 4) expect(Buffer.from(await db.getByKey(`r${round}/${i}`)).equals(value(round * 100 + i))).toBe(true);
      expect((await db.check({ readData: true })).problems).toEqual([]);
      await expect(db.gc({ pace: 0 })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    } finally {
      await db.close();
    }
  });
});
