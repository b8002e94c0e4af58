/** The cluster carrier: libp2p over QUIC, framed request/response, node identity. */
export { Carrier, DEFAULT_LISTEN, protocolId } from './carrier.js';
export type { CarrierOptions, Handler, HandlerContext, RequestOptions } from './carrier.js';
export { DEFAULT_MAX_FRAME_BYTES, FRAME_HEAD_BYTES, decodeFrames, encodeFrame } from './frames.js';
export { IDENTITY_FILE, loadIdentity } from './identity.js';
