//! Handoff benchmark: direct accept against stub + warm worker (filled in next).

fn main() {}
