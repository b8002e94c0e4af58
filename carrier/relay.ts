/**
 * Members behind NAT: libp2p circuit relay v2 among members (docs/operations.md, "Members behind
 * NAT").
 *
 * A member behind a NAT can dial out but nobody can dial it. It reserves a slot on a member that
 * serves the relay (config `relay.via`), and announces `<relay address>/p2p-circuit` instead of
 * the addresses it listens on: a member that wants it dials the relay, which opens a stream to it
 * over the connection it keeps open, and the two streams become one relayed connection, secured
 * end to end with noise and multiplexed with yamux (the relay carries bytes it cannot read).
 * Whenever it has dialed a member itself (its heartbeats do) that member answers over that direct
 * connection instead.
 *
 * Who may use a relay: only members. The relay's connection gater refuses a reservation from a
 * peer that is not in the member list, and a relayed connection unless both ends are; so a relay
 * costs strangers nothing, and the limits js-libp2p puts on each relayed connection by default (2
 * minutes, 128 KiB: enough for control messages, not for a 16 MiB block) are off for members
 * unless the operator sets `relay.durationLimitMs` / `relay.dataLimitBytes`. A limited connection
 * is one libp2p runs a protocol on only when the protocol says so, which the carrier does for
 * all of its own (`runOnLimitedConnection`): its membership checks are what guard them.
 *
 * Every member runs the relay transport (to dial `/p2p-circuit` addresses) and identify (the
 * transport requires it). Direct connection upgrade (DCUtR, hole punching) is not wired:
 * js-libp2p's implementation punches holes for TCP only and to public addresses only, and members
 * speak QUIC (docs/operations.md, "Members behind NAT").
 */
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { RELAY_V2_HOP_CODEC, circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { identify } from '@libp2p/identify';
import type { Connection, ConnectionGater, PeerId, Stream } from '@libp2p/interface';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import type { Libp2p, Libp2pOptions } from 'libp2p';
import type { Logger } from 'pino';
import { errorText } from '../lib/errors.js';
import type { NodeConfig } from './config.js';

/** The config's `relay` section (carrier/config.ts documents each field). */
export type RelayConfig = NodeConfig['relay'];

export interface CarrierRelay extends RelayConfig {
  /** Whether a peer may reserve a slot and have connections relayed (the node's membership check). */
  allow: (peer: string) => boolean;
  /** Told when a reservation on a relay is made, or fails (only when that changes). */
  onReservation?: (event: { relay: string; ok: boolean; error?: string }) => void;
}

/** The carrier's relay options from the config: `member` decides who may use it, reservations are logged. */
export function carrierRelay(config: RelayConfig, member: (peer: string) => boolean, log: Logger): CarrierRelay {
  return {
    ...config,
    allow: member,
    onReservation: ({ relay, ok, error }) =>
      ok ? log.info({ event: 'relay-reserved', relay }, 'holding a slot on the relay: members reach this node through it') : log.warn({ event: 'relay-unreserved', relay, err: error }, 'no slot on the relay (down, or it does not know this node as a member yet): asking again every 5 s'),
  };
}

/** How often a node behind NAT checks that it holds a slot on each of its relays, and asks again if not. */
const RESERVE_EVERY_MS = 5000;

/** The relay's share of a libp2p config: the transport, identify, the server where served, and the gater. */
export function relayLibp2p(relay: CarrierRelay | undefined): Required<Pick<Libp2pOptions, 'connectionEncrypters' | 'streamMuxers' | 'connectionGater'>> & { transport: NonNullable<Libp2pOptions['transports']>[number]; services: Libp2pOptions['services'] } {
  const allow = relay?.allow ?? (() => false);
  const connectionGater: ConnectionGater = {
    denyInboundRelayReservation: (peer: PeerId) => !allow(peer.toString()),
    denyOutboundRelayedConnection: (source: PeerId, destination: PeerId) => !(allow(source.toString()) && allow(destination.toString())),
  };
  const limited = relay !== undefined && (relay.durationLimitMs > 0 || relay.dataLimitBytes > 0);
  const services: NonNullable<Libp2pOptions['services']> = { identify: identify() };
  if (relay?.serve)
    services.relay = circuitRelayServer({
      reservations: {
        maxReservations: relay.maxReservations,
        // Off unless the operator set a limit: a reservation is made only by a member.
        applyDefaultLimit: limited,
        // 0 in a libp2p limit means none; so does 0 here, on each of the two (the relay would
        // close a connection at once on a duration of 0).
        ...(limited ? { defaultDurationLimit: relay.durationLimitMs || 2 ** 31 - 1, defaultDataLimit: BigInt(relay.dataLimitBytes || Number.MAX_SAFE_INTEGER) } : {}),
      },
    });
  // A relayed connection is a stream inside two QUIC connections, not a QUIC connection of its
  // own: libp2p secures it end to end (noise) and multiplexes it (yamux) as it would a TCP one.
  return { transport: circuitRelayTransport(), connectionEncrypters: [noise()], streamMuxers: [yamux()], services, connectionGater };
}

/**
 * Serves the relay's hop protocol through the relay server, closing each stream it leaves open.
 *
 * js-libp2p's relay answers a request it refuses (a CONNECT to a peer without a reservation, such
 * as a member behind NAT that is down or not yet reserved; a peer its gater refuses) with a status
 * and returns without closing its end of the stream. Over QUIC that stream stays open after the
 * requester has closed its own, and each connection takes at most 32 open hop streams: once a
 * member had 32 requests refused (its heartbeats to a member behind NAT that was down do that
 * within seconds) every later one on that connection was reset unread, and the member behind NAT
 * stayed unreachable from it after it came back (test/nat.test.ts saw it). So the relay's end is
 * closed once the requester has closed its own: at once for a refused request (the requester
 * closes on reading the refusal), at the end of the relayed connection for one that was relayed
 * (whose pipe closes it then too).
 */
export async function serveRelayHops(node: Libp2p): Promise<void> {
  const server = (node.services as { relay?: { onHop(stream: Stream, connection: Connection): Promise<void> } }).relay;
  if (!server) return;
  await node.handle(
    RELAY_V2_HOP_CODEC,
    async (stream: Stream, connection: Connection) => {
      try {
        await server.onHop(stream, connection);
      } finally {
        const close = () => {
          if (stream.status === 'open') stream.close({ signal: AbortSignal.timeout(5000) }).catch((err: unknown) => stream.abort(err instanceof Error ? err : new Error(String(err))));
        };
        if (stream.remoteWriteStatus !== 'writable') close();
        else stream.addEventListener('remoteCloseWrite', close, { once: true });
      }
    },
    { runOnLimitedConnection: true, force: true },
  );
}

/** What a node behind relays announces where the config names nothing: `<relay>/p2p-circuit` for each. */
export function relayAnnounce(relay: CarrierRelay | undefined): string[] {
  return (relay?.via ?? []).map((v) => `${v}/p2p-circuit`);
}

/** The part of libp2p's transport manager used here (not in libp2p's public types). */
interface Listening {
  listen(addrs: Multiaddr[]): Promise<void>;
  getListeners(): Array<{ getAddrs(): Multiaddr[] }>;
}

/**
 * Keeps a slot on each relay in `relay.via`: asks at start and then every RESERVE_EVERY_MS
 * while it holds none there. A relay that is down, or does not yet know this node as a member
 * (it joined through another member), refuses or fails; libp2p itself does not ask again for a
 * configured relay once a reservation was lost (its connection closed), so this does.
 */
export class RelayReservations {
  readonly #node: Libp2p;
  readonly #relay: CarrierRelay;
  readonly #held = new Map<string, boolean>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(node: Libp2p, relay: CarrierRelay) {
    this.#node = node;
    this.#relay = relay;
  }

  start(): void {
    if (this.#relay.via.length === 0) return;
    const tick = () => {
      void this.check().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(tick, RESERVE_EVERY_MS).unref();
      });
    };
    tick();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** The relays this node holds a slot on now (peer ids). */
  held(): string[] {
    const circuits = this.#transports().getListeners().flatMap((l) => l.getAddrs().map((a) => a.toString()));
    return this.#relay.via.map(relayId).filter((id) => circuits.some((c) => c.includes(`/p2p/${id}/p2p-circuit`)));
  }

  /** One pass: a reservation asked for on each relay this node holds none on. */
  async check(): Promise<void> {
    const held = new Set(this.held());
    for (const via of this.#relay.via) {
      if (this.#stopped) return;
      const id = relayId(via);
      let ok = held.has(id);
      let error: string | undefined;
      if (!ok) {
        try {
          await this.#transports().listen([multiaddr(`${via}/p2p-circuit`)]);
          ok = true;
        } catch (err) {
          error = errorText(err);
        }
      }
      if (this.#held.get(id) !== ok) this.#relay.onReservation?.({ relay: via, ok, ...(error !== undefined ? { error } : {}) });
      this.#held.set(id, ok);
    }
  }

  #transports(): Listening {
    return (this.#node as unknown as { components: { transportManager: Listening } }).components.transportManager;
  }
}

function relayId(via: string): string {
  return /\/p2p\/([^/]+)$/.exec(via)?.[1] ?? via;
}
