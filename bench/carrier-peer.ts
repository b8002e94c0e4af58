/**
 * The serving side of bench/carrier.ts, in its own process (so that its QUIC read size, set by
 * OURO_QUIC_READ_BYTES before the QUIC package loads, is its own). Serves carrier protocols and
 * raw libp2p ones, prints its address on its first line, stops on SIGTERM.
 */
import { Carrier, protocolId } from '../carrier/index.js';
import { send } from '../carrier/send.js';
import { answerByteCount } from './carrier.js';

const carrier = await Carrier.start({ dir: process.argv[2]!, maxFrameBytes: 8 * 1024 * 1024 });
await carrier.handle(protocolId('bench-echo'), (m) => m);
await carrier.handle(protocolId('bench-sink'), (m) => (m as Uint8Array).byteLength);
// Raw libp2p streams: count every byte until the writer closes, answer the count.
await carrier.node.handle('/ouro-bench/raw-sink/1', answerByteCount);
// Raw round trip: echo what arrives until the writer closes.
await carrier.node.handle('/ouro-bench/raw-echo/1', async (stream) => {
  for await (const piece of stream) await send(stream, piece);
  await stream.close();
});
process.stdout.write(JSON.stringify({ address: carrier.addresses[0] }) + '\n');
process.on('SIGTERM', () => void carrier.stop().then(() => process.exit(0)));
