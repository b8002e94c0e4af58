/**
 * Stream reuse: one long-lived stream per peer (`/ouro/session/1`) carrying many small requests
 * of any carrier protocol, each tagged with an id, answered in any order. Opening a QUIC stream
 * through libp2p costs ~2 ms here against ~0.3 ms for a round trip on an open one
 * (bench/carrier.ts), so requests with small frames (heartbeats, lookups) go this way; large ones
 * keep a stream each, so that a big transfer never holds small requests up behind it.
 *
 * Frames (carrier/frames.ts) on a session: request `{ id, p: protocol, m: message }`, reply
 * `{ id, r: reply envelope }` (docs/FORMAT.md). Each request passes its protocol's own `allow`
 * check (and the carrier's rate limit first); a refused one gets its OURO_REFUSED (or
 * OURO_RATE_LIMITED) reply and the whole session is closed, as a refused stream is. A malformed frame closes the session with OURO_PROTOCOL for every request on it.
 */
import type { Connection, Stream } from '@libp2p/interface';
import { OuroError, ProtocolError, RefusedError, errorText } from '../lib/errors.js';
import { type Reply, decodeFrames, encodeFrame, errorReply, refusal } from './frames.js';
import { UnsentError, send } from './send.js';

export const SESSION_PROTOCOL = '/ouro/session/1';
/** Requests whose frame is larger than this get a stream of their own. */
export const SESSION_MAX_REQUEST_BYTES = 64 * 1024;

export interface Served {
  handler: (message: unknown, ctx: { peer: string; signal: AbortSignal }) => Promise<unknown> | unknown;
  allow?: (peer: string) => boolean;
}

export interface SessionContext {
  maxFrameBytes: number;
  timeoutMs: number;
  stopping: AbortSignal;
  lookup(protocol: string): Served | undefined;
  /** A message when the peer may not make a request on `protocol` now (Carrier's `limit`). */
  limit(protocol: string): string | undefined;
  observe(protocol: string, outcome: string, seconds: number): void;
}

/** Writes frames one at a time, waiting for the stream to drain when it asks to. */
class Writer {
  #chain: Promise<void> = Promise.resolve();
  constructor(readonly stream: Stream) {}
  write(bytes: Uint8Array): Promise<void> {
    const run = this.#chain.then(async () => {
      await send(this.stream, bytes);
    });
    this.#chain = run.catch(() => {});
    return run;
  }
}

/** The serving side of one session stream. */
export async function serveSession(stream: Stream, peer: string, ctx: SessionContext): Promise<void> {
  const writer = new Writer(stream);
  const reply = (id: number, r: Reply) => writer.write(encodeFrame({ id, r }, ctx.maxFrameBytes)).catch((err: unknown) => stream.abort(err instanceof Error ? err : new Error(String(err))));
  const running = new Set<Promise<void>>();
  try {
    for await (const frame of decodeFrames(stream, ctx.maxFrameBytes)) {
      const f = frame as { id?: unknown; p?: unknown; m?: unknown } | null;
      if (f === null || typeof f !== 'object' || !Number.isSafeInteger(f.id) || typeof f.p !== 'string') throw new ProtocolError('malformed session request');
      const id = f.id as number;
      const protocol = f.p;
      const served = ctx.lookup(protocol);
      if (!served) {
        void reply(id, { ok: false, code: 'OURO_PROTOCOL', message: `protocol ${protocol} is not served` });
        continue;
      }
      const limited = ctx.limit(protocol);
      const refused = limited === undefined && served.allow && !served.allow(peer);
      if (limited !== undefined || refused) {
        ctx.observe(protocol, limited !== undefined ? 'OURO_RATE_LIMITED' : 'refused', 0);
        await reply(id, limited !== undefined ? { ok: false, code: 'OURO_RATE_LIMITED', message: limited } : refusal(peer, protocol));
        await stream.close().catch(() => {});
        await stream.closeRead().catch(() => {});
        return;
      }
      const started = performance.now();
      const signal = AbortSignal.any([ctx.stopping, AbortSignal.timeout(ctx.timeoutMs)]);
      const task = (async () => {
        let r: Reply;
        try {
          r = { ok: true, body: await served.handler(f.m, { peer, signal }) };
        } catch (err) {
          r = errorReply(err, 'OURO_IO_ERROR');
        }
        ctx.observe(protocol, r.ok ? 'ok' : r.code, (performance.now() - started) / 1000);
        await reply(id, r);
      })();
      running.add(task);
      void task.finally(() => running.delete(task));
    }
    await Promise.allSettled([...running]);
    await stream.close();
  } catch (err) {
    // A bad frame: nothing on this session can be trusted any more.
    stream.abort(err instanceof Error ? err : new Error(String(err)));
  }
}

interface Waiting {
  resolve: (r: Reply) => void;
  reject: (err: unknown) => void;
}

/** The requesting side: one session to one peer, shared by every request to it. */
export class ClientSession {
  readonly #stream: Stream;
  readonly #connection: Pick<Connection, 'status'> | undefined;
  readonly #writer: Writer;
  readonly #waiting = new Map<number, Waiting>();
  #nextId = 1;
  #closed: Error | undefined;
  #retired = false;
  readonly done: Promise<void>;

  /**
   * `connection`: the connection under `stream`. A connection aborted on this side (a lost
   * connection libp2p noticed, or an operator's abort) is known at once from its status, while
   * the stream may learn of it only when it next reads: a frame sent meanwhile would be accepted
   * into a stream whose transport is gone, and its request fail as "closed by the peer" although
   * it never left.
   */
  constructor(stream: Stream, maxFrameBytes: number, connection?: Pick<Connection, 'status'>) {
    this.#stream = stream;
    this.#connection = connection;
    this.#writer = new Writer(stream);
    // Read from the start: libp2p 3 signals a remote close only to readers already listening.
    this.done = (async () => {
      try {
        for await (const frame of decodeFrames(stream, maxFrameBytes)) {
          const f = frame as { id?: unknown; r?: Reply } | null;
          const id = f !== null && typeof f === 'object' && Number.isSafeInteger(f.id) && (f.id as number) > 0 && (f.id as number) < this.#nextId ? (f.id as number) : undefined;
          if (id === undefined || f!.r === null || typeof f!.r !== 'object' || typeof f!.r.ok !== 'boolean') throw new ProtocolError('malformed session reply');
          const w = this.#waiting.get(id);
          // No one waiting: the reply to a request its caller gave up on (its time ran out). The
          // peer was slow, not wrong; the session goes on.
          if (!w) continue;
          this.#waiting.delete(id);
          w.resolve(f!.r);
          this.#closeIfIdle();
          // The server closes a session after refusing: nothing more may go on it.
          if (!f!.r.ok && f!.r.code === 'OURO_REFUSED') this.#fail(new RefusedError(f!.r.message));
        }
        this.#fail(new ProtocolError('session closed by the peer'));
      } catch (err) {
        this.#fail(err instanceof OuroError ? err : new ProtocolError(`session failed: ${err instanceof Error ? err.message : errorText(err)}`, { cause: err }));
      }
    })();
  }

  /** Closed, or retired: either way it takes no new request. */
  get closed(): boolean {
    return this.#closed !== undefined || this.#retired || this.#connectionGone;
  }

  get #connectionGone(): boolean {
    return this.#connection !== undefined && this.#connection.status !== 'open';
  }

  /**
   * Takes no new request, and closes once every request in flight is answered or given up. For a
   * session whose peer let a request's time run out: the connection may be dead (a killed peer),
   * so new requests go on a session dialed anew; but the peer may only be slow (stopped for a
   * while, or loaded), and closing at once would fail every other request waiting on it, each
   * within its own time limit (a proof of storage then got no verdict instead of `late`).
   */
  retire(): void {
    this.#retired = true;
    this.#closeIfIdle();
  }

  #closeIfIdle(): void {
    if (this.#retired && this.#waiting.size === 0) this.#fail(new ProtocolError('session closed'));
  }

  #fail(err: Error): void {
    this.#closed ??= err;
    for (const w of this.#waiting.values()) w.reject(err);
    this.#waiting.clear();
    this.#stream.abort(err);
  }

  /**
   * Sends one request; resolves with the reply envelope. The signal drops the wait, not the
   * session. Fails with UnsentError when the request never left (the session was closed, or its
   * stream refused the frame): the caller may send it on another session.
   */
  async request(protocol: string, frameOf: (id: number) => Uint8Array, signal: AbortSignal): Promise<Reply> {
    if (this.#closed) throw new UnsentError(this.#closed);
    if (this.#retired) throw new UnsentError(new ProtocolError('session closed'));
    if (this.#connectionGone) {
      this.#retired = true;
      throw new UnsentError(new ProtocolError(`session's connection is ${this.#connection!.status}`));
    }
    const id = this.#nextId++;
    const reply = new Promise<Reply>((resolve, reject) => this.#waiting.set(id, { resolve, reject }));
    reply.catch(() => {}); // awaited below unless the write fails first
    const onAbort = () => {
      const w = this.#waiting.get(id);
      this.#waiting.delete(id);
      w?.reject(signal.reason);
      this.#closeIfIdle();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.#writer.write(frameOf(id));
      return await reply;
    } catch (err) {
      this.#waiting.delete(id);
      // A stream that refuses a write takes none after it: no new request here (retire), while
      // any still waiting may yet be answered.
      if (err instanceof UnsentError) this.#retired = true;
      this.#closeIfIdle();
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  close(): void {
    this.#fail(new ProtocolError('session closed'));
  }
}

export const sessionFrame = (id: number, protocol: string, message: unknown, maxFrameBytes: number) => encodeFrame({ id, p: protocol, m: message }, maxFrameBytes);
