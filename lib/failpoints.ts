/**
 * Named failpoints in the write and seal paths (as bbolt does), so tests can stop the process at
 * an exact step. `OURO_FAILPOINT=name` (or `name:N`, the N-th time it is reached) makes the process
 * kill itself with SIGKILL there: a real crash, no cleanup, no flushing of anything unsynced by us.
 * In-process tests may instead register a function that throws (an injected I/O error).
 * Reaching a failpoint costs one Map lookup when none is set.
 */
const hooks = new Map<string, () => void>();
const counts = new Map<string, number>();

const fromEnv = process.env['OURO_FAILPOINT'];
if (fromEnv) {
  const [name, nth] = fromEnv.split(':');
  const target = nth ? Number(nth) : 1;
  hooks.set(name!, () => {
    const n = (counts.get(name!) ?? 0) + 1;
    counts.set(name!, n);
    if (n === target) process.kill(process.pid, 'SIGKILL');
  });
}

export function failpoint(name: string): void {
  hooks.get(name)?.();
}

export function setFailpoint(name: string, fn: (() => void) | undefined): void {
  if (fn) hooks.set(name, fn);
  else hooks.delete(name);
}
