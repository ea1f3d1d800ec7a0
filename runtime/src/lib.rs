//! wepoq's runtime: the socket-activation stub, the warm pool and the worker contract.
//!
//! Architecture invariant: this crate runs inside containers; it never depends on bollard,
//! the OVSDB client or the compiler.

pub mod cli;
