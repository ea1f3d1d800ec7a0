//! The reconciler's integration tests: one binary, against real OVN servers started by the sandbox harness

mod agent;
mod attach;
mod cached;
mod cluster;
mod dataplane;
mod fake_server;
mod ovsdb_client;
mod row_cache;
mod self_image;
mod workers;
mod workers_control;
