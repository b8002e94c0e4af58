export { WAL_RECORD_BYTES, WAL_RECORD_VERSION, decodeWalRecords, encodeWalRecords } from './record.js';
