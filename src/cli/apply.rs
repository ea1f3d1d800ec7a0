//! `wepoq apply`: make the NB match the specs (or a saved plan) in one transaction.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use wepoq_compiler::plan::Plan;
use wepoq_compiler::{plan_json, render};
use wepoq_reconciler::reconcile::{Applied, Options, ReconcileError, Reconciler};

use super::SpecArgs;
use super::containers::{self, AttachArgs, ContainerPlan, DockerArgs};
use super::live::{self, DbArgs};
use super::load::load;
use super::output::stdout_color;
use super::stubs;
use wepoq_reconciler::docker::apply::Host;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WaitFor {
    /// Until every chassis has the change (NB_Global.hv_cfg caught up)
    Hv,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Specs to apply, or one saved plan (a .json file from `wepoq plan --out`)
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Apply without asking (for pipelines; without a terminal wepoq refuses to ask)
    #[arg(long)]
    pub auto_approve: bool,
    /// Take over rows that carry wepoq's names but are not its own
    #[arg(long)]
    pub adopt: bool,
    /// Return only once the change has reached the data plane (the default when the specs
    /// run containers: every chassis has the change, every container's port is up, and every
    /// stub listens with its min_warm workers registered)
    #[arg(long, value_enum)]
    pub wait: Option<WaitFor>,
    /// Return as soon as the NB transaction and the containers are done
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,
    /// How long waiting for the data plane may take, e.g. 60s
    #[arg(long, default_value = "60s", value_parser = live::parse_duration)]
    pub wait_timeout: Duration,
    /// Exit 0 when nothing changed, 2 when something did, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Stay connected: re-apply whenever a spec changes or someone changes what wepoq owns
    /// (needs --auto-approve; stops on Ctrl-C or SIGTERM)
    #[arg(long, conflicts_with_all = ["wait", "detailed_exitcode"])]
    pub watch: bool,
}

pub fn run(args: &ApplyArgs) -> ExitCode {
    if args.watch {
        return super::watch::run(args);
    }
    let saved = match args.spec.specs.as_slice() {
        [one] if one.extension().is_some_and(|e| e == "json") => Some(one.as_path()),
        _ => None,
    };
    let result = match saved {
        Some(path) => apply_saved(args, path),
        None => apply_specs(args),
    };
    match result {
        Ok(applied) => {
            if args.detailed_exitcode && !applied.summary.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(()) => ExitCode::FAILURE,
    }
}

fn apply_specs(args: &ApplyArgs) -> Result<Applied, ()> {
    let mut loaded = load(&args.spec).map_err(|_| ())?;
    let runtime = live::runtime();
    // Docker is asked first: a spec whose containers cannot be made is refused before the
    // NB is written.
    let containers = runtime
        .block_on(containers::plan(&loaded.compiled, &args.docker, args.adopt))
        .map_err(|e| eprintln!("error: {e}\nnote: nothing was changed"))?;
    let spec_hash = loaded.compiled.spec_hash.clone();
    let desired = live::desired(&mut loaded.compiled);
    let options = Options {
        adopt: args.adopt,
        ..Options::default()
    };
    let mut refused = None;
    let asked = std::cell::Cell::new(false);
    let outcome = runtime.block_on(async {
        let reconciler = live::connect(&args.db).await?;
        let mut confirm = |plan: &Plan, attempt: usize| {
            if attempt > 1 {
                eprintln!("note: the NB was read again and planned again (attempt {attempt})");
            }
            asked.set(true);
            print!("{}", render::human(&containers.shown(plan), stdout_color()));
            if args.auto_approve {
                return true;
            }
            match live::confirm(&format!(
                "Apply these changes to {}?",
                args.db.remotes_text().unwrap_or_else(|| "the NB".into())
            )) {
                Ok(yes) => yes,
                Err(e) => {
                    refused = Some(e);
                    false
                }
            }
        };
        let (plan, mut applied) = reconciler
            .reconcile(&desired, options, &mut confirm)
            .await?;
        if applied.operations == 0 && !plan.changes.is_empty() {
            return Err(ApplyError::Declined);
        }
        // No NB change: the containers' changes still want a look and a yes.
        if !asked.get() && !containers.changes.is_empty() && !confirm(&plan, 1) {
            return Err(ApplyError::Declined);
        }
        let plan = containers.shown(&plan);
        applied.summary = plan.summary();
        bring_up(&reconciler, args, &containers, &spec_hash, &applied).await?;
        Ok::<_, ApplyError>((plan, applied))
    });
    finish(args, outcome, refused)
}

/// What follows the NB transaction: the containers, then (by default when there are any)
/// the wait until the data plane has everything.
async fn bring_up(
    reconciler: &Reconciler,
    args: &ApplyArgs,
    containers: &ContainerPlan,
    spec_hash: &str,
    applied: &Applied,
) -> Result<(), ApplyError> {
    if !containers.changes.is_empty() || !containers.current.is_empty() {
        let attacher = containers::attacher(&args.attach, reconciler.client.clone())
            .await
            .map_err(ApplyError::Containers)?;
        let host = Host {
            spec_hash,
            run_dir: &args.attach.run_dir,
        };
        containers::apply(containers, attacher.as_ref(), host)
            .await
            .map_err(ApplyError::Containers)?;
    }
    if args.wait.is_some() || (!args.no_wait && !containers.desired.is_empty()) {
        wait(reconciler, args, applied).await?;
        containers::wait_ports_up(&reconciler.client, &containers.desired, args.wait_timeout)
            .await
            .map_err(ApplyError::Containers)?;
        if let Some(docker) = &containers.docker {
            stubs::wait_ready(
                docker,
                &containers.desired,
                &args.attach.run_dir,
                args.wait_timeout,
            )
            .await
            .map_err(ApplyError::Containers)?;
        }
    }
    Ok(())
}

/// Why an apply failed after the NB was reached: the NB's errors come with their own help;
/// the containers' say what was done and what was not.
enum ApplyError {
    /// The plan was not approved; nothing was changed.
    Declined,
    Nb(ReconcileError),
    Containers(String),
}

impl From<ReconcileError> for ApplyError {
    fn from(e: ReconcileError) -> ApplyError {
        ApplyError::Nb(e)
    }
}

fn apply_saved(args: &ApplyArgs, path: &Path) -> Result<Applied, ()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| eprintln!("error: cannot read the plan {}: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| eprintln!("error: {} is not JSON: {e}", path.display()))?;
    let plan =
        plan_json::from_json(&json).map_err(|e| eprintln!("error: {}: {e}", path.display()))?;
    print!("{}", render::human(&plan, stdout_color()));
    let mut refused = None;
    if !plan.summary().is_empty() && !args.auto_approve {
        match live::confirm(&format!(
            "Apply this saved plan to {}?",
            args.db.remotes_text().unwrap_or_else(|| "the NB".into())
        )) {
            Ok(true) => {}
            Ok(false) => refused = Some("not applied: the answer was not 'yes'".to_string()),
            Err(e) => refused = Some(e),
        }
    }
    if let Some(why) = refused {
        eprintln!("error: {why}");
        return Err(());
    }
    let outcome = live::runtime().block_on(async {
        let containers = containers::from_saved(&plan, &args.docker)
            .await
            .map_err(ApplyError::Containers)?;
        let reconciler = live::connect(&args.db).await?;
        let mut applied = reconciler.apply_saved(&plan, &[]).await?;
        applied.summary = plan.summary();
        bring_up(&reconciler, args, &containers, &plan.spec_hash, &applied).await?;
        Ok::<_, ApplyError>((plan.clone(), applied))
    });
    finish(args, outcome, None)
}

async fn wait(
    reconciler: &Reconciler,
    args: &ApplyArgs,
    applied: &Applied,
) -> Result<(), ReconcileError> {
    if let Some(WaitFor::Hv) = args.wait
        && (applied.operations > 0 || applied.summary.is_empty())
    {
        reconciler.client.sync_hv(args.wait_timeout).await?;
    }
    Ok(())
}

fn finish(
    args: &ApplyArgs,
    outcome: Result<(Plan, Applied), ApplyError>,
    refused: Option<String>,
) -> Result<Applied, ()> {
    match outcome {
        Ok((plan, applied)) => {
            live::print_notes(&applied.notes);
            if plan.summary().is_empty() {
                println!("\nNo changes: the NB and the containers already match the spec.");
                return Ok(applied);
            }
            let s = applied.summary;
            println!(
                "\nApply complete: {} added, {} changed, {} destroyed ({} operations in one transaction, {} ms{}).",
                s.add,
                s.change,
                s.destroy,
                applied.operations,
                applied.elapsed.as_millis(),
                if waits_for_data_plane(args, &plan) {
                    ", data plane caught up"
                } else {
                    ""
                }
            );
            Ok(applied)
        }
        Err(ApplyError::Declined) => {
            match refused {
                Some(why) => eprintln!("error: {why}"),
                None => eprintln!("Apply cancelled: nothing was changed."),
            }
            Err(())
        }
        Err(ApplyError::Nb(e)) => {
            live::report(&e, &args.db);
            Err(())
        }
        Err(ApplyError::Containers(e)) => {
            eprintln!("error: {e}");
            Err(())
        }
    }
}

/// `--wait hv`, or by default when the plan runs containers.
fn waits_for_data_plane(args: &ApplyArgs, plan: &Plan) -> bool {
    args.wait.is_some() || (!args.no_wait && plan.containers.iter().any(|c| c.unit.is_some()))
}
