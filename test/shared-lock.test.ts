/** carrier/shared-lock.ts: the lock that keeps block-have checks and surplus removals apart. */
import { describe, expect, it } from 'vitest';
import { SharedLock } from '../carrier/shared-lock.js';

function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}
const tick = () => new Promise((r) => setImmediate(r));

describe('SharedLock', () => {
  it('lets shared holders overlap, keeps an exclusive holder alone, and serves a waiting exclusive before later shared requests', async () => {
    const lock = new SharedLock();
    const log: string[] = [];
    const g1 = gate();
    const g2 = gate();
    const s1 = lock.shared(async () => { log.push('s1 in'); await g1.opened; log.push('s1 out'); });
    const s2 = lock.shared(async () => { log.push('s2 in'); await g2.opened; log.push('s2 out'); });
    await tick();
    expect(log).toEqual(['s1 in', 's2 in']);
    const x = lock.exclusive(async () => { log.push('x in'); await tick(); log.push('x out'); });
    const s3 = lock.shared(async () => { log.push('s3'); });
    await tick();
    expect(log).toEqual(['s1 in', 's2 in']);
    g1.open();
    await tick();
    expect(log).not.toContain('x in');
    g2.open();
    await Promise.all([s1, s2, x, s3]);
    expect(log).toEqual(['s1 in', 's2 in', 's1 out', 's2 out', 'x in', 'x out', 's3']);
  });

  it('is released when the work throws', async () => {
    const lock = new SharedLock();
    await expect(lock.exclusive(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    await expect(lock.shared(async () => { throw new Error('bang'); })).rejects.toThrow('bang');
    expect(await lock.exclusive(async () => 7)).toBe(7);
  });
});
