//! wepoq reconciler
