/**
 * Errors are API. Every error OuroDB throws on purpose is an `OuroError` with a stable
 * uppercase `code` (documented in docs/errors.md; codes never change meaning, messages may)
 * and, when it wraps a lower-level failure, the original error as `cause`.
 */
export const OURO_ERROR_CODES = [
  'OURO_BAD_ARGUMENT',
  'OURO_NOT_FOUND',
  'OURO_WRONG_KEY',
  'OURO_CORRUPTION',
  'OURO_IO_ERROR',
  'OURO_UNSUPPORTED_VERSION',
  'OURO_LOCKED',
  'OURO_CLOSED',
  'OURO_FAILED',
  'OURO_CONFLICT',
  'OURO_DISK_FULL',
  'OURO_PROTOCOL',
  'OURO_TIMEOUT',
  'OURO_BAD_CONFIG',
  'OURO_REFUSED',
  'OURO_UNAVAILABLE',
  'OURO_S3',
  'OURO_RATE_LIMITED',
] as const;

export type OuroErrorCode = (typeof OURO_ERROR_CODES)[number];

export class OuroError extends Error {
  readonly code: OuroErrorCode;
  constructor(code: OuroErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = new.target.name;
  }
}

/** A caller passed something OuroDB cannot accept (wrong type, size or shape). */
export class BadArgumentError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_BAD_ARGUMENT', message, options); }
}

/** The object, chunk or block asked for is not in this database. */
export class NotFoundError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_NOT_FOUND', message, options); }
}

/** The passphrase or key does not unlock this database, or data failed authentication under it. */
export class WrongKeyError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_WRONG_KEY', message, options); }
}

/**
 * Bytes on disk are not what was written: a checksum, hash or authentication tag did not match,
 * or a structure is malformed. OuroDB never returns data that failed these checks.
 */
export class CorruptionError extends OuroError {
  /** Where the damage was found, for reports and repair tools. */
  readonly location: { file?: string; offset?: number; id?: string } | undefined;
  constructor(message: string, options?: { cause?: unknown; location?: { file?: string; offset?: number; id?: string } }) {
    super('OURO_CORRUPTION', message, options);
    this.location = options?.location;
  }
}

/** The operating system refused a file operation (EIO, ENOSPC, EACCES, ...); see `cause`. */
export class IOError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_IO_ERROR', message, options); }
}

/**
 * The file system is out of space or over quota (ENOSPC, EDQUOT; `cause` holds the errno error).
 * The operation that hit it failed and wrote nothing visible; everything acknowledged before is
 * safe, reads go on, and writes succeed again once space is freed (no reopen needed), unless the
 * failure hit an fsync or the index, which makes the handle fail (FailedError) instead.
 */
export class DiskFullError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_DISK_FULL', message, options); }
}

/**
 * A peer sent something the protocol does not allow: a frame longer than the maximum, bytes that
 * do not decode, a message of the wrong shape, a stream that ended mid-frame. The stream is
 * closed; the node goes on.
 */
export class ProtocolError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_PROTOCOL', message, options); }
}

/** A network request got no answer within its time limit. */
export class TimeoutError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_TIMEOUT', message, options); }
}

/**
 * A node's configuration (file or flags) is invalid; `field` names the bad field as a dotted
 * path (`heartbeat.intervalMs`). Nothing was started.
 */
export class ConfigError extends OuroError {
  readonly field: string;
  constructor(message: string, field: string, options?: { cause?: unknown }) {
    super('OURO_BAD_CONFIG', message, options);
    this.field = field;
  }
}

/**
 * A cluster peer refused the request: the requester is not an approved member (never approved,
 * rejected, or revoked), so only the join protocol is open to it.
 */
export class RefusedError extends OuroError {
  /** Why, when the member said: a join refusal's stable code (`token-expired`...; docs/errors.md). */
  readonly reason: string | undefined;
  constructor(message: string, options?: { cause?: unknown; reason?: string }) {
    super('OURO_REFUSED', message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.reason = options?.reason;
  }
}

/**
 * A cluster member refused a request from a peer that is not a member because that peer (or all
 * non-members together) sent more than the member takes (docs/node.md, "Access"). Nothing of the
 * request was read; slow down and retry.
 */
export class RateLimitedError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_RATE_LIMITED', message, options); }
}

/**
 * The cluster has too few live members to do what was asked now (a replicated flush asking for
 * more copies than there are members not dead). Nothing was undone; retry once members are back.
 */
export class UnavailableError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_UNAVAILABLE', message, options); }
}

/** A file was written by a format version this release does not understand. */
export class UnsupportedVersionError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_UNSUPPORTED_VERSION', message, options); }
}

/** Another process (or another handle in this one) has the database open. */
export class LockedError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_LOCKED', message, options); }
}

/** The handle was closed. */
export class ClosedError extends OuroError {
  constructor(message = 'database is closed', options?: { cause?: unknown }) { super('OURO_CLOSED', message, options); }
}

/**
 * A write could not be made durable (a failed write or fsync). The handle refuses further
 * writes because the state of the unsynced bytes is unknown after a failed fsync; what was
 * acknowledged before is safe, and reopening the database recovers a correct state.
 */
export class FailedError extends OuroError {
  constructor(message: string, options?: { cause?: unknown }) { super('OURO_FAILED', message, options); }
}

/**
 * A compare-and-set put (`ifHead`) found the key's heads moved: another put under the key landed
 * first. Nothing was written; read the new head and retry.
 */
export class ConflictError extends OuroError {
  /** The heads the caller named and the heads the key has (hex hashes, sorted). */
  readonly expected: string[];
  readonly actual: string[];
  constructor(message: string, expected: string[], actual: string[]) {
    super('OURO_CONFLICT', message);
    this.expected = expected;
    this.actual = actual;
  }
}

const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT']);

/** Whether a system error (or LevelDB's report of one) says the disk is full. */
export function isDiskFull(err: unknown): boolean {
  if (err instanceof DiskFullError) return true;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== undefined && DISK_FULL_CODES.has(code)) return true;
  // LevelDB reports errno only in its message ("IO error: ...: No space left on device").
  return code === 'LEVEL_IO_ERROR' && /No space left|Disk quota exceeded/i.test(String((err as Error).message));
}

/**
 * Wraps a system error from the file system into a typed error, keeping it as `cause`:
 * DiskFullError for ENOSPC and EDQUOT, IOError for the rest.
 */
export function ioError(what: string, err: unknown): OuroError {
  if (err instanceof OuroError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (isDiskFull(err)) return new DiskFullError(`${what}: ${code === 'LEVEL_IO_ERROR' ? 'no space left on device' : code}`, { cause: err });
  return new IOError(`${what}: ${code ?? String(err)}`, { cause: err });
}

let syncFailures = 0;
/** fsync/fdatasync failures in this process so far (a node exports it as a metric). */
export function fsyncFailures(): number {
  return syncFailures;
}

/**
 * A failed fsync or fdatasync. Fatal to the handle whatever the errno (a full disk included):
 * the kernel may already have dropped the pages it could not write, so a retry that succeeds
 * proves nothing. Reopening recovers from what the files really hold.
 */
export function syncFailure(what: string, err: unknown): FailedError {
  if (err instanceof FailedError) return err;
  syncFailures++;
  return new FailedError(`${what} failed; reopen the database to recover`, { cause: ioError(what, err) });
}

/**
 * One line saying what `err` was, for messages and logs. libp2p sometimes rejects with a DOM
 * Event (a stream's or connection's 'close', say) rather than an Error, which String() renders as
 * "[object Event]": name its type and the error it carries instead.
 */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err instanceof OuroError ? `${err.code}: ${err.message}` : `${err.name}: ${err.message}`;
  if (err instanceof Event) {
    const inner = (err as Event & { error?: unknown }).error;
    return `${err.type} event${inner === undefined ? '' : ` (${errorText(inner)})`}`;
  }
  return String(err);
}
