//! `wepoq-runtime`: the runtime commands alone, for a minimal container image.

use clap::Parser;

/// The wepoq runtime: socket-activation stub, shim and example worker.
#[derive(Debug, Parser)]
#[command(name = "wepoq-runtime", version, about)]
struct Cli {
    #[command(subcommand)]
    command: wepoq_runtime::cli::RuntimeCommand,
}

fn main() -> std::process::ExitCode {
    wepoq_runtime::cli::run(Cli::parse().command)
}
