export * from './format.js';
export { BlockStore, OpenBlock } from './store.js';
export type { SealedBlock } from './store.js';
export { FileCache } from './files.js';
