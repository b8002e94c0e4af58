/**
 * The network lab itself (test/netns.ts): members reach each other through its bridge; a
 * partition stops that and heal() restores it; cut() drops one direction only; shape() delays;
 * the test process reaches every member throughout. Each member runs a UDP listener that prints
 * every datagram it receives (so one direction can be seen on its own) and echoes it back.
 */
import dgram from 'node:dgram';
import readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { converged, ouroJson, startNode, tempDir, waitFor } from './cluster-harness.js';
import { NetLab, netnsUnavailable } from './netns.js';
import { LAB_PORT, labJoin } from './netns-nodes.js';

const skip = netnsUnavailable();
if (skip) console.warn(`netns tests skipped: ${skip}`);

const PORT = 7000;
const LISTENER = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => { console.log(m.toString()); s.send(m, r.port, r.address); });
s.bind(${PORT}, process.argv[1], () => console.log('ready'));
`;
/** Sends a datagram tagged argv[2] to argv[1] every 20 ms for 600 ms; prints the round trip of each echo. */
const SENDER = `
const s = require('node:dgram').createSocket('udp4');
const sent = new Map();
let n = 0;
s.on('message', (m) => { const t = sent.get(m.toString()); if (t !== undefined) console.log(String(performance.now() - t)); });
const timer = setInterval(() => { const tag = process.argv[2] + ':' + n++; sent.set(tag, performance.now()); s.send(tag, ${PORT}, process.argv[1]); }, 20);
setTimeout(() => { clearInterval(timer); setTimeout(() => process.exit(0), 700); }, 600);
`;

describe.skipIf(skip)('network lab', () => {
  let lab: NetLab;
  const seen: string[][] = [];

  beforeAll(async () => {
    lab = await NetLab.create(3, { name: 'ourolabt' });
    await Promise.all(
      lab.hosts.map(
        (h, i) =>
          new Promise<void>((resolve, reject) => {
            seen[i] = [];
            const child = lab.exec(i, [process.execPath, '-e', LISTENER, h.ip], { stdio: ['ignore', 'pipe', 'inherit'] });
            child.once('exit', (code) => reject(new Error(`listener ${i} exited ${code}`)));
            readline.createInterface({ input: child.stdout! }).on('line', (line) => (line === 'ready' ? resolve() : seen[i]!.push(line)));
          }),
      ),
    );
  });
  afterAll(() => lab?.destroy());

  let tags = 0;
  /** Sends from member `from` to member `to`: whether `to` received any, and the round trips of the echoes that came back. */
  async function send(from: number, to: number): Promise<{ received: boolean; rtts: number[] }> {
    const tag = `t${tags++}`;
    const child = lab.exec(from, [process.execPath, '-e', SENDER, lab.hosts[to]!.ip, tag], { stdio: ['ignore', 'pipe', 'inherit'] });
    const rtts: number[] = [];
    readline.createInterface({ input: child.stdout! }).on('line', (l) => rtts.push(Number(l)));
    await new Promise((r) => child.once('exit', r));
    return { received: seen[to]!.some((l) => l.startsWith(`${tag}:`)), rtts };
  }

  /** A datagram from the test process (the host's namespace) to member `to`: whether it arrived. */
  async function fromHost(to: number): Promise<boolean> {
    const tag = `h${tags++}`;
    const s = dgram.createSocket('udp4');
    for (let k = 0; k < 10; k++) {
      s.send(`${tag}:${k}`, PORT, lab.hosts[to]!.ip);
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 200));
    s.close();
    return seen[to]!.some((l) => l.startsWith(`${tag}:`));
  }

  it('members reach each other; a partition drops traffic across groups only, the host reaches all, heal restores', async () => {
    expect((await send(0, 1)).rtts.length).toBeGreaterThan(0);
    expect((await send(1, 2)).rtts.length).toBeGreaterThan(0);

    await lab.partition([[0], [1, 2]]);
    const across = await send(0, 1);
    expect(across).toEqual({ received: false, rtts: [] });
    expect((await send(2, 0)).received).toBe(false);
    expect((await send(1, 2)).rtts.length).toBeGreaterThan(0);
    expect(await fromHost(0)).toBe(true);
    expect(await fromHost(1)).toBe(true);

    await lab.heal();
    expect((await send(0, 1)).rtts.length).toBeGreaterThan(0);
    expect((await send(2, 0)).rtts.length).toBeGreaterThan(0);
  });

  it('cut() drops one direction only', async () => {
    await lab.cut(0, 1);
    // 0 -> 1 never arrives; 1 -> 0 arrives, but 0's echo back to 1 is the cut direction.
    expect((await send(0, 1)).received).toBe(false);
    const back = await send(1, 0);
    expect(back.received).toBe(true);
    expect(back.rtts).toEqual([]);
    expect((await send(0, 2)).rtts.length).toBeGreaterThan(0);
    await lab.heal();
    expect((await send(0, 1)).rtts.length).toBeGreaterThan(0);
  });

  it('shape() delays each direction by delayMs between the two sets only', async () => {
    const DELAY = 100;
    await lab.shape([0], [1], { delayMs: DELAY });
    const shaped = await send(0, 1);
    expect(shaped.rtts.length).toBeGreaterThan(0);
    // Each direction is delayed: a round trip takes at least twice the delay (less a little slack for timer rounding).
    expect(Math.min(...shaped.rtts)).toBeGreaterThan(2 * DELAY - 10);
    // Shaping again replaces the earlier rule (one netem per pair), and heal() removes it.
    await lab.shape([0], [1], { delayMs: DELAY * 2 });
    expect(Math.min(...(await send(1, 0)).rtts)).toBeGreaterThan(4 * DELAY - 10);
    await lab.heal();
    await lab.shape([0], [1], { delayMs: 0, lossPct: 100 });
    expect((await send(0, 1)).received).toBe(false);
    expect((await send(0, 2)).rtts.length).toBeGreaterThan(0);
    await lab.heal();
    expect((await send(0, 1)).rtts.length).toBeGreaterThan(0);
  });

  it('destroy() removes the namespaces and is idempotent', async () => {
    const other = await NetLab.create(2);
    const names = other.hosts.map((h) => h.ns);
    await other.destroy();
    await other.destroy();
    const { execFileSync } = await import('node:child_process');
    const list = execFileSync('ip', ['netns', 'list']).toString();
    for (const n of names) expect(list).not.toContain(n);
  });
});

describe.skipIf(skip)('nodes in the lab', () => {
  let lab: NetLab;
  beforeAll(async () => {
    lab = await NetLab.create(2, { name: 'ourolabn' });
  });
  afterAll(() => lab?.destroy());

  it('a node listening on every interface announces only the address given with --announce, and is joined there', async () => {
    const dir = tempDir();
    const ip = lab.hosts[0]!.ip;
    const announced = `/ip4/${ip}/udp/${LAB_PORT}/quic-v1`;
    await ouroJson(['node', 'init', dir, '--new-cluster', '--listen', `/ip4/0.0.0.0/udp/${LAB_PORT}/quic-v1`, '--announce', announced, '--admin-host', ip], lab.wrap(0));
    const a = await startNode(dir, [], [], lab.wrap(0));
    // Without --announce the wildcard gives loopback first (what the other members would dial).
    expect(a.run.addresses).toEqual([`${announced}/p2p/${a.peerId}`]);
    const b = await labJoin(lab, 1, a);
    await waitFor(() => converged([a, b], [a.peerId, b.peerId]), 20_000, 'two members');
    expect((await b.members()).members.find((m) => m.peerId === a.peerId)?.addresses).toEqual([`${announced}/p2p/${a.peerId}`]);
  });
});
