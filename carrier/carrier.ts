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
 */
import { quic } from '@chainsafe/libp2p-quic';
import type { Connection, PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { type Libp2p, createLibp2p } from 'libp2p';
import { BadArgumentError, OURO_ERROR_CODES, OuroError, ProtocolError, RefusedError, TimeoutError, type OuroErrorCode } from '../lib/errors.js';
import { DEFAULT_MAX_FRAME_BYTES, decodeFrames, encodeFrame } from './frames.js';
import { loadIdentity } from './identity.js';

export interface CarrierOptions {
  /** The node's data directory: its identity lives here. */
  dir: string;
  /** Multiaddrs to listen on (default: QUIC on 127.0.0.1, a free port). */
  listen?: string[];
  /** Seals the identity file (the database key, where the node has one). */
  identityKey?: Uint8Array;
  /** Largest frame accepted or sent (default 4 MiB). */
  maxFrameBytes?: number;
  /** Default time limit of a request, in ms (default 10 s). */
  requestTimeoutMs?: number;
  /** Called once per finished request, served or sent (metrics plug in here). */
  observe?: (event: RequestEvent) => void;
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
}

export interface HandlerContext {
  /** The requesting peer's id. */
  peer: string;
  signal: AbortSignal;
}

export type Handler = (message: unknown, ctx: HandlerContext) => Promise<unknown> | unknown;

/** The envelope of every response frame. */
type Reply = { ok: true; body: unknown } | { ok: false; code: string; message: string };

export const DEFAULT_LISTEN = ['/ip4/127.0.0.1/udp/0/quic-v1'];

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

  private constructor(node: Libp2p, options: CarrierOptions) {
    this.node = node;
    this.#observe = options.observe ?? (() => {});
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#timeoutMs = options.requestTimeoutMs ?? 10_000;
  }

  static async start(options: CarrierOptions): Promise<Carrier> {
    const privateKey: PrivateKey = await loadIdentity(options.dir, options.identityKey);
    const node = await createLibp2p({
      privateKey,
      addresses: { listen: options.listen ?? DEFAULT_LISTEN },
      transports: [quic()],
    });
    return new Carrier(node, options);
  }

  get peerId(): string {
    return this.node.peerId.toString();
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
    await this.node.handle(
      protocol,
      async (stream: Stream, connection: Connection) => {
        const peer = connection.remotePeer.toString();
        const started = performance.now();
        if (options.allow && !options.allow(peer)) {
          await this.#refuse(stream, peer, protocol);
          this.#observe({ protocol, direction: 'in', outcome: 'refused', seconds: (performance.now() - started) / 1000 });
          return;
        }
        const outcome = await this.#serve(stream, peer, handler);
        this.#observe({ protocol, direction: 'in', outcome, seconds: (performance.now() - started) / 1000 });
      },
      { maxInboundStreams: options.maxInboundStreams ?? 64 },
    );
  }

  /** One OURO_REFUSED reply, then the stream is closed both ways; the request is never read. */
  async #refuse(stream: Stream, peer: string, protocol: string): Promise<void> {
    const reply: Reply = { ok: false, code: 'OURO_REFUSED', message: `peer ${peer} is not an approved member and may not use ${protocol}` };
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
        reply = { ok: false, code: err instanceof OuroError ? err.code : 'OURO_IO_ERROR', message: err instanceof Error ? err.message : String(err) };
      }
    } catch (err) {
      // A bad frame: tell the peer why if the stream still takes it, then close.
      reply = { ok: false, code: err instanceof OuroError ? err.code : 'OURO_PROTOCOL', message: err instanceof Error ? err.message : String(err) };
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
    const frame = encodeFrame(message, this.#maxFrameBytes);
    let stream: Stream | undefined;
    // Reading a stream does not watch the signal: abort the stream itself when it fires.
    const onAbort = () => stream?.abort(new Error('request aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      stream = await this.node.dialProtocol(target(peer), protocol, { signal });
      // Read from the start: a stream's reader that begins after the peer closed its end never
      // sees that end (libp2p 3 signals it only to readers already listening).
      const replied = firstFrame(stream, this.#maxFrameBytes, signal);
      replied.catch(() => {});
      await send(stream, frame, signal);
      await stream.close({ signal });
      const reply = (await replied) as Reply;
      if (reply === null || typeof reply !== 'object' || typeof reply.ok !== 'boolean') throw new ProtocolError(`${protocol}: malformed reply`);
      if (!reply.ok) throw remoteError(reply.code, `${protocol} at ${peer}: ${reply.message}`);
      return reply.body;
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)));
      if (err instanceof OuroError) throw err;
      if (options.signal?.aborted) throw options.signal.reason;
      if (signal.aborted && !this.#stopping.signal.aborted) throw new TimeoutError(`${protocol} to ${peer}: no answer within ${timeoutMs} ms`, { cause: err });
      throw new ProtocolError(`${protocol} to ${peer} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  async stop(): Promise<void> {
    this.#stopping.abort(new Error('carrier stopped'));
    await this.node.stop();
  }
}

function target(peer: string | string[]): Multiaddr | Multiaddr[] | ReturnType<typeof peerIdFromString> {
  if (Array.isArray(peer)) {
    if (peer.length === 0) throw new BadArgumentError('no address to dial');
    return peer.map((a) => multiaddr(a));
  }
  return peer.startsWith('/') ? multiaddr(peer) : peerIdFromString(peer);
}

/** Writes `bytes`, waiting for the stream to drain when it asks to. */
async function send(stream: Stream, bytes: Uint8Array, signal: AbortSignal): Promise<void> {
  if (!stream.send(bytes)) await stream.onDrain({ signal });
}

/** The first frame on the stream; the peer must not send more than one. */
async function firstFrame(stream: Stream, maxFrameBytes: number, signal?: AbortSignal): Promise<unknown> {
  for await (const message of decodeFrames(stream, maxFrameBytes)) {
    signal?.throwIfAborted();
    return message;
  }
  throw new ProtocolError('stream ended before a frame');
}

const KNOWN_CODES = new Set<string>(OURO_ERROR_CODES);

/** A typed error for a code a peer sent back (unknown codes become OURO_PROTOCOL). */
function remoteError(code: string, message: string): OuroError {
  if (code === 'OURO_REFUSED') return new RefusedError(message);
  return new OuroError((KNOWN_CODES.has(code) ? code : 'OURO_PROTOCOL') as OuroErrorCode, message);
}
