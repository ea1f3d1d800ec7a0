//! wepoq's runtime: the socket-activation stub, the warm pool and the worker contract.
//!
//! Architecture invariant: this crate runs inside containers; it never depends on bollard,
//! the OVSDB client or the compiler. Workers never get a network: they only ever see the
//! sockets the stub hands them.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod control_proto;
pub mod example_worker;
pub mod frame;
pub mod histogram;
pub mod metrics;
pub mod probe;
pub mod process_backend;
pub mod record;
pub mod remote_backend;
pub mod seqpacket;
pub mod shim;
pub mod spare_netns;
pub mod stub;
pub mod worker;
