/**
 * How fast is the erasure codec? (part `ec`: `node dist/bench/run.js --only ec`)
 *
 * One 16 MiB random block at 4+2 and 8+3: encode (all parity) and decode with 1 and with M data
 * shards missing, MiB/s of block bytes, for OuroDB's codec (loadCodec(), the JS one) beside the
 * raw call of the WASM build of the Rust reed-solomon-erasure crate (same construction, same
 * bytes; a devDependency: docs/design.md "Erasure coding: the codec" says why it is not used).
 * Best of `rounds` runs each.
 */
import crypto from 'node:crypto';
import { loadCodec, loadRawWasm, shardSize } from '../carrier/ec/codec.js';

export interface EcFigure { shape: string; what: string; oursMiBs: number; rawMiBs?: number }

const MiB = 1 << 20;

function best(rounds: number, f: () => unknown): number {
  let ms = Infinity;
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    f();
    ms = Math.min(ms, performance.now() - t);
  }
  return ms;
}

async function bestAsync(rounds: number, f: () => Promise<unknown>): Promise<number> {
  let ms = Infinity;
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    await f();
    ms = Math.min(ms, performance.now() - t);
  }
  return ms;
}

export async function ecBench(rounds = 5): Promise<{ codec: string; figures: EcFigure[]; raw: string }> {
  const codec = await loadCodec();
  const raw = loadRawWasm();
  const block = crypto.randomBytes(16 * MiB);
  const rate = (ms: number) => block.length / MiB / (ms / 1000);
  const figures: EcFigure[] = [];
  for (const [k, m] of [[4, 2], [8, 3]] as const) {
    const shape = `${k}+${m}`;
    const shards = await codec.encode(block, k, m);
    const size = shardSize(block.length, k);
    const all = new Uint8Array(size * (k + m));
    all.set(block);
    const enc = await bestAsync(rounds, () => codec.encode(block, k, m));
    const rawEnc = raw === undefined ? undefined : best(rounds, () => raw.encode(all, k, m));
    figures.push({ shape, what: 'encode', oursMiBs: rate(enc), rawMiBs: rawEnc === undefined ? undefined : rate(rawEnc) });
    for (const lost of [1, m]) {
      const slots = shards.map((s, i) => (i < lost ? undefined : s));
      const dec = await bestAsync(rounds, () => codec.reconstruct(slots, k, m));
      const present = shards.map((_, i) => i >= lost);
      // The raw call rebuilds the data shards of the same buffer in place, the missing ones included.
      const rawDec = raw === undefined ? undefined : best(rounds, () => raw.reconstruct(all, k, m, present));
      figures.push({ shape, what: `decode, ${lost} data shard${lost === 1 ? '' : 's'} missing`, oursMiBs: rate(dec), rawMiBs: rawDec === undefined ? undefined : rate(rawDec) });
    }
  }
  return { codec: codec.name, figures, raw: raw === undefined ? 'reed-solomon-erasure WASM: not installed' : '@digitaldefiance/reed-solomon-erasure.wasm (raw call)' };
}
