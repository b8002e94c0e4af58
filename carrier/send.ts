/**
 * Writing to a libp2p stream with backpressure. Every writer in the carrier goes through send(),
 * so none relies on Stream.onDrain() (see drained()).
 */
import type { Stream, StreamCloseEvent } from '@libp2p/interface';
import { ProtocolError } from '../lib/errors.js';

/**
 * A write the stream refused before taking any of its bytes (it was closed or closing): nothing
 * of it reached the peer, so it may be sent again elsewhere. `cause` is the stream's error.
 */
export class UnsentError extends Error {
  constructor(cause: unknown) {
    super(`not sent: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'UnsentError';
  }
}

/**
 * Writes `bytes`, waiting for the stream to drain when it asks to. A stream that refuses them
 * outright fails with UnsentError; once it took them, a failure (while draining) may come after
 * some reached the peer.
 */
export async function send(stream: Stream, bytes: Parameters<Stream['send']>[0], signal?: AbortSignal): Promise<void> {
  let more: boolean;
  try {
    more = stream.send(bytes);
  } catch (err) {
    throw new UnsentError(err);
  }
  if (!more) await drained(stream, signal);
}

/**
 * send(), resolving to whether `bytes` may be written over once it resolves: true only when the
 * stream was idle (nothing queued, no write in flight), handed the bytes to its transport at once
 * (nothing left queued), asked for a drain, and that drain came. The QUIC stream dispatches that
 * drain when its native write of exactly these bytes has completed, so no one holds them any
 * more. In every other case (a stream that queued them, or one that took them and asked for no
 * drain) the answer is false and the caller must leave the buffer alone.
 */
export async function sendReleasing(stream: Stream, bytes: Uint8Array, signal?: AbortSignal): Promise<boolean> {
  const idle = !stream.writableNeedsDrain && stream.writeBufferLength === 0;
  const more = stream.send(bytes);
  const handedOver = idle && !more && stream.writeBufferLength === 0;
  if (!more) await drained(stream, signal);
  return handedOver;
}

/**
 * Resolves at the stream's next 'drain' event (at once if it needs none); rejects if the stream
 * closes first or `signal` fires. Not Stream.onDrain(): @libp2p/utils 7.4 keeps the promise of
 * the first drain and hands that same, settled promise out again, so after one drain every
 * onDrain() resolves at once and a writer never waits again. A 64 MiB block push then queued up
 * to 35 MiB in the stream's write buffer, which the QUIC stream copied into one buffer to send
 * (docs/performance.md, "Replication: backpressure").
 */
export function drained(stream: Stream, signal?: AbortSignal): Promise<void> {
  if (!stream.writableNeedsDrain) return Promise.resolve();
  if (signal?.aborted) return Promise.reject(signal.reason as Error);
  if (stream.status !== 'open' && stream.status !== 'closing') return Promise.reject(new ProtocolError(`the stream is ${stream.status}: it will not drain`));
  return new Promise<void>((resolve, reject) => {
    const settle = (err?: unknown) => {
      stream.removeEventListener('drain', onDrain);
      stream.removeEventListener('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err instanceof Error ? err : new Error(String(err)));
    };
    const onDrain = () => settle();
    const onClose = (evt: StreamCloseEvent) => settle(evt.error ?? new ProtocolError('the stream closed before it drained'));
    const onAbort = () => settle(signal!.reason);
    stream.addEventListener('drain', onDrain);
    stream.addEventListener('close', onClose);
    signal?.addEventListener('abort', onAbort);
  });
}
