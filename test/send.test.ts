/**
 * Backpressure on libp2p streams (carrier/send.ts): a writer that goes through send() never has
 * more than the piece in hand queued in the stream, over real QUIC, and drained() waits for the
 * next drain every time (libp2p's own Stream.onDrain() stops waiting after the first).
 */
import crypto from 'node:crypto';
import type { Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import { Carrier } from '../carrier/index.js';
import { drained, send, sendReleasing } from '../carrier/send.js';
import { pseudoRandom, tempDir } from './helpers.js';

const carriers: Carrier[] = [];
afterEach(async () => {
  await Promise.all(carriers.splice(0).map((c) => c.stop().catch(() => {})));
});

/** A stand-in with the Stream members drained() uses. */
class FakeStream extends EventTarget {
  writableNeedsDrain = true;
  status = 'open';
  drain(): void {
    this.writableNeedsDrain = false;
    this.dispatchEvent(new Event('drain'));
  }
}

const settledSoon = async (p: Promise<unknown>): Promise<string> => {
  const state = await Promise.race([p.then(() => 'resolved', (e: unknown) => `rejected: ${(e as Error).message}`), new Promise<string>((r) => setTimeout(() => r('pending'), 30))]);
  return state;
};

describe('send() and drained()', () => {
  it('waits for the next drain each time, not only the first', async () => {
    const s = new FakeStream();
    const first = drained(s as unknown as Stream);
    expect(await settledSoon(first)).toBe('pending');
    s.drain();
    expect(await settledSoon(first)).toBe('resolved');
    s.writableNeedsDrain = true; // the next send filled the transport again
    const second = drained(s as unknown as Stream);
    expect(await settledSoon(second)).toBe('pending');
    s.drain();
    expect(await settledSoon(second)).toBe('resolved');
    s.writableNeedsDrain = false;
    expect(await settledSoon(drained(s as unknown as Stream))).toBe('resolved'); // nothing to wait for
  });

  it('gives up when the stream closes or the signal fires, and refuses a stream already closed', async () => {
    const s = new FakeStream();
    const closing = drained(s as unknown as Stream);
    const closed = Object.assign(new Event('close'), { error: new Error('reset by peer') });
    s.dispatchEvent(closed);
    expect(await settledSoon(closing)).toBe('rejected: reset by peer');
    const abort = new AbortController();
    const aborted = drained(s as unknown as Stream, abort.signal);
    abort.abort(new Error('time limit'));
    expect(await settledSoon(aborted)).toBe('rejected: time limit');
    s.status = 'reset';
    expect(await settledSoon(drained(s as unknown as Stream))).toMatch(/^rejected: the stream is reset/);
  });

  it('over real QUIC, a writer never has more than one piece queued, and every byte arrives', async () => {
    const [a, b] = await Promise.all([Carrier.start({ dir: tempDir() }), Carrier.start({ dir: tempDir() })]);
    carriers.push(a, b);
    let received = 0;
    const done = new Promise<void>((resolve) => {
      void b.node.handle('/ouro-test/slow-sink/1', async (stream: Stream) => {
        // A slow reader: QUIC's flow control makes the writer wait.
        for await (const piece of stream) {
          received += piece.byteLength;
          await new Promise((r) => setTimeout(r, 1));
        }
        await stream.close();
        resolve();
      });
    });
    const stream = await a.node.dialProtocol(multiaddr(b.addresses[0]!), '/ouro-test/slow-sink/1');
    const piece = new Uint8Array(256 * 1024).fill(9);
    const total = 24 * 1024 * 1024;
    let mostQueued = 0;
    for (let sent = 0; sent < total; sent += piece.length) {
      await send(stream, piece);
      mostQueued = Math.max(mostQueued, stream.writeBufferLength);
    }
    await stream.close();
    await done;
    expect(received).toBe(total);
    expect(mostQueued).toBeLessThanOrEqual(piece.length);
  });

  it('over real QUIC, a buffer sendReleasing() gives back is free: scribbling on it at once corrupts nothing', async () => {
    const [a, b] = await Promise.all([Carrier.start({ dir: tempDir() }), Carrier.start({ dir: tempDir() })]);
    carriers.push(a, b);
    const received = new Promise<string>((resolve) => {
      void b.node.handle('/ouro-test/digest-sink/1', async (stream: Stream) => {
        const h = crypto.createHash('sha256');
        for await (const piece of stream) {
          h.update(piece.subarray());
          await new Promise((r) => setTimeout(r, 1)); // slow enough that QUIC pushes back
        }
        await stream.close();
        resolve(h.digest('hex'));
      });
    });
    const stream = await a.node.dialProtocol(multiaddr(b.addresses[0]!), '/ouro-test/digest-sink/1');
    const data = pseudoRandom('releasing', 16 * 1024 * 1024);
    const piece = 256 * 1024;
    const buffers = [Buffer.alloc(piece), Buffer.alloc(piece)];
    let released = 0;
    for (let at = 0, i = 0; at < data.length; at += piece, i++) {
      const buf = buffers[i % 2]!;
      data.copy(buf, 0, at, at + piece);
      if (await sendReleasing(stream, buf)) {
        released++;
        buf.fill(0xee); // the stream said it let go: this must not reach the wire
      } else {
        buffers[i % 2] = Buffer.alloc(piece); // not released: never touch it again
      }
    }
    await stream.close();
    expect(await received).toBe(crypto.createHash('sha256').update(data).digest('hex'));
    expect(released).toBeGreaterThan(data.length / piece / 2); // the reuse path did run
  });
});
