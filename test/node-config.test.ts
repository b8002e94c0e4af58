/**
 * The node's config (typed errors naming the field; flags over the file), the failure
 * detector's timeouts on a fake clock, and a node embedded in an application's process beside
 * its database (library use, identity sealed under the database's key).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_FILE, DEFAULT_CONFIG, loadConfig, resolveConfig } from '../carrier/config.js';
import { FLAP_WINDOW, FailureDetector, MAX_TIMEOUT_SCALE } from '../carrier/detector.js';
import { IDENTITY_FILE } from '../carrier/identity.js';
import { withLastPorts } from '../carrier/addresses.js';
import { Node } from '../carrier/node.js';
import { ConfigError, OuroDB, WrongKeyError } from '../lib/index.js';
import { tempDir } from './helpers.js';

const KEY = new Uint8Array(32).fill(9);

describe('node config', () => {
  it('defaults are valid and flags override the file field by field', async () => {
    expect(resolveConfig(DEFAULT_CONFIG)).toEqual(DEFAULT_CONFIG);
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, CONFIG_FILE), JSON.stringify({ ...DEFAULT_CONFIG, heartbeat: { intervalMs: 500, suspectAfterMs: 2000, deadAfterMs: 6000 } }));
    const c = await loadConfig(dir, { heartbeat: { intervalMs: 250 }, admin: { port: 7000 } });
    expect(c.heartbeat).toEqual({ intervalMs: 250, suspectAfterMs: 2000, deadAfterMs: 6000 });
    expect(c.admin).toEqual({ host: '127.0.0.1', port: 7000, token: null });
    // Off loopback a config needs no token of its own: the node's stable one (admin-tokens.json) guards it.
    expect(resolveConfig(DEFAULT_CONFIG, { admin: { host: '0.0.0.0' } }).admin).toEqual({ host: '0.0.0.0', port: 0, token: null });
  });

  it.each([
    [{ heartbeat: { intervalMs: 'fast' } }, 'heartbeat.intervalMs'],
    [{ heartbeat: { intervalMs: 5000 } }, 'heartbeat.suspectAfterMs'],
    [{ heartbeat: { deadAfterMs: 3000 } }, 'heartbeat.deadAfterMs'],
    [{ admin: { host: '0.0.0.0', token: 'short' } }, 'admin.token'],
    [{ admin: { port: 70000 } }, 'admin.port'],
    [{ listen: ['/ip4/127.0.0.1/tcp/4000'] }, 'listen.0'],
    [{ announce: ['/ip4/203.0.113.7/udp/0/quic-v1'] }, 'announce.0'],
    [{ announce: '/ip4/203.0.113.7/udp/4100/quic-v1' }, 'announce'],
    [{ announce: ['/ip4/203.0.113.7/udp/4100/quic-v1/p2p-circuit'] }, 'announce.0'],
    [{ relay: { via: ['/ip4/203.0.113.7/udp/4100/quic-v1'] } }, 'relay.via.0'],
    [{ relay: { serve: 'yes' } }, 'relay.serve'],
    [{ relay: { durationLimitMs: -1 } }, 'relay.durationLimitMs'],
    [{ relay: { maxReservations: 0 } }, 'relay.maxReservations'],
    [{ log: { level: 'loud' } }, 'log.level'],
    [{ colour: 'blue' }, '(root)'],
    [{ version: 2 }, 'version'],
    [{ name: '' }, 'name'],
    [{ name: 'a\nb' }, 'name'],
    [{ name: 'x'.repeat(65) }, 'name'],
  ])('rejects %j naming %s', (patch, field) => {
    let err: unknown;
    try {
      resolveConfig(DEFAULT_CONFIG, patch as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ code: 'OURO_BAD_CONFIG', field });
    expect((err as Error).message).toContain(field === '(root)' ? 'colour' : field);
  });

  it('a config file from before `announce` announces the listen addresses', async () => {
    const dir = tempDir();
    const { announce: _, ...older } = DEFAULT_CONFIG;
    fs.writeFileSync(path.join(dir, CONFIG_FILE), JSON.stringify(older));
    expect((await loadConfig(dir)).announce).toEqual([]);
    expect((await loadConfig(dir, { announce: ['/ip4/203.0.113.7/udp/4100/quic-v1'] })).announce).toEqual(['/ip4/203.0.113.7/udp/4100/quic-v1']);
  });

  it('a config file from before `relay` serves no relay and reserves none; a relay circuit address may be announced', async () => {
    const dir = tempDir();
    const { relay: _, ...older } = DEFAULT_CONFIG;
    fs.writeFileSync(path.join(dir, CONFIG_FILE), JSON.stringify(older));
    expect((await loadConfig(dir)).relay).toEqual({ serve: false, via: [], maxReservations: 64, durationLimitMs: 0, dataLimitBytes: 0 });
    const via = '/ip4/203.0.113.7/udp/4100/quic-v1/p2p/12D3KooWBjennPNR2R5JdsGP8GjNv4zgoPzKyUVx52Zu9DiinQsN';
    const c = await loadConfig(dir, { relay: { via: [via] }, announce: [`${via}/p2p-circuit`] });
    expect(c.relay.via).toEqual([via]);
    expect(c.relay.serve).toBe(false);
    expect(c.announce).toEqual([`${via}/p2p-circuit`]);
  });

  it('a config file that is not JSON is a ConfigError', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, CONFIG_FILE), '{ "version": 1,');
    await expect(loadConfig(dir)).rejects.toMatchObject({ code: 'OURO_BAD_CONFIG', field: '(file)' });
  });
});

describe('listen ports across restarts', () => {
  it('port 0 takes the port last announced for the same IP (any of its version for a wildcard); fixed ports stay', () => {
    const last = ['/ip4/127.0.0.1/udp/41000/quic-v1/p2p/12D3KooWx', '/ip4/10.0.0.5/udp/42000/quic-v1/p2p/12D3KooWx', '/ip6/::1/udp/43000/quic-v1/p2p/12D3KooWx'];
    expect(withLastPorts(['/ip4/127.0.0.1/udp/0/quic-v1'], last)).toEqual(['/ip4/127.0.0.1/udp/41000/quic-v1']);
    expect(withLastPorts(['/ip4/10.0.0.5/udp/0/quic-v1', '/ip6/::/udp/0/quic-v1'], last)).toEqual(['/ip4/10.0.0.5/udp/42000/quic-v1', '/ip6/::/udp/43000/quic-v1']);
    expect(withLastPorts(['/ip4/0.0.0.0/udp/0/quic-v1'], last)).toEqual(['/ip4/0.0.0.0/udp/41000/quic-v1']);
    // Nothing to take: the same array back (the caller tells a retry is pointless).
    const fixed = ['/ip4/127.0.0.1/udp/4100/quic-v1'];
    expect(withLastPorts(fixed, last)).toBe(fixed);
    const other = ['/ip4/192.168.1.1/udp/0/quic-v1'];
    expect(withLastPorts(other, last)).toBe(other);
    expect(withLastPorts(other, undefined)).toBe(other);
    expect(withLastPorts(other, [])).toBe(other);
    // A relay's circuit address names the relay's port, not this node's: a node behind NAT keeps port 0.
    const behindNat = ['/ip4/0.0.0.0/udp/0/quic-v1'];
    expect(withLastPorts(behindNat, ['/ip4/203.0.113.7/udp/4100/quic-v1/p2p/12D3KooWr/p2p-circuit/p2p/12D3KooWx'])).toBe(behindNat);
  });
});

describe('failure detector', () => {
  it('alive, suspect, dead by the timeouts; hearing revives; only transitions are reported', () => {
    let now = 1000;
    const d = new FailureDetector({ suspectAfterMs: 300, deadAfterMs: 1000, now: () => now });
    d.track(['p', 'q']);
    expect(d.heard('p')).toMatchObject({ peer: 'p', from: 'unknown', to: 'alive', silentMs: 0 });
    expect(d.heard('q')).toMatchObject({ peer: 'q', from: 'unknown', to: 'alive', silentMs: 0 });
    now += 299;
    expect(d.tick()).toEqual([]);
    now += 1;
    expect(d.tick().map((t) => [t.peer, t.from, t.to])).toEqual([['p', 'alive', 'suspect'], ['q', 'alive', 'suspect']]);
    expect(d.heard('q')).toMatchObject({ peer: 'q', from: 'suspect', to: 'alive', silentMs: 300 });
    now += 700;
    expect(d.tick()).toEqual([{ peer: 'p', from: 'suspect', to: 'dead', silentMs: 1000, timeoutScale: 1 }, { peer: 'q', from: 'alive', to: 'suspect', silentMs: 700, timeoutScale: 1 }]);
    expect(d.tick()).toEqual([]);
    expect(d.counts()).toEqual({ unknown: 0, alive: 0, suspect: 1, dead: 1 });
    expect(d.health('p')).toMatchObject({ state: 'dead', since: now });
    // A member dropped from the list is forgotten.
    d.track(['q', 'r']);
    expect(d.health('p')).toBeUndefined();
    expect(d.heard('p')).toBeUndefined();
  });

  it('a member never heard from is unknown, not alive, until it speaks; silent past deadAfterMs it is dead', () => {
    let now = 1000;
    const d = new FailureDetector({ suspectAfterMs: 300, deadAfterMs: 1000, now: () => now });
    d.track(['new', 'down']);
    expect(d.health('new')).toEqual({ state: 'unknown', since: 1000, lastHeard: null });
    expect(d.counts()).toEqual({ unknown: 2, alive: 0, suspect: 0, dead: 0 });
    // Past the suspect timeout it stays unknown: suspect says a member heard before went quiet.
    now += 500;
    expect(d.tick()).toEqual([]);
    expect(d.heard('new')).toEqual({ peer: 'new', from: 'unknown', to: 'alive', silentMs: 500, timeoutScale: 1 });
    expect(d.health('new')).toEqual({ state: 'alive', since: 1500, lastHeard: 1500 });
    now += 500;
    expect(d.tick()).toEqual([
      { peer: 'new', from: 'alive', to: 'suspect', silentMs: 500, timeoutScale: 1 },
      { peer: 'down', from: 'unknown', to: 'dead', silentMs: 1000, timeoutScale: 1 },
    ]);
    expect(d.counts()).toEqual({ unknown: 0, alive: 0, suspect: 1, dead: 1 });
  });
});

describe('failure detector on a flapping link', () => {
  /**
   * A link up for `upMs` and down for `downMs`, heard at each tick (`tickMs`) while up, for
   * `cycles` cycles; the transitions the detector made for the member on the other side.
   */
  function flap(d: FailureDetector, clock: { now: number }, upMs: number, downMs: number, tickMs: number, cycles: number): string[] {
    const seen: string[] = [];
    for (let c = 0; c < cycles; c++) {
      for (let t = 0; t < upMs + downMs; t += tickMs) {
        clock.now += tickMs;
        for (const x of d.tick()) seen.push(`${x.from}>${x.to}`);
        if (t < upMs) {
          const x = d.heard('p');
          if (x) seen.push(`${x.from}>${x.to}`);
        }
      }
    }
    return seen;
  }

  it('a member whose link goes down 3 s in every 6 s is not taken through dead on every cycle: its timeouts stretch after the second revival', () => {
    const clock = { now: 1000 };
    // The tests' fast timeouts (test/cluster-procs.ts FAST): dead after 2 s of silence.
    const d = new FailureDetector({ suspectAfterMs: 800, deadAfterMs: 2000, now: () => clock.now });
    d.track(['p']);
    d.heard('p');
    const seen = flap(d, clock, 3000, 3000, 200, 20);
    // The premise: the first cycles do take it through dead (down longer than deadAfterMs).
    expect(seen.slice(0, 3)).toEqual(['alive>suspect', 'suspect>dead', 'dead>alive']);
    // Over 20 cycles (2 minutes), it is dead twice, then at most suspect now and then.
    expect(seen.filter((s) => s.endsWith('>dead'))).toHaveLength(2);
    // The next 10 cycles: no transition to dead, and fewer than one to suspect in two cycles.
    const late = flap(d, clock, 3000, 3000, 200, 10);
    expect(late.filter((s) => s.endsWith('>dead'))).toEqual([]);
    expect(late.filter((s) => s.endsWith('>suspect')).length).toBeLessThan(5);
  });

  it('one revival (a restart) leaves the timeouts as configured; a flapping member that stops is still declared dead; a calm spell restores the timeouts', () => {
    const clock = { now: 1000 };
    const d = new FailureDetector({ suspectAfterMs: 800, deadAfterMs: 2000, now: () => clock.now });
    d.track(['p']);
    d.heard('p');
    // A restart: dead, then back once. The next silence is timed as configured.
    clock.now += 2000;
    expect(d.tick().map((x) => x.to)).toEqual(['dead']);
    expect(d.heard('p')).toMatchObject({ from: 'dead', to: 'alive', timeoutScale: 1 });
    clock.now += 800;
    expect(d.tick()).toEqual([{ peer: 'p', from: 'alive', to: 'suspect', silentMs: 800, timeoutScale: 1 }]);
    // Back again: each revival past the first within the window doubles the timeouts, up to MAX_TIMEOUT_SCALE.
    expect(d.heard('p')).toMatchObject({ from: 'suspect', to: 'alive', timeoutScale: 2 });
    clock.now += 1600;
    expect(d.tick()).toEqual([{ peer: 'p', from: 'alive', to: 'suspect', silentMs: 1600, timeoutScale: 2 }]);
    expect(d.heard('p')).toMatchObject({ to: 'alive', timeoutScale: 4 });
    clock.now += 3200;
    expect(d.tick()).toEqual([{ peer: 'p', from: 'alive', to: 'suspect', silentMs: 3200, timeoutScale: 4 }]);
    expect(d.heard('p')).toMatchObject({ to: 'alive', timeoutScale: MAX_TIMEOUT_SCALE });
    clock.now += 3200;
    expect(d.heard('p')).toBeUndefined();
    // It stops for good: suspect after 8 x 800 ms, dead after 8 x 2 s, never later.
    clock.now += 6399;
    expect(d.tick()).toEqual([]);
    clock.now += 1;
    expect(d.tick().map((x) => x.to)).toEqual(['suspect']);
    clock.now += 9600;
    expect(d.tick()).toEqual([{ peer: 'p', from: 'suspect', to: 'dead', silentMs: 16000, timeoutScale: 8 }]);
    // It comes back and stays: each FLAP_WINDOW x deadAfterMs without a revival takes one doubling back.
    expect(d.heard('p')).toMatchObject({ to: 'alive', timeoutScale: MAX_TIMEOUT_SCALE });
    for (let i = 0; i < (3 * FLAP_WINDOW * 2000) / 200; i++) {
      clock.now += 200;
      d.heard('p');
      d.tick();
    }
    clock.now += 2000;
    expect(d.tick()).toEqual([{ peer: 'p', from: 'alive', to: 'dead', silentMs: 2000, timeoutScale: 1 }]);
  });
});

describe('a node inside an application', () => {
  it('serves beside the database it opens, seals its identity with a key derived from the database, and closes it on stop', async () => {
    const dir = tempDir();
    await Node.init(dir, { newCluster: true });
    // The identity from init is plain: start it with a database to see the sealed variant made on a fresh directory instead.
    const sealedDir = tempDir();
    fs.writeFileSync(path.join(sealedDir, CONFIG_FILE), JSON.stringify({ ...DEFAULT_CONFIG, database: { enabled: true, path: 'db' } }));
    const db0 = await OuroDB.open(path.join(sealedDir, 'db'), { key: KEY });
    await Node.init(sealedDir, { newCluster: true, identityKey: db0.deriveKey('node-identity') });
    await db0.close();
    const node = await Node.start({ dir: sealedDir, dbOpen: { key: KEY } });
    const peerId = node.peerId;
    try {
      expect(node.role).toBe('member');
      const h = await node.db!.put(new TextEncoder().encode('hello from the app'));
      const status = await node.status();
      expect(status).toMatchObject({ role: 'member', database: { objects: 1 } });
      expect(JSON.parse(fs.readFileSync(path.join(sealedDir, IDENTITY_FILE), 'utf8'))).toHaveProperty('sealed');
      expect(new TextDecoder().decode(await node.db!.get(h.hash))).toBe('hello from the app');
    } finally {
      await node.stop();
    }
    // The node closed the database it opened: it opens again here.
    const again = await OuroDB.open(path.join(sealedDir, 'db'), { key: KEY });
    await again.close();
    // Another key cannot unseal the identity. Beside the node's own database, the database
    // refuses that key before the identity is read:
    const other = new Uint8Array(32).fill(1);
    await expect(Node.start({ dir: sealedDir, dbOpen: { key: other } })).rejects.toBeInstanceOf(WrongKeyError);
    await expect(Node.start({ dir: sealedDir, dbOpen: { key: other } })).rejects.toThrow(/does not unlock this database/);
    // so the node gets a database that key does open: only the sealed identity can refuse now.
    const dbPath = path.join(sealedDir, 'db');
    fs.renameSync(dbPath, `${dbPath}.own`);
    await (await OuroDB.open(dbPath, { key: other })).close();
    const unsealed = await Node.start({ dir: sealedDir, dbOpen: { key: other } }).then(
      async (n) => {
        await n.stop();
        return `started as ${n.peerId}`;
      },
      (err: unknown) => err,
    );
    expect(unsealed).toBeInstanceOf(WrongKeyError);
    expect(String(unsealed)).toMatch(new RegExp(`does not unseal .*${IDENTITY_FILE}`));
    // It closed that database on the way out, and the identity, untouched, still opens with the
    // node's own database: the same peer id.
    await (await OuroDB.open(dbPath, { key: other })).close();
    fs.rmSync(dbPath, { recursive: true });
    fs.renameSync(`${dbPath}.own`, dbPath);
    const back = await Node.start({ dir: sealedDir, dbOpen: { key: KEY } });
    expect(back.peerId).toBe(peerId);
    await back.stop();
    // An application that owns its database passes it in; the node leaves it open.
    const appDb = await OuroDB.open(path.join(dir, 'appdb'), { key: KEY });
    const n2 = await Node.start({ dir, db: appDb });
    await n2.stop();
    expect((await appDb.stats()).objects).toBe(0);
    await appDb.close();
  });
});
