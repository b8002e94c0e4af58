import crypto from 'node:crypto';

/**
 * The value a crash-test writer stores as its i-th put under `seed`: sizes from 0 to ~150 KB, and
 * every 5th value repeats shared content so deduplication against in-flight entries is exercised.
 */
export function crashValue(seed: string, i: number): Buffer {
  const size = (i * 7919) % 150_000;
  const key = crypto.createHash('sha256').update(i % 5 === 0 ? `${seed}:shared` : `${seed}:${i}`).digest();
  return crypto.createCipheriv('chacha20', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}
