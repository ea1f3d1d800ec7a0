//! wepoq reconciler: the OVSDB client, the OVN sandbox harness, observe and apply

pub mod agent;
pub mod attach;
pub mod cached;
pub mod convert;
pub mod docker;
pub mod gateway;
pub mod observe;
pub mod ovsdb;
pub mod reconcile;
pub mod row_cache;
pub mod sandbox;
pub mod transaction;
pub mod tunnel;
