import crypto from 'node:crypto';

/** The value the gc writer stores under `name` (n<i> keys reuse k<i>'s): 20-60 KiB, distinct per name. */
export function gcValue(name: string): Buffer {
  const size = 20_000 + (Number(name.slice(1)) % 5) * 10_000;
  const key = crypto.createHash('sha256').update(`gc/${name}`).digest();
  return crypto.createCipheriv('chacha20', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** The parts concat-writer puts for its i-th concatenation: two chunked values and an inline tail. */
export function concatParts(i: number): Buffer[] {
  return [gcValue(`k${i}`), gcValue(`k${i + 1}`), gcValue(`k${i}`).subarray(0, 700 + i)];
}
