//! Every link between vmd's processes and between vmctl and vmd: typed messages
//! ([`proto`]), framed one per datagram over `SOCK_SEQPACKET`, with file descriptors attached
//! (SCM_RIGHTS), the peer's credentials (SO_PEERCRED) and a protocol version in the hello.
//!
//! This crate owns the wire format and nothing else. A malformed, oversized or unexpected
//! message is an error value for the caller to log and close the connection over; it never
//! panics a process.

pub mod proto;
