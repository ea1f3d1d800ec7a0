//! Argument parsing and dispatch to one module per command.

mod agent;
mod apply;
mod attacher;
mod check;
mod containers;
mod destroy;
mod external;
mod graph;
mod live;
mod load;
mod output;
mod plan;
mod stubs;
mod watch;
mod zone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// wepoq: compile an application network spec into OVN, and keep it that way.
#[derive(Debug, Parser)]
#[command(name = "wepoq", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Check specs and report every problem at once (exit 1 on any error)
    Check(check::CheckArgs),
    /// Show what would change to make OVN match the specs (offline, or live with --db)
    Plan(plan::PlanArgs),
    /// Make the NB match the specs, or apply a saved plan, in one transaction
    Apply(apply::ApplyArgs),
    /// Remove everything wepoq owns for the specs' namespaces, and nothing else
    Destroy(destroy::DestroyArgs),
    /// Print the DNS zone (RFC 1035 master file) of a namespace
    Zone(zone::ZoneArgs),
    /// Draw the topology as Graphviz DOT or SVG
    Graph(graph::GraphArgs),
    /// Keep this host's labelled containers attached to OVN (one agent per host)
    Agent(agent::AgentArgs),
    /// Issue or revoke external clients' credentials (on a gateway host)
    #[command(subcommand)]
    Credentials(external::CredentialsCommand),
    /// Join this host to a namespace as an external client endpoint, through a gateway
    Connect(external::ConnectArgs),
    #[command(flatten)]
    Runtime(wepoq_runtime::cli::RuntimeCommand),
}

/// The specs a command reads, and how it treats their lockfiles.
#[derive(Debug, Clone, Args)]
pub struct SpecArgs {
    /// Spec files, one namespace each; the lockfile is `wepoq.lock` next to each
    #[arg(value_name = "SPEC", default_value = "wepoq.yaml")]
    pub specs: Vec<PathBuf>,
    /// Fail instead of writing a lockfile that would change (for CI)
    #[arg(long)]
    pub locked: bool,
    /// Show every warning; by default a warning code shows its first 5 and counts the rest
    #[arg(long)]
    pub all_warnings: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Destroy(args) => destroy::run(&args),
        Command::Zone(args) => zone::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Credentials(command) => external::credentials(&command),
        Command::Connect(args) => external::connect(&args),
        Command::Runtime(command) => wepoq_runtime::cli::run(command),
    }
}
