//! `wepoq plan`: the changes that would make OVN match the specs, human or JSON; offline
//! (against an empty state) or, with `--db`, against the live NB.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wepoq_compiler::plan::Plan;
use wepoq_compiler::{plan_json, render};
use wepoq_reconciler::reconcile::{Options, ReconcileError, Reconciler};

use super::SpecArgs;
use super::containers::{self, DockerArgs};
use super::live::{self, DbArgs};
use super::load::load;
use super::output::{stdout_color, write_atomically};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Print the plan as JSON (format_version 2, see docs/plan-format.md)
    #[arg(long)]
    pub json: bool,
    /// Also save the plan as JSON to FILE, for `wepoq apply FILE`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing would change, 2 when something would, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan to take over rows that carry wepoq's names but are not its own
    #[arg(long)]
    pub adopt: bool,
}

pub fn run(args: &PlanArgs) -> ExitCode {
    let Ok(mut loaded) = load(&args.spec) else {
        return ExitCode::FAILURE;
    };
    let plan = if args.db.remotes_text().is_some() {
        let result = live::runtime().block_on(async {
            let containers = containers::plan(&loaded.compiled, &args.docker, args.adopt)
                .await
                .map_err(PlanError::Containers)?;
            let desired = live::desired(&mut loaded.compiled);
            let reconciler = live::connect(&args.db).await?;
            let observed = reconciler
                .observe(
                    &desired,
                    Options {
                        adopt: args.adopt,
                        ..Options::default()
                    },
                )
                .await?;
            let mut plan = Reconciler::plan(&desired, &observed);
            plan.containers = containers.changes;
            // A saved or machine-read plan carries what it was computed from.
            let plan = if args.out.is_some() || args.json {
                Reconciler::fingerprinted(plan, &observed)
            } else {
                plan
            };
            observed.free_in_background();
            Ok::<_, PlanError>(plan)
        });
        match result {
            Ok(plan) => plan,
            Err(PlanError::Nb(e)) => {
                live::report(&e, &args.db);
                return ExitCode::FAILURE;
            }
            Err(PlanError::Containers(e)) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        loaded.compiled.plan_from_nothing()
    };
    show(&plan, args.json, args.out.as_ref(), args.detailed_exitcode)
}

/// Why a live plan could not be made: the NB's errors come with their own help.
pub enum PlanError {
    Nb(ReconcileError),
    Containers(String),
}

impl From<ReconcileError> for PlanError {
    fn from(e: ReconcileError) -> PlanError {
        PlanError::Nb(e)
    }
}

/// Prints (and saves) a plan; the exit code follows `--detailed-exitcode`.
pub fn show(plan: &Plan, json: bool, out: Option<&PathBuf>, detailed_exitcode: bool) -> ExitCode {
    if let Some(path) = out
        && let Err(e) = write_atomically(path, &plan_json::to_json_text(plan))
    {
        eprintln!("error: cannot write the plan to {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if json {
        print!("{}", plan_json::to_json_text(plan));
    } else {
        print!("{}", render::human(plan, stdout_color()));
    }
    if detailed_exitcode && !plan.summary().is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
