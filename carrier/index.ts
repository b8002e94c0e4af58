/**
 * The cluster carrier (libp2p over QUIC) arrives with the cluster issues; this module is its
 * place in the layout. Nothing is exported yet.
 */
export {};
