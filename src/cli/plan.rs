//! `wepoq plan`: the changes that would make OVN match the specs, human or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wepoq_compiler::{plan_json, render};

use super::load::load;
use super::output::{stdout_color, write_atomically};
use super::SpecArgs;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the plan as JSON (format_version 1, see docs/plan-format.md)
    #[arg(long)]
    pub json: bool,
    /// Also save the plan as JSON to FILE, for `wepoq apply FILE`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing would change, 2 when something would, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn run(args: &PlanArgs) -> ExitCode {
    let Ok(loaded) = load(&args.spec) else { return ExitCode::FAILURE };
    let plan = loaded.compiled.plan_from_nothing();
    if let Some(path) = &args.out {
        if let Err(e) = write_atomically(path, &plan_json::to_json_text(&plan)) {
            eprintln!("error: cannot write the plan to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if args.json {
        print!("{}", plan_json::to_json_text(&plan));
    } else {
        print!("{}", render::human(&plan, stdout_color()));
    }
    if args.detailed_exitcode && !plan.summary().is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
