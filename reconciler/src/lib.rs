//! wepoq reconciler: the OVSDB client, the OVN sandbox harness, observe and apply

pub mod ovsdb;
pub mod sandbox;
