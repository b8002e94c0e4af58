/**
 * How the gateway writes an object's bytes into an answer (carrier/s3/context.ts sendBody): read
 * ahead by one piece, no further while the socket does not drain, the source closed when the
 * client goes away.
 */
import type http from 'node:http';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { type Ctx, sendBody } from '../carrier/s3/context.js';

/** A response whose socket takes one write and then does not drain until `release()`. */
function stalledResponse(): { res: http.ServerResponse; written: Buffer[]; release: () => void } {
  const written: Buffer[] = [];
  let pending: (() => void) | undefined;
  const res = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, callback) {
      written.push(chunk);
      pending = callback;
    },
  });
  return { res: res as unknown as http.ServerResponse, written, release: () => { const p = pending; pending = undefined; p?.(); } };
}

/** `count` pieces of 1 KiB, counting how many were read and whether the source was closed. */
function source(count: number) {
  const state = { read: 0, closed: false };
  const gen = (async function* () {
    try {
      for (let i = 0; i < count; i++) {
        state.read++;
        yield Buffer.alloc(1024, i);
      }
    } finally {
      state.closed = true;
    }
  })();
  return { gen, state };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

describe('sendBody', () => {
  it('reads at most one piece ahead of a socket that does not drain, and sends every byte once it does', async () => {
    const { res, written, release } = stalledResponse();
    const { gen, state } = source(50);
    const ctx = { res, bytesOut: 0 } as unknown as Ctx;
    const done = sendBody(ctx, gen);
    await settle();
    // One piece written (the socket took it and is over its mark), one read ahead: no more.
    expect(written).toHaveLength(1);
    expect(state.read).toBe(2);
    while (!res.writableFinished) {
      release();
      await settle();
      expect(state.read - written.length).toBeLessThanOrEqual(1);
      if (written.length === 50) release();
    }
    await done;
    expect(Buffer.concat(written).equals(Buffer.concat(Array.from({ length: 50 }, (_, i) => Buffer.alloc(1024, i))))).toBe(true);
    expect(ctx.bytesOut).toBe(50 * 1024);
  });

  it('stops reading and closes the source when the client goes away', async () => {
    const { res, written } = stalledResponse();
    const { gen, state } = source(50);
    const done = sendBody({ res, bytesOut: 0 } as unknown as Ctx, gen);
    await settle();
    expect(written).toHaveLength(1);
    res.destroy();
    await done;
    expect(state.closed).toBe(true);
    expect(state.read).toBe(2);
  });
});
