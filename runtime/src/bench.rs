//! Measuring helpers shared by the benchmarks of both crates (`runtime/benches/handoff.rs`
//! and `reconciler/benches/workers.rs`), so a figure one prints as another's anchor is
//! measured the same way in both. Not used by the runtime itself.

pub mod hop;
pub mod loopback;
pub mod process_stub;
