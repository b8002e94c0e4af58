/**
 * Helpers over a node's multiaddrs (no state): where to listen after a restart, and how to dial
 * a member from its listed addresses.
 */

/**
 * `listen` with each port 0 (any free port) replaced by the port of the same transport in `last`
 * (the addresses this node announced before: its entry in the member list), for an address of the
 * same IP, or any of the same IP version when `listen` names the wildcard. Returns `listen` itself
 * when nothing changes.
 */
export function withLastPorts(listen: string[], last: readonly string[] | undefined): string[] {
  if (!last || last.length === 0) return listen;
  const parse = (a: string) => /^\/(ip[46])\/([^/]+)\/udp\/(\d+)\/quic-v1(?:\/|$)/.exec(a);
  let changed = false;
  const out = listen.map((a) => {
    const want = parse(a);
    if (!want || want[3] !== '0') return a;
    const wildcard = want[2] === '0.0.0.0' || want[2] === '::';
    for (const l of last) {
      // A relay's circuit address (a member behind NAT announces those) carries the relay's port.
      if (l.includes('/p2p-circuit')) continue;
      const had = parse(l);
      if (had && had[1] === want[1] && (wildcard || had[2] === want[2]) && had[3] !== '0') {
        changed = true;
        return `/${want[1]}/${want[2]}/udp/${had[3]}/quic-v1`;
      }
    }
    return a;
  });
  return changed ? out : listen;
}

/**
 * `<addr>/p2p/<peer>` for each address that does not end in a peer id (libp2p dials need it). A
 * relay's circuit address, `.../p2p/<relay>/p2p-circuit`, names the relay and not the peer: it
 * gets the peer's id too.
 */
export function dialable(peer: string, addresses: string[]): string[] {
  return addresses.map((a) => (/\/p2p\/[^/]+$/.test(a) ? a : `${a}/p2p/${peer}`));
}
