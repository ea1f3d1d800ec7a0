//! Argument parsing and dispatch to one module per command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wepoq: compile an application network spec into OVN and keep it that way.
#[derive(Debug, Parser)]
#[command(name = "wepoq", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Runtime(wepoq_runtime::cli::RuntimeCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Runtime(command) => wepoq_runtime::cli::run(command),
    }
}
