/**
 * Content-defined chunking: FastCDC (Xia et al., 2016/2020) with normalized chunking level 2.
 *
 * A gear hash `h = (h << 1) + G[byte]` rolls over the input; a cut is made where the hash's top
 * bits are all zero. Before the average size a harder mask (log2(avg) + 2 bits) is used, after it
 * an easier one (log2(avg) - 2 bits), which concentrates chunk sizes around the average. No cut is
 * looked for in the first `min` bytes of a chunk (they are not even hashed: that skip is most of
 * FastCDC's speed), and a chunk never exceeds `max`.
 *
 * The 32-bit hash's top bits depend on the last 32 bytes, so the masks use the top bits. The gear
 * table is derived from the database key (see DatabaseKeys.gear): with a public table, the lengths
 * of ciphertexts would let someone holding only replicas recognise known files by their chunk
 * boundaries (the reason borg keys its chunker and restic randomises its polynomial).
 *
 * Sizes were chosen with bench/chunking (versioned data; see docs/design.md).
 */
import { BadArgumentError } from './errors.js';

export interface ChunkSizes {
  min: number;
  avg: number;
  max: number;
}

export const DEFAULT_CHUNK_SIZES: ChunkSizes = { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024 };

export function validateChunkSizes(s: ChunkSizes): ChunkSizes {
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(s.avg) || s.avg < 256 || !Number.isInteger(s.min) || !Number.isInteger(s.max) || s.min < 64 || s.min >= s.avg || s.max <= s.avg || s.max > 64 * 1024 * 1024) {
    throw new BadArgumentError('chunk sizes need 64 <= min < avg < max <= 64 MiB with avg a power of two >= 256');
  }
  return s;
}

function topBitsMask(bits: number): number {
  return (0xffffffff << (32 - bits)) | 0;
}

export class Chunker {
  readonly sizes: ChunkSizes;
  readonly #gear: Uint32Array;
  readonly #maskS: number;
  readonly #maskL: number;

  constructor(gear: Uint32Array, sizes: ChunkSizes = DEFAULT_CHUNK_SIZES) {
    if (gear.length !== 256) throw new RangeError('gear table must have 256 entries');
    this.sizes = validateChunkSizes(sizes);
    this.#gear = gear;
    const bits = Math.log2(sizes.avg);
    this.#maskS = topBitsMask(bits + 2);
    this.#maskL = topBitsMask(bits - 2);
  }

  /**
   * Length of the next chunk of buf[start, end). Only call with end - start >= max, or at the end
   * of the input: the answer depends on up to `max` bytes after `start`.
   */
  cut(buf: Uint8Array, start: number, end: number): number {
    const { min, avg, max } = this.sizes;
    const n = end - start;
    if (n <= min) return n;
    const normal = start + Math.min(avg, n);
    const limit = start + Math.min(max, n);
    const gear = this.#gear;
    const maskS = this.#maskS;
    const maskL = this.#maskL;
    let h = 0;
    let i = start + min;
    // Two bytes per iteration, each still checked: the same cuts as the one-byte loop (tested),
    // with half the loop overhead. A one-off same-process comparison on 256 MiB measured ~520-620
    // vs ~740-1020 MiB/s; the committed case is `npm run bench -- --only micro` (noisy here).
    for (; i + 1 < normal; i += 2) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskS) === 0) return i - start + 1;
      h = ((h << 1) + gear[buf[i + 1]!]!) | 0;
      if ((h & maskS) === 0) return i - start + 2;
    }
    for (; i < normal; i++) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskS) === 0) return i - start + 1;
    }
    for (; i + 1 < limit; i += 2) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskL) === 0) return i - start + 1;
      h = ((h << 1) + gear[buf[i + 1]!]!) | 0;
      if ((h & maskL) === 0) return i - start + 2;
    }
    for (; i < limit; i++) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskL) === 0) return i - start + 1;
    }
    return limit - start;
  }

  /** Chunks of one in-memory value, as views into it (no copy). */
  *chunkBytes(data: Uint8Array): Generator<Uint8Array> {
    let start = 0;
    while (start < data.length) {
      const len = this.cut(data, start, data.length);
      yield data.subarray(start, start + len);
      start += len;
    }
  }

  /**
   * Chunks of a stream, each in its own freshly allocated buffer (so it may be transferred to a
   * worker or kept after the source moves on). Holds at most 2 * max bytes of the source.
   */
  async *chunkStream(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
    const { max } = this.sizes;
    const buf = Buffer.allocUnsafe(2 * max);
    let start = 0;
    let end = 0;
    for await (const piece of source) {
      if (!(piece instanceof Uint8Array)) throw new BadArgumentError('stream yielded something other than bytes');
      let off = 0;
      while (off < piece.length) {
        if (end === buf.length) {
          buf.copyWithin(0, start, end);
          end -= start;
          start = 0;
        }
        const take = Math.min(piece.length - off, buf.length - end);
        buf.set(piece.subarray(off, off + take), end);
        end += take;
        off += take;
        while (end - start >= max) {
          const len = this.cut(buf, start, end);
          yield copyOut(buf, start, len);
          start += len;
        }
      }
    }
    while (end > start) {
      const len = this.cut(buf, start, end);
      yield copyOut(buf, start, len);
      start += len;
    }
  }
}

function copyOut(buf: Buffer, start: number, len: number): Buffer {
  // allocUnsafeSlow: never a slice of Node's shared pool, so the buffer owns its ArrayBuffer.
  const out = Buffer.allocUnsafeSlow(len);
  buf.copy(out, 0, start, start + len);
  return out;
}
