/**
 * What a hostile or broken peer sends, for the carrier and cluster tests: raw bytes on a plain
 * libp2p stream, bypassing the carrier's own framing.
 */
import type { Carrier } from '../carrier/index.js';
import { decodeFrames } from '../carrier/index.js';

/** A length of 4 GiB, bytes that are not msgpack, and a frame cut short. */
export const HOSTILE_FRAMES = [Uint8Array.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), Uint8Array.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1]), Uint8Array.from([0, 0, 0, 9, 1])];

/** Sends `bytes` on a new `protocol` stream to the peer `c` is connected to; returns the frames it answered. */
export async function rawExchange(c: Carrier, protocol: string, bytes: Uint8Array): Promise<unknown[]> {
  const stream = await c.node.dialProtocol(c.node.getConnections()[0]!.remotePeer, protocol);
  // Listen before writing: libp2p 3 tells only readers already listening that the peer closed.
  const replies = Array.fromAsync(decodeFrames(stream));
  stream.send(bytes);
  await stream.close();
  return replies;
}
