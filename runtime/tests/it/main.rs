//! Integration tests of the runtime: real processes, real sockets, loopback only.

mod handoff;
mod lifecycle;
mod pool;
mod remote;
mod security;
mod shim;
mod support;
mod tiers;
mod udp;
