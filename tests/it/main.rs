//! wepoq's one integration-test binary: data-driven cases, the CLI, and the live tests.

mod agent;
mod cases;
mod cli;
mod containers;
mod dataplane;
mod external;
mod functions;
mod fuzz_smoke;
mod live;
mod pipelines;
mod scale;
mod schema;
mod stage;
mod stickiness;
mod support;
