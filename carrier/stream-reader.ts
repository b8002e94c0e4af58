/**
 * Reading a bulk stream (block transfers): frames (carrier/frames.ts) and raw byte runs mixed on
 * one libp2p stream. The reader keeps what it has read past the current need, so a frame and the
 * bytes that follow it may arrive in one piece. Memory: at most one piece beyond what is asked.
 */
import { ProtocolError } from '../lib/errors.js';
import { FRAME_HEAD_BYTES, decodeFrameBody } from './frames.js';

/** What a libp2p stream yields: bytes, or a Uint8ArrayList (iterable over its buffers). */
type Piece = Uint8Array | (Iterable<Uint8Array> & { subarray(): Uint8Array });

export class StreamReader {
  readonly #source: AsyncIterator<Piece>;
  #buffered: Uint8Array[] = [];
  #bufferedBytes = 0;

  constructor(source: AsyncIterable<Piece>) {
    this.#source = source[Symbol.asyncIterator]();
  }

  /** Reads until `n` bytes are buffered; false if the stream ended first. */
  async #fill(n: number): Promise<boolean> {
    while (this.#bufferedBytes < n) {
      const r = await this.#source.next();
      if (r.done) return false;
      // A list's buffers are taken one by one: its subarray() would copy them into one.
      for (const bytes of r.value instanceof Uint8Array ? [r.value] : r.value) {
        if (bytes.length === 0) continue;
        this.#buffered.push(bytes);
        this.#bufferedBytes += bytes.length;
      }
    }
    return true;
  }

  #take(n: number): Uint8Array {
    const first = this.#buffered[0]!;
    if (first.length >= n) {
      this.#bufferedBytes -= n;
      if (first.length === n) this.#buffered.shift();
      else this.#buffered[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const piece = this.#buffered[0]!;
      const k = Math.min(piece.length, n - at);
      out.set(piece.subarray(0, k), at);
      at += k;
      if (k === piece.length) this.#buffered.shift();
      else this.#buffered[0] = piece.subarray(k);
    }
    this.#bufferedBytes -= n;
    return out;
  }

  /** The next frame; ProtocolError if it is oversized, malformed, or the stream ends in it. */
  async frame(maxBytes: number): Promise<unknown> {
    if (!(await this.#fill(FRAME_HEAD_BYTES))) throw new ProtocolError(this.#bufferedBytes === 0 ? 'stream ended before a frame' : 'stream ended in the middle of a frame');
    const head = this.#take(FRAME_HEAD_BYTES);
    const length = new DataView(head.buffer, head.byteOffset, FRAME_HEAD_BYTES).getUint32(0);
    if (length > maxBytes) throw new ProtocolError(`peer announced a frame of ${length} bytes; the maximum is ${maxBytes}`);
    if (!(await this.#fill(length))) throw new ProtocolError('stream ended in the middle of a frame');
    return decodeFrameBody(this.#take(length));
  }

  /** Exactly `n` raw bytes, in the pieces they arrive in; ProtocolError if the stream ends first. */
  async *bytes(n: number): AsyncGenerator<Uint8Array> {
    let left = n;
    while (left > 0) {
      if (this.#bufferedBytes === 0 && !(await this.#fill(1))) throw new ProtocolError(`stream ended ${left} bytes short`);
      const piece = this.#take(Math.min(left, this.#buffered[0]!.length));
      left -= piece.length;
      yield piece;
    }
  }
}
