//! `wepoq destroy`: remove exactly the rows wepoq owns for the specs' namespaces.

use std::process::ExitCode;

use clap::Args;
use wepoq_compiler::render;
use wepoq_reconciler::reconcile::{Desired, Options, ReconcileError, Reconciler, is_contention};

use super::SpecArgs;
use super::containers::{self, AttachArgs, DockerArgs};
use super::live::{self, DbArgs};
use super::load::load_with;
use super::output::{Format, stdout_color};
use wepoq_reconciler::docker::apply::Host;

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Specs whose namespaces to remove
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Destroy without asking
    #[arg(long)]
    pub auto_approve: bool,
}

pub fn run(args: &DestroyArgs) -> ExitCode {
    let Ok(loaded) = load_with(&args.spec, false, Format::Human) else {
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
    let runtime = live::runtime();
    let containers =
        match runtime.block_on(containers::plan_removal(&loaded.compiled, &args.docker)) {
            Ok(plan) => plan,
            Err(e) => {
                eprintln!("error: {e}\nnote: nothing was changed");
                return ExitCode::FAILURE;
            }
        };
    let mut refused = None;
    // The containers go first (with their veths and OVS ports), then the rows they hung
    // from, from the one observation the plan was shown from; the question covers both.
    let outcome = runtime.block_on(async {
        let reconciler = live::connect(&args.db).await.map_err(Err)?;
        let observed = reconciler
            .observe(&desired, Options::default())
            .await
            .map_err(Err)?;
        let plan = containers.shown(&Reconciler::plan(&desired, &observed));
        print!("{}", render::human(&plan, stdout_color()));
        if plan.summary().is_empty() {
            return Ok(None);
        }
        if !args.auto_approve {
            match live::confirm("Destroy these containers and rows?") {
                Ok(true) => {}
                Ok(false) => return Ok(Some(0)),
                Err(e) => {
                    refused = Some(e);
                    return Ok(Some(0));
                }
            }
        }
        Reconciler::check_foreign(&plan, &observed).map_err(Err)?;
        if !containers.changes.is_empty() || !containers.workers.is_empty() {
            let attacher = containers::attacher(&args.attach, reconciler.client.clone())
                .await
                .map_err(Ok)?;
            let host = Host {
                spec_hash: &desired.spec_hash,
                run_dir: &args.attach.run_dir,
            };
            containers::apply(&containers, attacher.as_ref(), host)
                .await
                .map_err(Ok)?;
        }
        let rows = match reconciler.apply_plan(&plan, &observed).await {
            Ok(_) => plan.summary().destroy - containers.changes.len(),
            // Someone moved the NB meanwhile, or the connection went with the outcome
            // unknown (a leader change): plan again from a fresh read, as apply does.
            Err(e)
                if e.is_retryable()
                    || matches!(&e, ReconcileError::Ovsdb(o) if is_contention(o)) =>
            {
                let (_, applied) = reconciler
                    .reconcile(&desired, Options::default(), |_, _| true)
                    .await
                    .map_err(Err)?;
                live::print_notes(&applied.notes);
                applied.summary.destroy
            }
            Err(e) => return Err(Err(e)),
        };
        observed.free_in_background();
        Ok(Some(rows + containers.changes.len()))
    });
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(0)) => {
            match refused {
                Some(why) => eprintln!("error: {why}"),
                None => eprintln!("Destroy cancelled: nothing was changed."),
            }
            ExitCode::FAILURE
        }
        Ok(Some(destroyed)) => {
            println!("\nDestroy complete: {destroyed} destroyed.");
            ExitCode::SUCCESS
        }
        Err(Ok(containers_failed)) => {
            eprintln!("error: {containers_failed}\nnote: the NB rows were left in place");
            ExitCode::FAILURE
        }
        Err(Err(e)) => {
            live::report(&e, &args.db);
            ExitCode::FAILURE
        }
    }
}
