export { WAL_RECORD_BYTES, WAL_RECORD_VERSION, decodeWalRecord, encodeWalRecord } from './record.js';
