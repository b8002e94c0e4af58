/**
 * Frames on a carrier stream: a 4-byte big-endian length, then that many bytes of msgpackr.
 * The length is checked against the stream's maximum before anything is allocated, so a peer
 * claiming 4 GiB costs nothing but the closed stream. (Format: docs/FORMAT.md, "Carrier frames".)
 */
import { Packr } from 'msgpackr/pack';
import { OuroError, ProtocolError } from '../lib/errors.js';

export const FRAME_HEAD_BYTES = 4;
/** Default largest frame body: room for a 1 MiB chunk and its envelope, far below memory limits. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;

// Plain maps, no records or structures: a frame decodes the same in any msgpack reader.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

/** The envelope of every response frame (docs/FORMAT.md, "Carrier frames"). */
export type Reply = { ok: true; body: unknown } | { ok: false; code: string; message: string };

/** The reply for a failure: its code when typed, else `fallbackCode`. */
export function errorReply(err: unknown, fallbackCode: string): Reply {
  return { ok: false, code: err instanceof OuroError ? err.code : fallbackCode, message: err instanceof Error ? err.message : String(err) };
}

/** The reply to a peer that may not use `protocol`. */
export function refusal(peer: string, protocol: string): Reply {
  return { ok: false, code: 'OURO_REFUSED', message: `peer ${peer} is not an approved member and may not use ${protocol}` };
}

export function encodeFrame(message: unknown, maxBytes = DEFAULT_MAX_FRAME_BYTES): Uint8Array {
  const body = packr.pack(message);
  if (body.length > maxBytes) throw new ProtocolError(`frame of ${body.length} bytes exceeds the maximum of ${maxBytes}`);
  const out = new Uint8Array(FRAME_HEAD_BYTES + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, FRAME_HEAD_BYTES);
  return out;
}

/**
 * Reads frames from a stream's chunks (Uint8Arrays, or libp2p's Uint8ArrayLists, of any size) and
 * yields each decoded message. Throws ProtocolError on an oversized length, undecodable bytes,
 * or an end in the middle of a frame.
 */
export async function* decodeFrames(source: AsyncIterable<Uint8Array | { subarray(): Uint8Array }>, maxBytes = DEFAULT_MAX_FRAME_BYTES): AsyncGenerator<unknown> {
  const pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let need = -1; // body length of the frame being read, or -1 while reading its head
  const take = (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const first = pending[0]!;
      const k = Math.min(first.length, n - at);
      out.set(first.subarray(0, k), at);
      at += k;
      if (k === first.length) pending.shift();
      else pending[0] = first.subarray(k);
    }
    pendingBytes -= n;
    return out;
  };
  for await (const piece of source) {
    const bytes = piece instanceof Uint8Array ? piece : piece.subarray();
    if (bytes.length === 0) continue;
    pending.push(bytes);
    pendingBytes += bytes.length;
    for (;;) {
      if (need < 0) {
        if (pendingBytes < FRAME_HEAD_BYTES) break;
        const head = take(FRAME_HEAD_BYTES);
        need = new DataView(head.buffer).getUint32(0);
        if (need > maxBytes) throw new ProtocolError(`peer announced a frame of ${need} bytes; the maximum is ${maxBytes}`);
      }
      if (pendingBytes < need) break;
      const body = take(need);
      need = -1;
      yield decodeFrameBody(body);
    }
  }
  if (need >= 0 || pendingBytes > 0) throw new ProtocolError('stream ended in the middle of a frame');
}

/** A frame's body (after its length) decoded; ProtocolError if it is not msgpack. */
export function decodeFrameBody(body: Uint8Array): unknown {
  try {
    return packr.unpack(body);
  } catch (err) {
    throw new ProtocolError('frame does not decode as msgpack', { cause: err });
  }
}
