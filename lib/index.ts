/** The public API of OuroDB. Everything a library user needs is exported from here. */
export { OuroDB, INDEX_FORMAT_VERSION, Tombstone } from './db.js';
export type { OpenOptions, PutOptions, PutValue, PutResult, ObjectStat, ReadRange, Stats, Durability, ListOptions, ListEntry, Version, CheckOptions, CheckReport, Problem, GcOptions, GcReport, ExportedObject, ReleaseReport, TombstoneState } from './db.js';
export { MAX_KEY_BYTES } from './keyname.js';
export { levelBinding } from '../index/leveldb.js';
export type { LevelBindingInfo } from '../index/leveldb.js';
export type { RebuildReport } from './rebuild.js';
export {
  OuroError,
  BadArgumentError,
  NotFoundError,
  WrongKeyError,
  CorruptionError,
  IOError,
  UnsupportedVersionError,
  LockedError,
  ClosedError,
  FailedError,
  ConflictError,
  DiskFullError,
  ProtocolError,
  TimeoutError,
  ConfigError,
  RefusedError,
  UnavailableError,
} from './errors.js';
export type { OuroErrorCode } from './errors.js';
export type { ChunkSizes } from './chunker.js';
export { DEFAULT_CHUNK_SIZES } from './chunker.js';
export type { Argon2Cost, Credentials, Descriptor } from './keyring.js';
export { exportArchive, importArchive, importArchiveNew, ARCHIVE_VERSION } from './archive.js';
export type { ArchiveProgress, ArchiveIdentity, ExportResult, ImportOptions, ImportNewOptions, ImportProgress, ImportResult } from './archive.js';
export { inspectWal, inspectBlock, inspectKeys } from './inspect.js';
// The file-system seam, and the crashable and error-injecting file systems for tests.
export { NodeVfs, CrashableFs, FaultyFs } from './vfs/index.js';
export type { Vfs, VfsFile, CrashImage, Fault, FsOp } from './vfs/index.js';
