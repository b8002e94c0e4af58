export { keys, PREFIX_BLOCK, PREFIX_CHUNK, PREFIX_META, PREFIX_OBJECT, PREFIX_SEALED_SEQ, PREFIX_WAL } from './keys.js';
export type { MetaName } from './keys.js';
export { LOCATION_BYTES, decodeBlockInfo, decodeLocation, encodeBlockInfo, encodeLocation } from './values.js';
export type { BlockInfo, Location } from './values.js';
