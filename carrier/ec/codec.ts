/**
 * STAND-IN for ec-codec's carrier/ec/codec.ts (same exports, same contract): a plain systematic
 * Reed-Solomon code over GF(2^8) with a Cauchy parity matrix, in TypeScript. It is correct but
 * slow; the ec-codec branch replaces this file (and manifest.ts) with the measured codec.
 *
 * Shards: K data shards (the block cut in K pieces of shardSize bytes, the last zero-padded) and
 * M parity shards, parity j = sum over i of C[j][i] * data i, with C[j][i] = 1 / (x_j + y_i),
 * x_j = K + j, y_i = i (all distinct, so every K x K submatrix of [I; C] is invertible: any K
 * shards give back the block).
 */
import { BadArgumentError, CorruptionError } from '../../lib/errors.js';

export interface ErasureCodec {
  readonly name: string;
  encode(block: Uint8Array, k: number, m: number): Promise<Uint8Array[]>;
  reconstruct(shards: Array<Uint8Array | undefined>, k: number, m: number): Promise<Uint8Array[]>;
}

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!;
}
const mul = (a: number, b: number) => (a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!);
const inv = (a: number) => EXP[255 - LOG[a]!]!;

function checkKm(k: number, m: number): void {
  if (!Number.isSafeInteger(k) || !Number.isSafeInteger(m) || k < 1 || m < 1 || k + m > 255) throw new BadArgumentError(`ec ${k}+${m}: K and M must be positive and K+M at most 255`);
}

/** Row r of the (k+m) x k generator matrix: identity for data rows, Cauchy for parity rows. */
function row(r: number, k: number): number[] {
  if (r < k) return Array.from({ length: k }, (_, i) => (i === r ? 1 : 0));
  return Array.from({ length: k }, (_, i) => inv(r ^ i));
}

/** out ^= c * src */
function mulAdd(out: Uint8Array, src: Uint8Array, c: number): void {
  if (c === 0) return;
  const lc = LOG[c]!;
  for (let i = 0; i < src.length; i++) {
    const s = src[i]!;
    if (s !== 0) out[i] = out[i]! ^ EXP[lc + LOG[s]!]!;
  }
}

export function shardSize(blockSize: number, k: number): number {
  return Math.max(1, Math.ceil(blockSize / k));
}

function parity(data: Uint8Array[], k: number, m: number, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let j = 0; j < m; j++) {
    const p = new Uint8Array(size);
    const coef = row(k + j, k);
    for (let i = 0; i < k; i++) mulAdd(p, data[i]!, coef[i]!);
    out.push(p);
  }
  return out;
}

class CauchyCodec implements ErasureCodec {
  readonly name = 'stand-in cauchy-rs (ts)';

  async encode(block: Uint8Array, k: number, m: number): Promise<Uint8Array[]> {
    checkKm(k, m);
    const size = shardSize(block.length, k);
    const data: Uint8Array[] = [];
    for (let i = 0; i < k; i++) {
      const s = new Uint8Array(size);
      s.set(block.subarray(Math.min(block.length, i * size), Math.min(block.length, (i + 1) * size)));
      data.push(s);
    }
    return [...data, ...parity(data, k, m, size)];
  }

  async reconstruct(shards: Array<Uint8Array | undefined>, k: number, m: number): Promise<Uint8Array[]> {
    checkKm(k, m);
    if (shards.length !== k + m) throw new BadArgumentError(`reconstruct: ${shards.length} slots, not ${k + m}`);
    const have = shards.map((s, i) => (s ? i : -1)).filter((i) => i >= 0).slice(0, k);
    if (have.length < k) throw new CorruptionError(`only ${have.length} of the ${k} shards needed are present`);
    const size = shards[have[0]!]!.length;
    if (have.some((i) => shards[i]!.length !== size)) throw new BadArgumentError('reconstruct: shards of different sizes');
    // Invert the k x k matrix of the rows present (Gauss-Jordan over GF(2^8)).
    const a = have.map((r) => row(r, k));
    const b = have.map((_, i) => Array.from({ length: k }, (_, j): number => (i === j ? 1 : 0)));
    for (let c = 0; c < k; c++) {
      const p = a.findIndex((r, i) => i >= c && r[c] !== 0);
      [a[c], a[p]] = [a[p]!, a[c]!];
      [b[c], b[p]] = [b[p]!, b[c]!];
      const f = inv(a[c]![c]!);
      for (let j = 0; j < k; j++) {
        a[c]![j] = mul(a[c]![j]!, f);
        b[c]![j] = mul(b[c]![j]!, f);
      }
      for (let r = 0; r < k; r++) {
        if (r === c || a[r]![c] === 0) continue;
        const g = a[r]![c]!;
        for (let j = 0; j < k; j++) {
          a[r]![j] = a[r]![j]! ^ mul(g, a[c]![j]!);
          b[r]![j] = b[r]![j]! ^ mul(g, b[c]![j]!);
        }
      }
    }
    const data: Uint8Array[] = [];
    for (let i = 0; i < k; i++) {
      if (shards[i]) {
        data.push(shards[i]!);
        continue;
      }
      const d = new Uint8Array(size);
      for (let j = 0; j < k; j++) mulAdd(d, shards[have[j]!]!, b[i]![j]!);
      data.push(d);
    }
    const par = parity(data, k, m, size);
    return [...data, ...par.map((p, j) => shards[k + j] ?? p)];
  }
}

export async function loadCodec(): Promise<ErasureCodec> {
  return new CauchyCodec();
}
