//! `wepoq apply --watch`: stay connected and keep the NB matching the specs. Re-applies when
//! a spec or lockfile changes and when someone changes what wepoq owns (drift is repaired
//! as it happens), planning from a monitored copy of the owned rows rather than reading
//! them all again, so a one-service change costs milliseconds on a big NB.
//!
//! It never applies a spec that does not compile: the diagnostics are printed and the last
//! good spec stays in force. Errors of the NB (a conflict, a lost connection) are printed
//! and retried on the next change or after a pause. SIGINT or SIGTERM stops it, exit 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use wepoq_compiler::render;
use wepoq_reconciler::cached::CachedReconciler;
use wepoq_reconciler::reconcile::{Desired, Options};

use super::apply::ApplyArgs;
use super::containers;
use super::live::{self, DbArgs};
use super::load::load;
use super::output::stdout_color;

/// How often the spec files are looked at (their size and modification time).
const POLL: Duration = Duration::from_millis(200);
/// After the NB reports a change, wait this long for more before planning (a burst of hand
/// edits is repaired once).
const SETTLE: Duration = Duration::from_millis(100);
/// After an error, try again at the latest after this long.
const RETRY: Duration = Duration::from_secs(5);

/// Why a round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Start,
    Spec,
    Drift,
    Retry,
}

pub fn run(args: &ApplyArgs) -> ExitCode {
    if !args.auto_approve {
        eprintln!("error: --watch applies every change without asking: say so with --auto-approve");
        return ExitCode::FAILURE;
    }
    if args
        .spec
        .specs
        .iter()
        .any(|s| s.extension().is_some_and(|e| e == "json"))
    {
        eprintln!("error: --watch follows specs, not a saved plan");
        return ExitCode::FAILURE;
    }
    let Ok(mut loaded) = load(&args.spec) else {
        return ExitCode::FAILURE;
    };
    let mut desired = live::desired(&mut loaded.compiled);
    // What is left of the compilation (its rows went into `desired`) names the containers.
    let mut compiled = loaded.compiled;
    let owners = desired.owners();
    let files = watched_files(&args.spec.specs);
    let options = Options {
        adopt: args.adopt,
        ..Options::default()
    };

    live::runtime().block_on(async {
        let started = Instant::now();
        let mut cached = match async { CachedReconciler::start(live::connect(&args.db).await?, &owners).await }.await {
            Ok(cached) => cached,
            Err(e) => {
                live::report(&e, &args.db);
                return ExitCode::FAILURE;
            }
        };
        let Some(stop) = live::stop_signal() else {
            return ExitCode::FAILURE;
        };
        tokio::pin!(stop);
        println!(
            "Watching {} and {} ({} owned rows read in {} ms); Ctrl-C stops.",
            args.spec.specs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            args.db.remotes_text().unwrap_or_else(|| "the NB".into()),
            cached.observed().rows.values().map(Vec::len).sum::<usize>(),
            started.elapsed().as_millis()
        );
        let mut seen = stamps(&files);
        let mut cause = Cause::Start;
        // Containers drift through Docker, not the NB: its events wake a round too.
        let mut drift = match wepoq_reconciler::docker::connect(args.docker.docker.as_deref()).await {
            Ok(engine) => Some(wepoq_reconciler::docker::drift_events(&engine, &owners)),
            Err(_) => None,
        };
        loop {
            let mut failed = round(&mut cached, &desired, options, cause, &args.db).await;
            if !failed {
                failed = containers::watch_round(&compiled, &args.docker, &args.attach, cached.client(), &compiled.spec_hash, args.adopt).await;
            }
            let next = tokio::select! {
                _ = &mut stop => None,
                changed = cached.changed() => match changed {
                    Ok(()) => {
                        tokio::time::sleep(SETTLE).await;
                        Some(Cause::Drift)
                    }
                    Err(e) => {
                        live::report(&e, &args.db);
                        return ExitCode::FAILURE;
                    }
                },
                Some(()) = async { drift.as_mut()?.recv().await } => {
                    tokio::time::sleep(SETTLE).await;
                    Some(Cause::Drift)
                }
                () = spec_change(&files, &mut seen) => Some(Cause::Spec),
                () = tokio::time::sleep(RETRY), if failed => Some(Cause::Retry),
            };
            let Some(why) = next else {
                println!("Stopped.");
                return ExitCode::SUCCESS;
            };
            cause = why;
            if why == Cause::Spec {
                // A spec that does not compile leaves the last good one in force.
                match load(&args.spec) {
                    Ok(mut loaded) => {
                        desired = live::desired(&mut loaded.compiled);
                        compiled = loaded.compiled;
                    }
                    Err(_) => eprintln!("The spec does not compile: nothing applied; the last good spec stays in force."),
                }
                // Compiling may have written the lockfile: that is not a change to follow.
                seen = stamps(&files);
            }
        }
    })
}

/// Plans and applies once; returns whether it failed (to retry later).
async fn round(
    cached: &mut CachedReconciler,
    desired: &Desired,
    options: Options,
    cause: Cause,
    db: &DbArgs,
) -> bool {
    let mut shown = false;
    let result = cached
        .reconcile(desired, options, |plan, _| {
            print!("{}", render::human(plan, stdout_color()));
            shown = true;
            true
        })
        .await;
    if let Ok((_, applied)) = &result {
        live::print_notes(&applied.notes);
    }
    match result {
        Ok((plan, applied)) if !plan.changes.is_empty() => {
            let s = applied.summary;
            let what = match cause {
                Cause::Start => "Applied",
                Cause::Spec => "Applied the spec change",
                Cause::Drift => "Repaired drift",
                Cause::Retry => "Applied on retry",
            };
            println!(
                "\n{what}: {} added, {} changed, {} destroyed ({} operations in one transaction, {} ms).",
                s.add,
                s.change,
                s.destroy,
                applied.operations,
                applied.elapsed.as_millis()
            );
            false
        }
        Ok(_) => {
            if cause != Cause::Drift {
                println!("No changes: the NB already matches the spec.");
            }
            false
        }
        Err(e) => {
            if shown {
                println!();
            }
            live::report(&e, db);
            eprintln!(
                "Still watching; trying again on the next change or in {} s.",
                RETRY.as_secs()
            );
            true
        }
    }
}

/// The specs and their lockfiles.
fn watched_files(specs: &[PathBuf]) -> Vec<PathBuf> {
    specs
        .iter()
        .flat_map(|s| [s.clone(), s.with_file_name("wepoq.lock")])
        .collect()
}

type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Returns once a watched file's size or modification time differs from `seen` (which it
/// updates). Polling, so editors that replace the file by renaming are followed too.
async fn spec_change(files: &[PathBuf], seen: &mut Vec<Stamp>) {
    loop {
        tokio::time::sleep(POLL).await;
        let now = stamps(files);
        if now != *seen {
            *seen = now;
            return;
        }
    }
}
