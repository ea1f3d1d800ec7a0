//! The L4 trunk of external clients: each client's Ethernet frames in kernel VXLAN (VNI =
//! its tag), the VXLAN datagrams inside WireGuard (boringtun's Noise + transport, in
//! userspace: this kernel has no WireGuard), WireGuard over the plain routed network between
//! the client host and the gateway agent. docs/external-tunnel.md has the design and the
//! security model.
//!
//! - [`client::connect`]: `wepoq connect` on a client host.
//! - [`gateway::TunnelGateway`]: the gateway end, inside `wepoq agent --gateway`.
//! - [`store::Store`], [`credential::Credential`]: keys, issued and revoked by wepoq.
//! - [`engine`]: the packet path; [`inner`]: what an authenticated client may send.

mod batch;
pub mod client;
pub mod credential;
pub mod engine;
mod files;
pub mod gateway;
pub mod inner;
pub mod keys;
mod links;
pub mod store;
mod tun;

pub use files::{read_secret, write_secret};
