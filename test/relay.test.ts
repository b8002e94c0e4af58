/**
 * Circuit relay among members at the carrier level (carrier/relay.ts), in one process on
 * loopback: a relay R, a peer N that reserves a slot on it (as a member behind NAT would) and a
 * peer P that reaches N only at N's circuit address. test/nat.test.ts runs the same through a
 * real NAT in network namespaces.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { dialable } from '../carrier/addresses.js';
import { Carrier } from '../carrier/carrier.js';
import type { CarrierRelay } from '../carrier/relay.js';
import { tempDir } from './helpers.js';

const ECHO = '/ouro/echo/1';

function relayOptions(over: Partial<CarrierRelay>): CarrierRelay {
  return { serve: false, via: [], maxReservations: 8, durationLimitMs: 0, dataLimitBytes: 0, allow: () => true, ...over };
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('circuit relay among members', () => {
  it("dials a relay's circuit address with the peer's id after it", () => {
    const circuit = '/ip4/203.0.113.7/udp/4100/quic-v1/p2p/RELAY/p2p-circuit';
    expect(dialable('PEER', [circuit, '/ip4/10.0.0.1/udp/4100/quic-v1', '/ip4/10.0.0.1/udp/4100/quic-v1/p2p/PEER', `${circuit}/p2p/PEER`])).toEqual([
      `${circuit}/p2p/PEER`,
      '/ip4/10.0.0.1/udp/4100/quic-v1/p2p/PEER',
      '/ip4/10.0.0.1/udp/4100/quic-v1/p2p/PEER',
      `${circuit}/p2p/PEER`,
    ]);
  });

  const started: Carrier[] = [];
  const start = async (relay: CarrierRelay, dir = tempDir()) => {
    const c = await Carrier.start({ dir, relay });
    started.push(c);
    return c;
  };
  afterEach(async () => {
    await Promise.all(started.splice(0).map((c) => c.stop().catch(() => {})));
  });

  it('relays requests, 3 MiB each way, to a peer that holds a slot, unlimited', async () => {
    const r = await start(relayOptions({ serve: true }));
    const n = await start(relayOptions({ via: [r.addresses[0]!] }));
    await n.handle(ECHO, (m) => ({ echo: m }));
    await until(() => n.relays.length === 1);
    // It announces the relay's circuit address, and only that.
    expect(n.addresses).toEqual([`${r.addresses[0]}/p2p-circuit/p2p/${n.peerId}`]);
    const p = await start(relayOptions({}));
    expect(await p.request(n.addresses, ECHO, 'hi')).toEqual({ echo: 'hi' });
    const conn = p.node.getConnections().find((c) => c.remotePeer.toString() === n.peerId)!;
    expect(conn.remoteAddr.toString()).toContain('/p2p-circuit');
    expect(conn.limits).toBeUndefined();
    // Far more than js-libp2p's default limit of 128 KiB per relayed connection, in one request.
    const big = new Uint8Array(3 * 1024 * 1024).fill(7);
    const p2 = await start(relayOptions({}));
    const back = (await p2.request(n.addresses, ECHO, big, { timeoutMs: 30_000 })) as { echo: Uint8Array };
    expect(back.echo.length).toBe(big.length);
  }, 60_000);

  it('still relays to a peer after many requests for it were refused while it held no slot', async () => {
    const r = await start(relayOptions({ serve: true }));
    const nDir = tempDir();
    const first = await start(relayOptions({}), nDir);
    const nId = first.peerId;
    await first.stop();
    const target = `${r.addresses[0]}/p2p-circuit/p2p/${nId}`;
    const p = await start(relayOptions({}));
    // More refusals (no reservation) than the 32 hop streams a connection may hold open at once:
    // the relay left each refused stream open, and every later request was reset unread.
    let refused = 0;
    for (let i = 0; i < 40; i++) await p.request(target, ECHO, 'x', { timeoutMs: 3000, reuse: false }).catch(() => refused++);
    expect(refused).toBe(40);
    const n = await start(relayOptions({ via: [r.addresses[0]!] }), nDir);
    await n.handle(ECHO, (m) => ({ echo: m }));
    await until(() => n.relays.length === 1);
    expect(await p.request(target, ECHO, 'back', { timeoutMs: 5000 })).toEqual({ echo: 'back' });
  }, 60_000);

  it('takes a slot again after the relay restarts', async () => {
    const rDir = tempDir();
    let r = await start(relayOptions({ serve: true }), rDir);
    const at = r.addresses[0]!;
    const events: Array<{ ok: boolean }> = [];
    const n = await start(relayOptions({ via: [at], onReservation: (e) => events.push(e) }));
    await n.handle(ECHO, (m) => ({ echo: m }));
    await until(() => n.relays.length === 1);
    await r.stop();
    // libp2p drops a reservation whose connection closed, and asks a configured relay no more.
    await until(() => n.relays.length === 0);
    r = await Carrier.start({ dir: rDir, listen: [at.replace(/\/p2p\/.*$/, '')], relay: relayOptions({ serve: true }) });
    started.push(r);
    await until(() => n.relays.length === 1, 20_000);
    const p = await start(relayOptions({}));
    expect(await p.request(n.addresses, ECHO, 'again', { timeoutMs: 5000 })).toEqual({ echo: 'again' });
  }, 60_000);

  it('gives no slot to a peer the relay does not allow, and relays nothing to or from it', async () => {
    const outsiders = new Set<string>();
    const r = await start(relayOptions({ serve: true, allow: (peer) => !outsiders.has(peer) }));
    const strangerDir = tempDir();
    const probe = await start(relayOptions({}), strangerDir);
    outsiders.add(probe.peerId);
    await probe.stop();
    const events: Array<{ ok: boolean }> = [];
    const stranger = await start(relayOptions({ via: [r.addresses[0]!], onReservation: (e) => events.push(e) }), strangerDir);
    await until(() => events.length > 0);
    expect(events[0]!.ok).toBe(false);
    expect(stranger.relays).toEqual([]);
    // A member that holds a slot is not reachable through the relay by the stranger either.
    const n = await start(relayOptions({ via: [r.addresses[0]!] }));
    await n.handle(ECHO, (m) => ({ echo: m }));
    await until(() => n.relays.length === 1);
    await expect(stranger.request(n.addresses, ECHO, 'x', { timeoutMs: 3000 })).rejects.toThrow(/PERMISSION_DENIED|status/);
  }, 60_000);
});
