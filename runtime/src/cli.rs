//! The runtime's command-line surface, flattened into the `wepoq` CLI.

use std::process::ExitCode;

/// Commands that run on the data plane (inside an endpoint's namespace or a container).
#[derive(Debug, clap::Subcommand)]
pub enum RuntimeCommand {
    /// Accept connections and hand them to warm workers (not implemented yet)
    Stub,
}

/// Runs one runtime command to completion.
pub fn run(command: RuntimeCommand) -> ExitCode {
    match command {
        RuntimeCommand::Stub => {
            eprintln!("error: stub is not implemented yet");
            ExitCode::FAILURE
        }
    }
}
