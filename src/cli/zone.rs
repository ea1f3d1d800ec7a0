//! `wepoq zone`: the namespace's DNS zone file on stdout.

use std::process::ExitCode;

use clap::Args;

use super::SpecArgs;
use super::load::load;

#[derive(Debug, Args)]
pub struct ZoneArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

pub fn run(args: &ZoneArgs) -> ExitCode {
    let Ok(loaded) = load(&args.spec) else {
        return ExitCode::FAILURE;
    };
    for ns in &loaded.compiled.namespaces {
        print!("{}", ns.zone);
    }
    ExitCode::SUCCESS
}
