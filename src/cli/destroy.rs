//! `wepoq destroy`: remove exactly the rows wepoq owns for the specs' namespaces.

use std::process::ExitCode;

use clap::Args;
use wepoq_compiler::render;
use wepoq_reconciler::reconcile::{Desired, Options};

use super::SpecArgs;
use super::live::{self, DbArgs};
use super::load::load_with;
use super::output::stdout_color;

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Specs whose namespaces to remove
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub db: DbArgs,
    /// Destroy without asking
    #[arg(long)]
    pub auto_approve: bool,
}

pub fn run(args: &DestroyArgs) -> ExitCode {
    let Ok(loaded) = load_with(&args.spec, false) else {
        return ExitCode::FAILURE;
    };
    // Nothing desired: every owned row of these namespaces goes, and nothing else.
    let desired = Desired {
        spec_hash: loaded.compiled.spec_hash.clone(),
        namespaces: loaded
            .compiled
            .namespaces
            .iter()
            .map(|ns| (ns.owner(), Vec::new()))
            .collect(),
    };
    let mut refused = None;
    let outcome = live::runtime().block_on(async {
        let reconciler = live::connect(&args.db).await?;
        reconciler
            .reconcile(&desired, Options::default(), |plan, _| {
                print!("{}", render::human(plan, stdout_color()));
                if args.auto_approve {
                    return true;
                }
                match live::confirm("Destroy these rows?") {
                    Ok(yes) => yes,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                }
            })
            .await
    });
    match outcome {
        Ok((plan, applied)) => {
            if let Some(why) = refused {
                eprintln!("error: {why}");
                return ExitCode::FAILURE;
            }
            live::print_notes(&applied.notes);
            if plan.changes.is_empty() {
                print!("{}", render::human(&plan, stdout_color()));
                return ExitCode::SUCCESS;
            }
            if applied.operations == 0 {
                eprintln!("Destroy cancelled: nothing was changed.");
                return ExitCode::FAILURE;
            }
            println!(
                "\nDestroy complete: {} destroyed ({} operations, {} ms).",
                applied.summary.destroy,
                applied.operations,
                applied.elapsed.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            live::report(&e, &args.db);
            ExitCode::FAILURE
        }
    }
}
