/**
 * The rate limits on non-members (carrier/rate-limit.ts), with time handed in: a peer's own
 * bucket, the one all strangers share (a flood from many fresh peer ids meets it), refill, members
 * never limited, and a limited peer logged at most once per 10 s however long it goes on.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ALL_STRANGERS, PER_PEER, StrangerLimiter } from '../carrier/rate-limit.js';

function limiter(members: string[] = []) {
  const lines: Array<Record<string, unknown>> = [];
  const counted: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const l = new StrangerLimiter({ log, metrics: { rateLimited: (r) => void counted.push(r) }, member: (p) => members.includes(p) }, 0);
  return { l, lines, counted };
}

describe('rate limits on non-members', () => {
  it('a peer gets its burst, then its rate; members are never limited', () => {
    const { l, counted } = limiter(['member']);
    const taken = (peer: string, n: number, at: number) => Array.from({ length: n }, () => l.check(peer, '/ouro/join/1', at)).filter((x) => x === undefined).length;
    expect(taken('stranger', PER_PEER.burst + 10, 0)).toBe(PER_PEER.burst);
    expect(counted).toEqual(Array(10).fill('peer'));
    expect(l.check('stranger', '/ouro/join/1', 0)).toMatch(/at most 10 requests a second/);
    expect(taken('stranger', 10, 500)).toBe(PER_PEER.perSec / 2); // half a second refills half a second's worth
    expect(taken('member', 10_000, 500)).toBe(10_000);
  });

  it('strangers together share one bucket, so fresh peer ids do not multiply the rate; a limited peer is logged once per 10 s', () => {
    const { l, lines, counted } = limiter();
    let admitted = 0;
    for (let i = 0; i < 100; i++) for (let j = 0; j < PER_PEER.burst; j++) if (l.check(`peer-${i}`, '/ouro/join/1', 0) === undefined) admitted++;
    expect(admitted).toBe(ALL_STRANGERS.burst);
    expect(counted.filter((r) => r === 'strangers').length).toBe(100 * PER_PEER.burst - ALL_STRANGERS.burst);
    // One log line per limited peer so far, whatever the count, with the reason.
    const logged = lines.filter((x) => x.event === 'rate-limited');
    expect(logged.length).toBe(100 - ALL_STRANGERS.burst / PER_PEER.burst);
    expect(logged[0]).toMatchObject({ reason: 'strangers', protocol: '/ouro/join/1' });
    for (let t = 0; t < 9000; t += 100) l.check('peer-99', '/ouro/heartbeat/1', t);
    expect(lines.filter((x) => x.event === 'rate-limited' && x.peer === 'peer-99').length).toBe(1);
    l.check('peer-99', '/ouro/heartbeat/1', 10_000); // refilled by now: admitted
    for (let i = 0; i < 40; i++) l.check('peer-99', '/ouro/heartbeat/1', 10_000);
    expect(lines.filter((x) => x.event === 'rate-limited' && x.peer === 'peer-99').length).toBe(2);
  });
});
