//! Integration tests of the runtime: real processes, real sockets, loopback only.
