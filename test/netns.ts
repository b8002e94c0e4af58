/**
 * A network that tests can break: each member in its own Linux network namespace, all joined by
 * a router namespace of the lab's own, with drops (nftables) and delay, jitter and loss applied
 * between members at any moment, and removed by heal().
 *
 *   test process (the host's own namespace: HOST_IP = <subnet>.254 on the veth ol<sfx>)
 *        |
 *   +----+-----------------------------------------------------------+
 *   |  hub namespace ourolab-<sfx>-hub: routes each member's /32 to  |
 *   |  its port (hub address <subnet>.253); the tun `wire0` and the  |
 *   |  wire process (python3, below) for shaped traffic              |
 *   +---+--------------+--------------+------------------------------+
 *       | veth p0      | veth p1      | ...
 *   ourolab-<sfx>-0  ourolab-<sfx>-1  ...   (eth0 = <subnet>.1, .2, ...)
 *
 * How member traffic is kept apart from the test's own: every drop lives inside the member
 * namespaces and names member addresses only (nft drops `ip daddr` of a member on output and
 * `ip saddr` of a member on input), and shaping routes only packets from one member's port to
 * another member's address through the wire. The test process's address is in no rule, so the
 * admin API (and `ouro cluster` commands run from the test) reach every member whatever the lab
 * does between members. Nothing is applied in the host's namespace: all the host gains is the
 * veth `ol<sfx>` with its /32 and a route to the lab's /24.
 *
 * Why a wire process and not tc netem: the kernels these tests run on (Firecracker guests) are
 * built without sch_netem (and without sch_prio). So the hub routes a shaped pair's packets
 * (an `ip rule` per direction: from member A, arriving on A's port, to member B) into a tun
 * device read by a small python3 process (stdlib only) that holds each packet for its delay
 * (plus uniform jitter), drops its share of loss, and writes it back; a packet written back
 * arrives on `wire0`, which the main table routes on to its member.
 *
 * Names carry a random suffix (namespaces `ourolab-<sfx>-*`, the host veth `ol<sfx>`, the subnet
 * a random free 10.x.y.0/24), so test files running in parallel never collide. destroy() kills
 * every process inside the lab's namespaces and deletes them; it runs from a process 'exit' hook
 * too, so a failing test leaves nothing behind.
 *
 * Shaping is per direction: shape(a, b, { delayMs: 50 }) delays each packet from a to b and each
 * from b to a by 50 ms, i.e. a round trip of 100 ms; lossPct drops that share of packets in each
 * direction.
 */
import { type ChildProcess, type SpawnOptions, execFile, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import readline from 'node:readline';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The routing table in the hub that sends a shaped pair's packets into the wire. */
const WIRE_TABLE = '100';

/**
 * The wire (run in the hub namespace): opens the tun `wire0`, prints "ready", then reads lines on
 * stdin, `set SRC DST DELAY_MS JITTER_MS LOSS_PCT` (per direction) and `clear`, answering "ok" to
 * each once in force. Every packet read from the tun is dropped with its pair's loss or written
 * back after its pair's delay (uniform jitter either side, reordering allowed as netem does).
 */
const WIRE = String.raw`
import fcntl, heapq, os, random, select, socket, struct, sys, time
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', b'wire0', IFF_TUN | IFF_NO_PI))
os.set_blocking(fd, False)
rules, queue, seq, stdin = {}, [], 0, sys.stdin.fileno()
print('ready', flush=True)
buf = b''
while True:
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        _, _, pkt = heapq.heappop(queue)
        try:
            os.write(fd, pkt)
        except OSError:
            pass
    timeout = max(0.0, queue[0][0] - now) if queue else None
    ready, _, _ = select.select([fd, stdin], [], [], timeout)
    if stdin in ready:
        chunk = os.read(stdin, 65536)
        if not chunk:
            sys.exit(0)
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            w = line.decode().split()
            if w and w[0] == 'set':
                rules[(socket.inet_aton(w[1]), socket.inet_aton(w[2]))] = (float(w[3]) / 1000, float(w[4]) / 1000, float(w[5]) / 100)
            elif w and w[0] == 'clear':
                rules.clear()
            print('ok', flush=True)
    if fd in ready:
        for _ in range(256):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            rule = rules.get((pkt[12:16], pkt[16:20]), (0.0, 0.0, 0.0))
            if rule[2] > 0 and random.random() < rule[2]:
                continue
            delay = max(0.0, rule[0] + (random.uniform(-rule[1], rule[1]) if rule[1] > 0 else 0.0))
            seq += 1
            heapq.heappush(queue, (time.monotonic() + delay, seq, pkt))
`;

let probed: { reason: string | undefined } | undefined;

/**
 * Why the netns tests cannot run here (not Linux or not root, no `ip netns`, no `nft`, no tun
 * device or python3 for the wire), or undefined when they can. Probes once, with a namespace of
 * its own that it deletes.
 */
export function netnsUnavailable(): string | undefined {
  if (probed) return probed.reason;
  const reason = probe();
  probed = { reason };
  return reason;
}

function probe(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)';
  const ns = `ourolab-probe-${crypto.randomBytes(4).toString('hex')}`;
  const step = (what: string, argv: string[]): string | undefined => {
    try {
      execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
      return undefined;
    } catch (err) {
      const e = err as { code?: string; stderr?: Buffer };
      return `${what}: ${e.code === 'ENOENT' ? `${argv[0]} is not installed` : e.stderr?.toString().trim() || String(err)}`;
    }
  };
  const missing = step('ip netns', ['ip', 'netns', 'add', ns]);
  if (missing) return missing;
  try {
    return (
      step('ip link', ['ip', '-n', ns, 'link', 'set', 'lo', 'up']) ??
      step('nftables (apt-get install nftables)', ['ip', 'netns', 'exec', ns, 'nft', 'add', 'table', 'inet', 'probe']) ??
      step('the wire (python3 and /dev/net/tun)', ['ip', 'netns', 'exec', ns, 'python3', '-c', "import fcntl, os, struct; fd = os.open('/dev/net/tun', os.O_RDWR); fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'probe0', 0x1001))"])
    );
  } finally {
    step('ip netns del', ['ip', 'netns', 'del', ns]);
  }
}

/** A free 10.x.y.0/24 (x in 200..249) that no route of the host's overlaps. */
async function freeSubnet(): Promise<string> {
  const { stdout } = await run('ip', ['-4', 'route', 'show', 'table', 'all']);
  for (let tries = 0; tries < 100; tries++) {
    const net = `10.${200 + crypto.randomInt(50)}.${crypto.randomInt(256)}`;
    if (!stdout.includes(`${net}.`)) return net;
  }
  throw new Error('no free 10.x.y.0/24 for the lab');
}

const labs = new Set<NetLab>();
process.once('exit', () => {
  for (const lab of labs) lab.destroySync();
});

export interface ShapeOptions {
  /** Added to each packet, each direction. */
  delayMs: number;
  /** Each packet's delay is delayMs plus or minus up to this (uniform). */
  jitterMs?: number;
  /** Share of packets dropped, each direction, 0 to 100. */
  lossPct?: number;
}

export class NetLab {
  readonly hosts: Array<{ ns: string; ip: string }>;
  /** The NAT routers natBehind() added (namespaces, deleted with the lab). */
  readonly #routers: string[] = [];
  /** The test process's address on the lab's network. */
  readonly hostIp: string;
  readonly #hub: string;
  readonly #hubIp: string;
  readonly #subnet: string;
  readonly #hostLink: string;
  readonly #children = new Set<ChildProcess>();
  /** The shaped directions, `i>j`: each has an `ip rule` in the hub. */
  readonly #shaped = new Set<string>();
  #wire: { child: ChildProcess; acks: Array<() => void> } | undefined;
  #destroyed = false;

  private constructor(name: string, subnet: string, members: number) {
    this.#hub = `${name}-hub`;
    this.#hostLink = `ol${name.slice(-8)}`;
    this.#subnet = subnet;
    this.#hubIp = `${subnet}.253`;
    this.hostIp = `${subnet}.254`;
    this.hosts = Array.from({ length: members }, (_, i) => ({ ns: `${name}-${i}`, ip: `${subnet}.${i + 1}` }));
  }

  /** `members` namespaces routed through a hub of the lab's own, each reachable from the test process. */
  static async create(members: number, opts: { name?: string } = {}): Promise<NetLab> {
    const why = netnsUnavailable();
    if (why) throw new Error(`network namespaces unavailable: ${why}`);
    if (!Number.isInteger(members) || members < 1 || members > 200) throw new Error('a lab has 1 to 200 members');
    const name = `${opts.name ?? 'ourolab'}-${crypto.randomBytes(4).toString('hex')}`;
    const lab = new NetLab(name, await freeSubnet(), members);
    labs.add(lab);
    try {
      await lab.#build();
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  async #build(): Promise<void> {
    const hub = this.#hub;
    const net = `${this.#subnet}.0/24`;
    await ip('netns', 'add', hub);
    await ip('-n', hub, 'link', 'set', 'lo', 'up');
    // A router: forwards, and takes back on wire0 packets whose way back is another port.
    for (const s of ['net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']) await ip('netns', 'exec', hub, 'sysctl', '-qw', s);
    await Promise.all(
      this.hosts.map(async (h, i) => {
        await ip('netns', 'add', h.ns);
        await ip('-n', h.ns, 'link', 'set', 'lo', 'up');
        await ip('-n', hub, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
        await ip('-n', hub, 'addr', 'add', `${this.#hubIp}/32`, 'dev', `p${i}`);
        await ip('-n', hub, 'link', 'set', `p${i}`, 'up');
        await ip('-n', hub, 'route', 'add', `${h.ip}/32`, 'dev', `p${i}`, 'src', this.#hubIp);
        await ip('-n', h.ns, 'addr', 'add', `${h.ip}/32`, 'dev', 'eth0');
        await ip('-n', h.ns, 'link', 'set', 'eth0', 'up');
        await ip('-n', h.ns, 'route', 'add', net, 'via', this.#hubIp, 'dev', 'eth0', 'onlink');
        await this.#nft(i, 'add table inet ourolab\nadd chain inet ourolab input { type filter hook input priority 0; policy accept; }\nadd chain inet ourolab output { type filter hook output priority 0; policy accept; }\n');
      }),
    );
    await ip('link', 'add', this.#hostLink, 'type', 'veth', 'peer', 'name', 'host', 'netns', hub);
    await ip('-n', hub, 'addr', 'add', `${this.#hubIp}/32`, 'dev', 'host');
    await ip('-n', hub, 'link', 'set', 'host', 'up');
    await ip('-n', hub, 'route', 'add', `${this.hostIp}/32`, 'dev', 'host', 'src', this.#hubIp);
    await ip('addr', 'add', `${this.hostIp}/32`, 'dev', this.#hostLink);
    await ip('link', 'set', this.#hostLink, 'up');
    await ip('route', 'add', net, 'via', this.#hubIp, 'dev', this.#hostLink, 'onlink');
    await this.#startWire();
  }

  async #startWire(): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.#hub, 'python3', '-u', '-c', WIRE], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#children.add(child);
    const wire = { child, acks: [] as Array<() => void> };
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the wire exited ${code}`)));
      readline.createInterface({ input: child.stdout! }).on('line', (line) => (line === 'ready' ? resolve() : line === 'ok' ? wire.acks.shift()?.() : undefined));
    });
    this.#wire = wire;
    const hub = this.#hub;
    await ip('netns', 'exec', hub, 'sysctl', '-qw', 'net.ipv4.conf.wire0.rp_filter=0');
    await ip('-n', hub, 'link', 'set', 'wire0', 'up');
    await ip('-n', hub, 'route', 'add', 'default', 'dev', 'wire0', 'table', WIRE_TABLE);
    // What the wire writes back is routed by the main table (else it would go round again).
    await ip('-n', hub, 'rule', 'add', 'iif', 'wire0', 'lookup', 'main', 'pref', '500');
  }

  /** One line to the wire, resolved once it is in force. */
  #tellWire(line: string): Promise<void> {
    const wire = this.#wire!;
    return new Promise((resolve) => {
      wire.acks.push(resolve);
      wire.child.stdin!.write(`${line}\n`);
    });
  }

  /** `nft -f -` inside member i's namespace. */
  async #nft(i: number, script: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const child = execFile('ip', ['netns', 'exec', this.hosts[i]!.ns, 'nft', '-f', '-'], (err, _out, stderr) => (err ? reject(new Error(`nft in ${this.hosts[i]!.ns}: ${stderr || err.message}\n${script}`)) : resolve()));
      child.stdin!.end(script);
    });
  }

  #member(i: number): { ns: string; ip: string } {
    const h = this.hosts[i];
    if (!h) throw new Error(`no member ${i} in this lab (0 to ${this.hosts.length - 1})`);
    return h;
  }

  /** Runs argv inside member i's namespace (`ip netns exec`); destroy() kills it if it still runs. */
  exec(i: number, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.#member(i).ns, ...argv], opts);
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** The argv prefix that runs a command inside member i's namespace (for spawners of their own). */
  wrap(i: number): string[] {
    return ['ip', 'netns', 'exec', this.#member(i).ns];
  }

  /**
   * Drops all traffic between members of different groups (added to the rules in force). A
   * member in no group is left alone; the test process reaches every member throughout.
   */
  async partition(groups: number[][]): Promise<void> {
    const groupOf = new Map<number, number>();
    groups.forEach((g, k) =>
      g.forEach((i) => {
        this.#member(i);
        if (groupOf.has(i)) throw new Error(`member ${i} is in two groups`);
        groupOf.set(i, k);
      }),
    );
    await Promise.all(
      [...groupOf].map(([i, k]) => {
        const others = [...groupOf].filter(([, g]) => g !== k).map(([j]) => this.hosts[j]!.ip);
        if (others.length === 0) return Promise.resolve();
        return this.#nft(i, others.map((o) => `add rule inet ourolab output ip daddr ${o} drop\nadd rule inet ourolab input ip saddr ${o} drop\n`).join(''));
      }),
    );
  }

  /** Drops the packets `from` sends to `to` (`to` still reaches `from`, whose answers are lost). */
  async cut(from: number, to: number): Promise<void> {
    if (from === to) throw new Error('a member cannot be cut from itself');
    const a = this.#member(from);
    const b = this.#member(to);
    // Both ends drop it (output at the sender, input at the receiver), so that either rule alone holds.
    await this.#nft(from, `add rule inet ourolab output ip daddr ${b.ip} drop\n`);
    await this.#nft(to, `add rule inet ourolab input ip saddr ${a.ip} drop\n`);
  }

  /** Delay, jitter and loss on the traffic between the two sets, each direction (replaces earlier shaping of the same pairs). */
  async shape(a: number[], b: number[], opts: ShapeOptions): Promise<void> {
    const { delayMs, jitterMs = 0, lossPct = 0 } = opts;
    if (!(delayMs >= 0) || !(jitterMs >= 0) || !(lossPct >= 0 && lossPct <= 100)) throw new Error(`bad shaping ${JSON.stringify(opts)}`);
    const pairs = new Set<string>();
    for (const i of a) for (const j of b) if (i !== j) pairs.add(`${i}>${j}`).add(`${j}>${i}`);
    for (const pair of pairs) {
      const [i, j] = pair.split('>').map(Number) as [number, number];
      const from = this.#member(i);
      const to = this.#member(j);
      // The wire knows the pair before its packets are routed to it.
      await this.#tellWire(`set ${from.ip} ${to.ip} ${delayMs} ${jitterMs} ${lossPct}`);
      if (!this.#shaped.has(pair)) {
        await ip('-n', this.#hub, 'rule', 'add', 'from', from.ip, 'to', to.ip, 'iif', `p${i}`, 'lookup', WIRE_TABLE, 'pref', '1000');
        this.#shaped.add(pair);
      }
    }
  }

  /**
   * Puts member i behind a NAT of its own, as a home or office router would (masquerade, and no
   * connection from outside in). Member i's namespace gets a private address on a subnet of its
   * own, behind a router namespace `<ns>-nat` that takes member i's lab address as its public one:
   *
   *   hub --p<i>-- router (eth0 = the lab address; lan0 = <private>.1) --lan0/eth0-- member i (<private>.2)
   *
   * Other members can dial neither the private address (no route to it anywhere but the hub's,
   * which the router refuses for them) nor the public one (nothing listens on the router). The
   * test process alone may open connections in, to reach member i's admin API: the hub and the
   * host route the private subnet to the router, whose forward chain lets new connections in
   * from the host's address only. Afterwards hosts[i].ip is the private address (listen and
   * admin there); partition(), cut() and shape() name lab addresses, so they do not apply to it.
   * Returns both addresses.
   */
  async natBehind(i: number): Promise<{ privateIp: string; publicIp: string }> {
    const h = this.#member(i);
    const publicIp = h.ip;
    const priv = await freeSubnet();
    const privateIp = `${priv}.2`;
    const router = `${h.ns}-nat`;
    const hub = this.#hub;
    const net = `${this.#subnet}.0/24`;
    this.#routers.push(router);
    await ip('netns', 'add', router);
    await ip('-n', router, 'link', 'set', 'lo', 'up');
    await ip('netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    // The hub's port now leads to the router (deleting it deleted member i's eth0).
    await ip('-n', hub, 'link', 'del', `p${i}`);
    await ip('-n', hub, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', router);
    await ip('-n', hub, 'addr', 'add', `${this.#hubIp}/32`, 'dev', `p${i}`);
    await ip('-n', hub, 'link', 'set', `p${i}`, 'up');
    await ip('-n', hub, 'route', 'add', `${publicIp}/32`, 'dev', `p${i}`, 'src', this.#hubIp);
    await ip('-n', hub, 'route', 'add', `${priv}.0/24`, 'via', publicIp, 'dev', `p${i}`, 'onlink');
    await ip('-n', router, 'addr', 'add', `${publicIp}/32`, 'dev', 'eth0');
    await ip('-n', router, 'link', 'set', 'eth0', 'up');
    await ip('-n', router, 'route', 'add', net, 'via', this.#hubIp, 'dev', 'eth0', 'onlink');
    await ip('-n', router, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
    await ip('-n', router, 'addr', 'add', `${priv}.1/24`, 'dev', 'lan0');
    await ip('-n', router, 'link', 'set', 'lan0', 'up');
    await ip('-n', h.ns, 'addr', 'add', `${privateIp}/24`, 'dev', 'eth0');
    await ip('-n', h.ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', h.ns, 'route', 'add', 'default', 'via', `${priv}.1`);
    await ip('route', 'add', `${priv}.0/24`, 'via', this.#hubIp, 'dev', this.#hostLink, 'onlink');
    await new Promise<void>((resolve, reject) => {
      const child = execFile('ip', ['netns', 'exec', router, 'nft', '-f', '-'], (err, _o, stderr) => (err ? reject(new Error(`nft in ${router}: ${stderr || err.message}`)) : resolve()));
      child.stdin!.end(
        [
          'add table ip nat',
          'add chain ip nat postrouting { type nat hook postrouting priority 100; }',
          'add rule ip nat postrouting oifname "eth0" masquerade',
          'add table inet fw',
          'add chain inet fw forward { type filter hook forward priority 0; policy accept; }',
          'add rule inet fw forward ct state established,related accept',
          `add rule inet fw forward iifname "eth0" ip saddr != ${this.hostIp} drop`,
          '',
        ].join('\n'),
      );
    });
    this.hosts[i] = { ns: h.ns, ip: privateIp };
    return { privateIp, publicIp };
  }

  /** Drops the traffic between NATed member i and lab member j in i's router (both ways), as between two members behind different NATs. */
  async natCut(i: number, j: number): Promise<void> {
    const router = `${this.#member(i).ns}-nat`;
    const other = this.#member(j).ip;
    await new Promise<void>((resolve, reject) => {
      const child = execFile('ip', ['netns', 'exec', router, 'nft', '-f', '-'], (err, _o, stderr) => (err ? reject(new Error(`nft in ${router}: ${stderr || err.message}`)) : resolve()));
      child.stdin!.end(`insert rule inet fw forward ip daddr ${other} drop\ninsert rule inet fw forward ip saddr ${other} drop\n`);
    });
  }

  /** Removes every drop and every shaping rule. */
  async heal(): Promise<void> {
    await Promise.all(this.hosts.map((_, i) => this.#nft(i, 'flush chain inet ourolab input\nflush chain inet ourolab output\n')));
    for (const pair of this.#shaped) {
      const [i, j] = pair.split('>').map(Number) as [number, number];
      await ip('-n', this.#hub, 'rule', 'del', 'from', this.hosts[i]!.ip, 'to', this.hosts[j]!.ip, 'iif', `p${i}`, 'lookup', WIRE_TABLE, 'pref', '1000');
    }
    this.#shaped.clear();
    // Packets already in the wire still come out, at their time.
    if (this.#wire) await this.#tellWire('clear');
  }

  /** Kills whatever runs inside the lab and deletes its namespaces and links; idempotent. */
  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** destroy() for the process 'exit' hook, where nothing asynchronous runs. */
  destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    labs.delete(this);
    for (const c of this.#children) c.kill('SIGKILL');
    this.#children.clear();
    const quiet = (argv: string[]) => {
      try {
        return execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
      } catch {
        return '';
      }
    };
    for (const ns of [...this.hosts.map((h) => h.ns), ...this.#routers, this.#hub]) {
      // Processes started in the namespace by anyone (cluster-procs spawns through wrap()).
      for (const pid of quiet(['ip', 'netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      quiet(['ip', 'netns', 'del', ns]);
    }
    // Deleting the hub deleted the host veth's peer and with it the veth (and its route); this catches a half-built lab.
    quiet(['ip', 'link', 'del', this.#hostLink]);
  }
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`ip ${args.join(' ')}: ${err.stderr || err.message}`);
  });
}
