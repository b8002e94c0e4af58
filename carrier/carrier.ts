/**
 * The carrier: a libp2p 3 node on QUIC (@chainsafe/libp2p-quic; TLS 1.3 and stream multiplexing
 * are QUIC's own) with a persistent Ed25519 identity, and request/response over framed streams:
 * one stream per request, the request and the response each one frame (carrier/frames.ts).
 *
 * Protocol ids are versioned (`/ouro/<name>/<major>`); a change a peer of the previous version
 * cannot read gets a new major. Every request has a time limit and takes an AbortSignal; a bad
 * frame from a peer (oversized, undecodable, cut short) closes that stream with OURO_PROTOCOL and
 * nothing else. A handler's typed error travels back to the requester as the same code.
 *
 * Access control: `handle(..., { allow })` runs before a frame is read; a peer it refuses gets
 * one OURO_REFUSED reply and the stream is closed both ways without reading its request (the
 * cluster's membership check plugs in here).
 *
 * Owns the libp2p node, the protocols served on sessions (#served, added by handle(), which its
 * user calls while starting) and the client sessions, one per peer (#sessions, opened by a
 * request that needs one and dropped when it closes), and its slots on relays (#reservations,
 * carrier/relay.ts). It knows nothing of members or blocks: who may use a relay it serves is its
 * user's `relay.allow`.
 */
import { quic } from '@chainsafe/libp2p-quic';
import type { Connection, PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { type Libp2p, createLibp2p } from 'libp2p';
import { BadArgumentError, OURO_ERROR_CODES, OuroError, ProtocolError, RateLimitedError, RefusedError, TimeoutError, errorText, type OuroErrorCode } from '../lib/errors.js';
import { DEFAULT_MAX_FRAME_BYTES, type Reply, decodeFrames, encodeFrame, errorReply, refusal } from './frames.js';
import { loadIdentity } from './identity.js';
import { type CarrierRelay, RelayReservations, relayAnnounce, relayLibp2p, serveRelayHops } from './relay.js';
import { UnsentError, send } from './send.js';
import { ClientSession, SESSION_MAX_REQUEST_BYTES, SESSION_PROTOCOL, type Served, serveSession, sessionFrame } from './session.js';

export interface CarrierOptions {
  /** The node's data directory: its identity lives here. */
  dir: string;
  /** Multiaddrs to listen on (default: QUIC on 127.0.0.1, a free port). */
  listen?: string[];
  /** Multiaddrs to announce instead of the listen addresses (default, or empty: those). */
  announce?: string[];
  /** Seals the identity file (the database key, where the node has one). */
  identityKey?: Uint8Array;
  /** The identity, already loaded by the caller (then `dir`'s file is not read again). */
  privateKey?: PrivateKey;
  /** Largest frame accepted or sent (default 4 MiB). */
  maxFrameBytes?: number;
  /** Default time limit of a request, in ms (default 10 s). */
  requestTimeoutMs?: number;
  /** Called once per finished request, served or sent (metrics plug in here). */
  observe?: (event: RequestEvent) => void;
  /**
   * Called for every inbound stream and session request before anything else: a message refuses
   * it with OURO_RATE_LIMITED, unread (the node's rate limits on non-members plug in here).
   */
  limit?: (peer: string, protocol: string) => string | undefined;
  /** Circuit relay among members (carrier/relay.ts): serve it, or reserve slots on relays (behind NAT). */
  relay?: CarrierRelay;
}

export interface RequestEvent {
  protocol: string;
  direction: 'in' | 'out';
  /** `ok`, `refused`, or the error code the request ended with. */
  outcome: string;
  seconds: number;
}

export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * Send over the peer's shared session stream (default true; carrier/session.ts). A request
   * whose frame is over 64 KiB, or to a peer named without /p2p/, always gets its own stream.
   */
  reuse?: boolean;
}

export interface HandlerContext {
  /** The requesting peer's id. */
  peer: string;
  signal: AbortSignal;
}

export type Handler = (message: unknown, ctx: HandlerContext) => Promise<unknown> | unknown;

/** The peer id a target names, if it names one. */
function peerKey(peer: string | string[]): string | undefined {
  const first = Array.isArray(peer) ? peer[0] : peer;
  if (first === undefined) return undefined;
  if (!first.startsWith('/')) return first;
  const m = /\/p2p\/([^/]+)$/.exec(first);
  return m?.[1];
}

export const DEFAULT_LISTEN = ['/ip4/127.0.0.1/udp/0/quic-v1'];
/**
 * How many sessions a request tries when each fails to open, or turns out closed before the
 * request could be sent on it (UnsentError), within its one time limit. More than one failure in
 * a row means the peer is away or keeps closing them: then the request fails.
 */
const SESSION_SEND_ATTEMPTS = 3;

/** `/ouro/<name>/<major>`: the protocol id of a carrier protocol. */
export function protocolId(name: string, major = 1): string {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new BadArgumentError(`protocol name ${JSON.stringify(name)} must be lowercase letters, digits and dashes`);
  return `/ouro/${name}/${major}`;
}

export class Carrier {
  readonly node: Libp2p;
  readonly #maxFrameBytes: number;
  readonly #timeoutMs: number;
  readonly #stopping = new AbortController();
  readonly #observe: (event: RequestEvent) => void;
  readonly #limit: (peer: string, protocol: string) => string | undefined;
  readonly #served = new Map<string, Served>();
  readonly #sessions = new Map<string, Promise<ClientSession>>();
  #reservations: RelayReservations | undefined;

  private constructor(node: Libp2p, options: CarrierOptions) {
    this.node = node;
    this.#observe = options.observe ?? (() => {});
    this.#limit = options.limit ?? (() => undefined);
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#timeoutMs = options.requestTimeoutMs ?? 10_000;
  }

  static async start(options: CarrierOptions): Promise<Carrier> {
    const privateKey: PrivateKey = options.privateKey ?? (await loadIdentity(options.dir, options.identityKey));
    const relay = relayLibp2p(options.relay);
    // Behind relays and announcing nothing of its own: the relays' circuit addresses (its own are unreachable).
    const announce = options.announce?.length ? options.announce : relayAnnounce(options.relay);
    const node = await createLibp2p({
      privateKey,
      addresses: { listen: options.listen ?? DEFAULT_LISTEN, ...(announce.length ? { announce } : {}) },
      transports: [quic(), relay.transport],
      connectionEncrypters: relay.connectionEncrypters,
      streamMuxers: relay.streamMuxers,
      services: relay.services,
      connectionGater: relay.connectionGater,
      start: false,
    });
    try {
      await node.start();
    } catch (err) {
      // An address that cannot be listened on (in use, say): nothing of this node stays open.
      try {
        await node.stop();
      } catch {
        // the start's own failure is the one to report
      }
      throw err;
    }
    await serveRelayHops(node);
    const carrier = new Carrier(node, options);
    if (options.relay) (carrier.#reservations = new RelayReservations(node, options.relay)).start();
    await node.handle(
      SESSION_PROTOCOL,
      (stream: Stream, connection: Connection) =>
        serveSession(stream, connection.remotePeer.toString(), {
          maxFrameBytes: carrier.#maxFrameBytes,
          timeoutMs: carrier.#timeoutMs,
          stopping: carrier.#stopping.signal,
          lookup: (protocol) => carrier.#served.get(protocol),
          limit: (protocol) => carrier.#limit(connection.remotePeer.toString(), protocol),
          observe: (protocol, outcome, seconds) => carrier.#observe({ protocol, direction: 'in', outcome, seconds }),
        }),
      { maxInboundStreams: 16, runOnLimitedConnection: true },
    );
    return carrier;
  }

  get peerId(): string {
    return this.node.peerId.toString();
  }

  /** The relays this node holds a slot on now (their peer ids; carrier/relay.ts). */
  get relays(): string[] {
    return this.#reservations?.held() ?? [];
  }

  /** Dialable addresses, each ending in /p2p/<peer id>. */
  get addresses(): string[] {
    return this.node.getMultiaddrs().map((a) => a.toString());
  }

  /**
   * Serves `protocol`: each request frame is passed to `handler`, whose result (or typed error)
   * is sent back. `allow` decides per peer before anything is read.
   */
  async handle(protocol: string, handler: Handler, options: { allow?: (peer: string) => boolean; maxInboundStreams?: number } = {}): Promise<void> {
    this.#served.set(protocol, { handler, allow: options.allow });
    await this.node.handle(
      protocol,
      async (stream: Stream, connection: Connection) => {
        const peer = connection.remotePeer.toString();
        const started = performance.now();
        const limited = this.#limit(peer, protocol);
        if (limited !== undefined) {
          await this.#refuse(stream, { ok: false, code: 'OURO_RATE_LIMITED', message: limited });
          this.#observe({ protocol, direction: 'in', outcome: 'OURO_RATE_LIMITED', seconds: (performance.now() - started) / 1000 });
          return;
        }
        if (options.allow && !options.allow(peer)) {
          await this.#refuse(stream, refusal(peer, protocol));
          this.#observe({ protocol, direction: 'in', outcome: 'refused', seconds: (performance.now() - started) / 1000 });
          return;
        }
        const outcome = await this.#serve(stream, peer, handler);
        this.#observe({ protocol, direction: 'in', outcome, seconds: (performance.now() - started) / 1000 });
      },
      { maxInboundStreams: options.maxInboundStreams ?? 64, runOnLimitedConnection: true },
    );
  }

  /**
   * Serves `protocol` as a raw stream, for bulk transfers that do not fit one frame (blocks):
   * `handler` reads and writes the stream itself (carrier/stream-reader.ts, sendBytes) and must
   * close it. `allow` refuses peers as in handle(). The handler's signal fires when the carrier
   * stops; time limits are the handler's to set.
   */
  async handleStream(protocol: string, handler: (stream: Stream, ctx: HandlerContext) => Promise<void>, options: { allow?: (peer: string) => boolean; maxInboundStreams?: number } = {}): Promise<void> {
    await this.node.handle(
      protocol,
      async (stream: Stream, connection: Connection) => {
        const peer = connection.remotePeer.toString();
        const started = performance.now();
        let outcome = 'ok';
        try {
          const limited = this.#limit(peer, protocol);
          if (limited !== undefined) {
            outcome = 'OURO_RATE_LIMITED';
            await this.#refuse(stream, { ok: false, code: outcome, message: limited });
            return;
          }
          if (options.allow && !options.allow(peer)) {
            outcome = 'refused';
            await this.#refuse(stream, refusal(peer, protocol));
            return;
          }
          await handler(stream, { peer, signal: this.#stopping.signal });
        } catch (err) {
          outcome = err instanceof OuroError ? err.code : 'error';
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        } finally {
          this.#observe({ protocol, direction: 'in', outcome, seconds: (performance.now() - started) / 1000 });
        }
      },
      { maxInboundStreams: options.maxInboundStreams ?? 16, runOnLimitedConnection: true },
    );
  }

  /** A new stream to `peer` for `protocol` (see handleStream); the caller closes it. */
  async openStream(peer: string | string[], protocol: string, signal: AbortSignal): Promise<Stream> {
    try {
      return await this.node.dialProtocol(target(peer), protocol, { signal: AbortSignal.any([signal, this.#stopping.signal]), runOnLimitedConnection: true });
    } catch (err) {
      if (signal.aborted) throw new TimeoutError(`${protocol} to ${String(peer)}: no stream`, { cause: err });
      throw new ProtocolError(`${protocol} to ${String(peer)}: ${err instanceof Error ? err.message : errorText(err)}`, { cause: err });
    }
  }

  /** One refusal `reply` (OURO_REFUSED, OURO_RATE_LIMITED), then the stream is closed both ways; the request is never read. */
  async #refuse(stream: Stream, reply: Reply): Promise<void> {
    const signal = AbortSignal.any([this.#stopping.signal, AbortSignal.timeout(this.#timeoutMs)]);
    try {
      await send(stream, encodeFrame(reply, this.#maxFrameBytes), signal);
      await stream.close({ signal });
      await stream.closeRead({ signal });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  async #serve(stream: Stream, peer: string, handler: Handler): Promise<string> {
    const signal = AbortSignal.any([this.#stopping.signal, AbortSignal.timeout(this.#timeoutMs)]);
    // A peer that opens a stream and never finishes its frame holds it only until the time limit.
    const onAbort = () => stream.abort(new TimeoutError(`request from ${peer} not answered within ${this.#timeoutMs} ms`));
    signal.addEventListener('abort', onAbort, { once: true });
    let reply: Reply;
    let outcome = 'ok';
    try {
      const request = await firstFrame(stream, this.#maxFrameBytes);
      try {
        reply = { ok: true, body: await handler(request, { peer, signal }) };
      } catch (err) {
        reply = errorReply(err, 'OURO_IO_ERROR');
      }
    } catch (err) {
      // A bad frame: tell the peer why if the stream still takes it, then close.
      reply = errorReply(err, 'OURO_PROTOCOL');
    }
    try {
      await send(stream, encodeFrame(reply, this.#maxFrameBytes), signal);
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      reply = { ok: false, code: 'OURO_PROTOCOL', message: 'reply not delivered' };
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (!reply.ok) outcome = reply.code;
    return outcome;
  }

  /**
   * Sends `message` to `peer` and returns its answer. `peer` is a multiaddr ending in /p2p/<id>,
   * a list of them (tried in turn), or the id of a peer already connected.
   */
  async request(peer: string | string[], protocol: string, message: unknown, options: RequestOptions = {}): Promise<unknown> {
    const started = performance.now();
    let outcome = 'ok';
    try {
      return await this.#request(peer, protocol, message, options);
    } catch (err) {
      outcome = err instanceof OuroError ? err.code : 'error';
      throw err;
    } finally {
      this.#observe({ protocol, direction: 'out', outcome, seconds: (performance.now() - started) / 1000 });
    }
  }

  async #request(peer: string | string[], protocol: string, message: unknown, options: RequestOptions): Promise<unknown> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const signals = [AbortSignal.timeout(timeoutMs), this.#stopping.signal];
    if (options.signal) signals.push(options.signal);
    const signal = AbortSignal.any(signals);
    let reply: Reply;
    try {
      const frame = encodeFrame(message, this.#maxFrameBytes);
      const key = peerKey(peer);
      reply =
        options.reuse !== false && key !== undefined && frame.length <= SESSION_MAX_REQUEST_BYTES
          ? await this.#viaSession(key, peer, protocol, message, signal, timeoutMs, options.signal)
          : await this.#viaStream(peer, protocol, frame, signal);
    } catch (err) {
      // One mapping for both ways: the caller's abort, then the time limit, then typed errors.
      if (options.signal?.aborted) throw options.signal.reason;
      if (signal.aborted && !this.#stopping.signal.aborted) throw new TimeoutError(`${protocol} to ${String(peer)}: no answer within ${timeoutMs} ms`, { cause: err });
      if (err instanceof OuroError) throw err;
      throw new ProtocolError(`${protocol} to ${String(peer)} failed: ${err instanceof Error ? err.message : errorText(err)}`, { cause: err });
    }
    return unwrapReply(reply, `${protocol} at ${String(peer)}`);
  }

  /** A stream of its own: one frame each way. */
  async #viaStream(peer: string | string[], protocol: string, frame: Uint8Array, signal: AbortSignal): Promise<Reply> {
    let stream: Stream | undefined;
    // Reading a stream does not watch the signal: abort the stream itself when it fires.
    const onAbort = () => stream?.abort(new Error('request aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      stream = await this.node.dialProtocol(target(peer), protocol, { signal, runOnLimitedConnection: true });
      // Read from the start: a stream's reader that begins after the peer closed its end never
      // sees that end (libp2p 3 signals it only to readers already listening).
      const replied = firstFrame(stream, this.#maxFrameBytes, signal);
      replied.catch(() => {});
      await send(stream, frame, signal);
      await stream.close({ signal });
      return (await replied) as Reply;
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Sends a small request on the shared session to `key` (#session). A request that never left,
   * and a session dial that failed within the time limit, are tried on a new session, up to
   * SESSION_SEND_ATTEMPTS sessions.
   */
  async #viaSession(key: string, peer: string | string[], protocol: string, message: unknown, signal: AbortSignal, timeoutMs: number, callerSignal: AbortSignal | undefined): Promise<Reply> {
    for (let attempt = 1; ; attempt++) {
      let open: ClientSession;
      try {
        open = await untilAborted(this.#session(key, peer, timeoutMs), signal);
      } catch (err) {
        // A dial that failed before the time ran out sent nothing either; it may have found the
        // connection that was going away when this request began (libp2p hands out a closing
        // connection until its close is processed).
        if (attempt < SESSION_SEND_ATTEMPTS && !signal.aborted) continue;
        throw err;
      }
      try {
        return await open.request(protocol, (id) => sessionFrame(id, protocol, message, this.#maxFrameBytes), signal);
      } catch (err) {
        // The request never left: the session closed, or its connection went away, after this
        // request took it (a session learns of a lost connection only when it next reads, and
        // then takes no new request). Sent again on a session dialed anew.
        if (err instanceof UnsentError) {
          if (attempt < SESSION_SEND_ATTEMPTS && !signal.aborted) continue;
          throw err.cause;
        }
        // No answer in time: the connection under the session may be dead without either side
        // having noticed (a peer process that was killed). Retire it: the next request dials anew,
        // and the requests still waiting on it keep their own time limits (ClientSession.retire).
        if (signal.aborted && !callerSignal?.aborted) open.retire();
        throw err;
      }
    }
  }

  /**
   * The shared session to `key`: the one being dialed or open, or, when it failed or closed
   * (known once it settles, which for an open one is at once), one dialed anew.
   */
  #session(key: string, peer: string | string[], timeoutMs: number): Promise<ClientSession> {
    const current = this.#sessions.get(key);
    if (!current) return this.#dialSession(key, peer, timeoutMs, undefined);
    return current.then(
      (s) => (s.closed ? this.#dialSession(key, peer, timeoutMs, current) : s),
      () => this.#dialSession(key, peer, timeoutMs, current),
    );
  }

  /** Dials a session to `key` in place of `replacing`, unless another request did so already (then that one). */
  #dialSession(key: string, peer: string | string[], timeoutMs: number, replacing: Promise<ClientSession> | undefined): Promise<ClientSession> {
    const now = this.#sessions.get(key);
    if (now !== undefined && now !== replacing) return now;
    // The session outlives this request, so the caller's signal does not end its dial; but the
    // dial has this request's time limit, so that one to an address that went stale (a peer
    // restarted on a new port) fails as fast as the request would, and the next request dials
    // the addresses known by then instead of waiting behind it.
    const dialSignal = AbortSignal.any([this.#stopping.signal, AbortSignal.timeout(timeoutMs)]);
    // dial, then newStream (what dialProtocol does), to keep the connection: the session asks its
    // status before each request (ClientSession).
    const options = { signal: dialSignal, runOnLimitedConnection: true };
    const opened = this.node.dial(target(peer), options).then(async (connection) => new ClientSession(await connection.newStream(SESSION_PROTOCOL, options), this.#maxFrameBytes, connection));
    this.#sessions.set(key, opened);
    const forget = () => {
      if (this.#sessions.get(key) === opened) this.#sessions.delete(key);
    };
    opened.then((s) => s.done.then(forget), forget);
    return opened;
  }

  async stop(): Promise<void> {
    this.#stopping.abort(new Error('carrier stopped'));
    this.#reservations?.stop();
    for (const s of this.#sessions.values()) void s.then((x) => x.close()).catch(() => {});
    this.#sessions.clear();
    await this.node.stop();
  }
}

/**
 * `p`, or the signal's reason if it fires first (`p` goes on; its failure is left handled).
 * Handled before anything else: a request made while the carrier stops (a node's background loop)
 * comes here with its signal already fired and a session dial that fails with 'carrier stopped';
 * left unhandled, that rejection would end an embedding application by Node's default.
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  p.catch(() => {});
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function target(peer: string | string[]): Multiaddr | Multiaddr[] | ReturnType<typeof peerIdFromString> {
  if (Array.isArray(peer)) {
    if (peer.length === 0) throw new BadArgumentError('no address to dial');
    return peer.map((a) => multiaddr(a));
  }
  return peer.startsWith('/') ? multiaddr(peer) : peerIdFromString(peer);
}


/** The first frame on the stream; the peer must not send more than one. */
async function firstFrame(stream: Stream, maxFrameBytes: number, signal?: AbortSignal): Promise<unknown> {
  for await (const message of decodeFrames(stream, maxFrameBytes)) {
    signal?.throwIfAborted();
    return message;
  }
  throw new ProtocolError('stream ended before a frame');
}

/** The body of a reply envelope, or the typed error it carries (`what` names the request). */
export function unwrapReply(reply: unknown, what: string): unknown {
  const r = reply as Reply | null;
  if (r === null || typeof r !== 'object' || typeof r.ok !== 'boolean') throw new ProtocolError(`${what}: malformed reply`);
  if (!r.ok) throw remoteError(r.code, `${what}: ${r.message}`);
  return r.body;
}

const KNOWN_CODES = new Set<string>(OURO_ERROR_CODES);

/** A typed error for a code a peer sent back (unknown codes become OURO_PROTOCOL). */
function remoteError(code: string, message: string): OuroError {
  if (code === 'OURO_REFUSED') return new RefusedError(message);
  if (code === 'OURO_RATE_LIMITED') return new RateLimitedError(message);
  return new OuroError((KNOWN_CODES.has(code) ? code : 'OURO_PROTOCOL') as OuroErrorCode, message);
}
