export { type Vfs, type VfsFile, NodeVfs, nodeVfs, writevAll, readFully } from './vfs.js';
export { CrashableFs, type CrashImage } from './crash.js';
export { FaultyFs, type Fault, type FsOp } from './faulty.js';
