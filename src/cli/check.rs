//! `wepoq check`: compile and report; exit 1 on any error.

use std::process::ExitCode;

use clap::Args;

use super::SpecArgs;
use super::load::load_with;
use super::output::Format;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// How to print diagnostics: `json` and `sarif` go to stdout and always hold every one
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    match load_with(&args.spec, true, args.format) {
        Ok(loaded) => {
            for ns in &loaded.compiled.namespaces {
                eprintln!(
                    "ok: {} ({} services, {} endpoints, {} NB rows)",
                    ns.owner(),
                    ns.namespace.services.len(),
                    ns.endpoints.len(),
                    ns.rows.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::FAILURE,
    }
}
