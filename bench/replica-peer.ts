/**
 * The receiving member of bench/replication.ts in a process of its own, as members run in a
 * cluster: `node dist/bench/replica-peer.js DIR CONFIG_JSON TOKEN ADDRESS...` joins the writer's
 * cluster with the token as a keyless member, serves two raw libp2p sinks (one that drops what it
 * receives, one that SHA-256s it first) and a raw echo beside the carrier's own protocols, prints `{ peerId }` as
 * one JSON line once it runs, and stops on SIGTERM.
 */
import { Node } from '../carrier/node.js';
import { send } from '../carrier/send.js';
import { answerByteCount, answerByteCountHashed } from './carrier.js';

const [dir, configJson, token, ...addresses] = process.argv.slice(2);
if (!dir || !configJson || !token || addresses.length === 0) throw new Error('usage: replica-peer.js DIR CONFIG_JSON TOKEN ADDRESS...');
const config = JSON.parse(configJson) as Parameters<typeof Node.start>[0]['config'];
await Node.init(dir, { config });
await Node.requestJoin(dir, addresses, token);
const node = await Node.start({ dir, config });
await node.carrier.node.handle('/ouro-bench/replication-sink/1', answerByteCount);
await node.carrier.node.handle('/ouro-bench/replication-hashing-sink/1', answerByteCountHashed);
// Raw round trips (bench/net-writer.ts): echo what arrives until the writer closes.
await node.carrier.node.handle('/ouro-bench/replication-echo/1', async (stream) => {
  for await (const piece of stream) await send(stream, piece);
  await stream.close();
});
process.stdout.write(JSON.stringify({ peerId: node.peerId }) + '\n');
process.on('SIGTERM', () => void node.stop().then(() => process.exit(0)));
