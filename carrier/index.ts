/**
 * `ourodb/node`: the cluster side of OuroDB (Node 22 or later: libp2p needs it). A `Node` is a
 * cluster member (docs/node.md); the carrier underneath is libp2p over QUIC with framed
 * request/response and a persistent node identity.
 */
export { Node, JOIN_PROTOCOL, HEARTBEAT_PROTOCOL, PING_PROTOCOL } from './node.js';
export type { NodeOptions, NodeRole, MemberView, JoinAnswer } from './node.js';
export { AdminServer, RUN_FILE, readRunInfo } from './admin.js';
export type { RunInfo } from './admin.js';
export { CONFIG_FILE, DEFAULT_CONFIG, loadConfig, resolveConfig, saveConfig } from './config.js';
export type { NodeConfig, NodeConfigPatch } from './config.js';
export { FailureDetector } from './detector.js';
export type { MemberState, MemberHealth, Transition } from './detector.js';
export { MEMBER_LIST_VERSION, members, isMember, verify as verifyMemberList } from './membership.js';
export type { MemberList, Approval, Revocation } from './membership.js';
export { Carrier, DEFAULT_LISTEN, protocolId } from './carrier.js';
export type { CarrierOptions, Handler, HandlerContext, RequestEvent, RequestOptions } from './carrier.js';
export { DEFAULT_MAX_FRAME_BYTES, FRAME_HEAD_BYTES, decodeFrames, encodeFrame } from './frames.js';
export { IDENTITY_FILE, loadIdentity } from './identity.js';
