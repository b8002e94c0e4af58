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
 * The loop itself runs in WebAssembly (lib/gear.wat): in one process on 64 MiB of random data it
 * cut at ~2,000 MiB/s, copy into its memory included, where the JavaScript loop it replaces did
 * ~750 MiB/s, and in a streamed ingest the main thread spent more time cutting than on anything
 * else (docs/performance.md). test/chunker.test.ts checks its cuts against the plain loop.
 *
 * Sizes were chosen with bench/chunking (versioned data; see docs/design.md).
 */
import { BadArgumentError } from './errors.js';
import { GEAR_WASM } from './gear-wasm.js';

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

/** Where input starts in a scanner's memory: the gear table takes the first 1 KiB. */
const WINDOW_AT = 1024;
const WASM_PAGE = 64 * 1024;
/** The parts of the WebAssembly JS API used here (TypeScript declares it only in its DOM lib). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
const gearModule = new wasm.Module(GEAR_WASM);
/** Idle scanners a chunker keeps (each holds a window of 2 * max bytes). */
const IDLE_SCANNERS = 2;

/**
 * One instance of the gear loop (lib/gear.wat) with a memory of its own: the gear table, then a
 * window of 2 * max input bytes. WebAssembly reads only its own memory, so input is copied into
 * the window first; a memcpy costs a small fraction of the scan it saves.
 */
class Scanner {
  readonly window: Buffer;
  readonly scan: (i: number, normal: number, limit: number, maskS: number, maskL: number) => number;

  constructor(gear: Uint32Array, windowBytes: number) {
    const memory = new wasm.Memory({ initial: Math.ceil((WINDOW_AT + windowBytes) / WASM_PAGE) });
    const table = new DataView(memory.buffer, 0, WINDOW_AT);
    for (let k = 0; k < 256; k++) table.setUint32(4 * k, gear[k]!, true);
    const instance = new wasm.Instance(gearModule, { env: { memory } });
    this.scan = instance.exports['scan'] as Scanner['scan'];
    this.window = Buffer.from(memory.buffer, WINDOW_AT, windowBytes);
  }
}

export class Chunker {
  readonly sizes: ChunkSizes;
  readonly #gear: Uint32Array;
  readonly #maskS: number;
  readonly #maskL: number;
  readonly #idle: Scanner[] = [];

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
   * of the input: the answer depends on up to `max` bytes after `start`. (chunkBytes and
   * chunkStream cut in a scanner's window without this call's copy.)
   */
  cut(buf: Uint8Array, start: number, end: number): number {
    const n = Math.min(end - start, this.sizes.max);
    const s = this.#scanner();
    try {
      s.window.set(buf.subarray(start, start + n), 0);
      return this.#cutWindow(s, 0, n);
    } finally {
      this.#done(s);
    }
  }

  /**
   * Chunks of one in-memory value, as views into it (no copy). Every cut is found before the
   * first chunk is yielded, so the scanner goes back at once: a caller storing each chunk before
   * asking for the next (a put) held one for its whole put, and 64 concurrent puts of files of
   * 4-64 KiB made a scanner (a WebAssembly instance with 2 MiB of memory) for most of them:
   * garbage collection took 1,029 of 7,070 ms of the main thread in a profile of such puts. A
   * value of at most `min` bytes is one chunk and needs no scanner at all.
   */
  *chunkBytes(data: Uint8Array): Generator<Uint8Array> {
    let start = 0;
    for (const len of this.#cuts(data)) {
      yield data.subarray(start, start + len);
      start += len;
    }
  }

  /** The chunk lengths of an in-memory value, in order. */
  #cuts(data: Uint8Array): number[] {
    const { min, max } = this.sizes;
    if (data.length <= min) return data.length === 0 ? [] : [data.length];
    const lengths: number[] = [];
    const s = this.#scanner();
    try {
      const win = s.window;
      let start = 0; // where the next chunk starts, in data
      let from = 0; // the data offset win[0] holds
      let end = 0; // win[0, end) holds data[from, from + end)
      while (start < data.length) {
        // Refill when the window holds less than a largest chunk and more input remains: the
        // uncut tail (under `max` bytes) moves to the front, new input fills the rest.
        if (from + end - start < max && from + end < data.length) {
          win.copyWithin(0, start - from, end);
          end -= start - from;
          from = start;
          const take = Math.min(data.length - (from + end), win.length - end);
          win.set(data.subarray(from + end, from + end + take), end);
          end += take;
        }
        const len = this.#cutWindow(s, start - from, end);
        lengths.push(len);
        start += len;
      }
    } finally {
      this.#done(s);
    }
    return lengths;
  }

  /**
   * Chunks of a stream, each copied into a buffer of its own from `alloc` (so it may be
   * transferred to a worker or kept after the source moves on; the database lends pooled ones,
   * lib/chunk-buffers.ts). Holds at most 2 * max bytes of the source.
   */
  async *chunkStream(source: AsyncIterable<Uint8Array>, alloc: (length: number) => Buffer = ownBuffer): AsyncGenerator<Buffer> {
    const { max } = this.sizes;
    const s = this.#scanner();
    try {
      const buf = s.window;
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
            const len = this.#cutWindow(s, start, end);
            yield copyOut(buf, start, len, alloc);
            start += len;
          }
        }
      }
      while (end > start) {
        const len = this.#cutWindow(s, start, end);
        yield copyOut(buf, start, len, alloc);
        start += len;
      }
    } finally {
      this.#done(s);
    }
  }

  /** Length of the chunk starting at window[start], given window[start, end) (see cut()). */
  #cutWindow(s: Scanner, start: number, end: number): number {
    const { min, avg, max } = this.sizes;
    const n = end - start;
    // The first `min` bytes are skipped, not hashed: a cut there would be ignored anyway.
    if (n <= min) return n;
    const at = WINDOW_AT + start;
    return s.scan(at + min, at + Math.min(avg, n), at + Math.min(max, n), this.#maskS, this.#maskL) - at;
  }

  /** A scanner for one cutting pass: every pass in flight (concurrent puts) needs its own window. */
  #scanner(): Scanner {
    return this.#idle.pop() ?? new Scanner(this.#gear, 2 * this.sizes.max);
  }

  #done(s: Scanner): void {
    if (this.#idle.length < IDLE_SCANNERS) this.#idle.push(s);
  }
}

function copyOut(buf: Buffer, start: number, len: number, alloc: (length: number) => Buffer): Buffer {
  const out = alloc(len);
  buf.copy(out, 0, start, start + len);
  return out;
}

/** allocUnsafeSlow: never a slice of Node's shared pool, so the buffer owns its ArrayBuffer. */
function ownBuffer(length: number): Buffer {
  return Buffer.allocUnsafeSlow(length);
}
