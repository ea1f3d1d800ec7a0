//! The control plane of container workers: for every running stub container (labelled
//! `wepoq.net/runtime`), the agent serves `<run_dir>/stubs/<name>/control.sock` and keeps
//! that stub's pool of worker containers through the Docker API (see docs/runtime.md).
//!
//! Level-triggered as the rest of the agent: a scan every [`SCAN`] lists the running stubs
//! and every worker container (by label); a stub without a pool gets one, a pool whose stub
//! is gone removes its workers, and a worker container whose stub is not running is removed.
//! Docker's events make it quicker, not different ([`events`]): a worker's `die` goes to its
//! pool at once, and a stub's `start` or `die` makes the scan run now.
//! Each pool is one task owning its stub's state ([`pool`]); Docker calls run as jobs whose
//! results come back as inputs. Nothing is kept on disk: a restarted agent finds its worker
//! containers by their labels.

mod container;
mod control;
mod events;
mod pool;
mod timestamp;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use tokio::sync::{mpsc, watch};
use wepoq_runtime::control_proto::{RUNTIME_LABEL, RuntimeLabel};

use events::Notice;

use super::Metrics;
use crate::docker::{self, Docker};

/// The stub container's name, on each of its workers.
pub const STUB_LABEL: &str = "wepoq.net/stub";
/// The worker id the stub knows it by.
pub const WORKER_LABEL: &str = "wepoq.net/worker";
/// How often stubs and workers are listed.
const SCAN: Duration = Duration::from_millis(500);
/// How long a stub seen dying gets no new pool, unless it starts again.
const DYING: Duration = Duration::from_secs(2);

/// Where the control sockets live and what workers are given.
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    pub docker: Option<String>,
    /// `<run_dir>/stubs/<stub name>/` is the stub's directory (`--run-dir`).
    pub run_dir: PathBuf,
    /// The static wepoq-runtime binary mounted into workers of `shim` images.
    pub shim_binary: Option<PathBuf>,
    /// Only stubs (and workers) that also carry this label, `KEY=VALUE`.
    pub only_label: Option<String>,
}

fn filters(cfg: &WorkersConfig, label: &str) -> HashMap<String, Vec<String>> {
    let mut labels = vec![label.to_owned()];
    labels.extend(cfg.only_label.clone());
    HashMap::from([("label".to_owned(), labels)])
}

/// A running stub as Docker lists it.
struct Stub {
    name: String,
    id: String,
    labels: HashMap<String, String>,
    runtime: Result<RuntimeLabel, String>,
}

/// A stub's pool as the scan knows it: its inputs and the container it serves.
struct PoolHandle {
    inputs: mpsc::UnboundedSender<pool::Input>,
    container: String,
}

/// Aborts the task when dropped: the event watcher ends with the scan that started it.
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn running_stubs(engine: &Docker, cfg: &WorkersConfig) -> Result<Vec<Stub>, String> {
    let mut f = filters(cfg, RUNTIME_LABEL);
    f.insert("status".into(), vec!["running".into()]);
    let listed = engine
        .list_containers(Some(ListContainersOptions {
            filters: Some(f),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("list stubs: {e}"))?;
    Ok(listed
        .into_iter()
        .filter_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_owned();
            let labels = c.labels.unwrap_or_default();
            let runtime = RuntimeLabel::parse(labels.get(RUNTIME_LABEL)?)
                .map_err(|e| format!("label {RUNTIME_LABEL} of {name}: {e}"));
            Some(Stub {
                name,
                id: c.id?,
                labels,
                runtime,
            })
        })
        .collect())
}

/// Worker containers whose stub is not running: removed (a stub gone takes its workers).
async fn sweep_orphans(engine: &Docker, cfg: &WorkersConfig, stubs: &HashSet<String>) {
    let Ok(listed) = engine
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters(cfg, STUB_LABEL)),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    for c in listed {
        let stub = c.labels.as_ref().and_then(|l| l.get(STUB_LABEL));
        if stub.is_some_and(|s| !stubs.contains(s))
            && let Some(id) = c.id
        {
            let _ = engine
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}

/// Serves every stub's control socket until `shutdown`; worker containers stay when it stops.
pub async fn run(cfg: WorkersConfig, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    run_scanning_every(cfg, SCAN, metrics, shutdown).await
}

/// [`run`] with the scan (and each pool's listing) every `scan` instead of [`SCAN`]: tests
/// lengthen it to show that events alone keep the pools up to date.
pub async fn run_scanning_every(
    cfg: WorkersConfig,
    scan: Duration,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::select! {
        () = serve(cfg, scan, metrics) => {}
        () = shutdown => {}
    }
}

async fn serve(cfg: WorkersConfig, scan: Duration, metrics: Arc<Metrics>) {
    let cfg = Arc::new(cfg);
    // The pools watch this: when the agent stops (this future dropped), they stop too and
    // leave their containers to the next agent.
    let (_alive, alive_rx) = watch::channel(());
    let mut pools: HashMap<String, PoolHandle> = HashMap::new();
    let mut engine: Option<Docker> = None;
    let mut every = tokio::time::interval(scan);
    let mut warned = HashSet::new();
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let mut watcher: Option<Watcher> = None;
    // Stub containers seen dying, for [`DYING`]: listed right after its `die`, a stub may
    // still show as running, and must not get a new pool for that.
    let mut dying: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            Some(notice) = notices.recv() => match notice {
                Notice::WorkerDied { stub, worker, why } => {
                    if let Some(p) = pools.get(&stub) {
                        let _ = p.inputs.send(pool::Input::Died { worker, why });
                    }
                    continue;
                }
                // A stub came or went: scan now rather than at the next tick.
                Notice::StubStarted { name, id } => {
                    dying.remove(&id);
                    if let Some(p) = pools.get(&name) {
                        let _ = p.inputs.send(pool::Input::StubStarted);
                    }
                }
                // The pool stops now if the death is newer than the start it knows (a
                // replayed event of an earlier run is not); a restarted stub gets a new
                // pool from the scan.
                Notice::StubDied { name, id, at } => {
                    if let Some(p) = pools.get(&name).filter(|p| p.container == id) {
                        let _ = p.inputs.send(pool::Input::StubDied(at));
                    }
                    dying.insert(id, Instant::now());
                }
            },
        }
        let e = match &engine {
            Some(e) => e.clone(),
            None => match docker::connect(cfg.docker.as_deref()).await {
                Ok(e) => {
                    engine = Some(e.clone());
                    e
                }
                Err(e) => {
                    metrics.count_error("docker");
                    eprintln!("wepoq agent: workers: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        if watcher.as_ref().is_none_or(|w| w.0.is_finished()) {
            // Before the listing: the watcher replays the last second, so nothing between
            // the two is missed.
            watcher = Some(Watcher(tokio::spawn(events::watch(
                e.clone(),
                cfg.only_label.clone(),
                notices_tx.clone(),
            ))));
        }
        let stubs = match running_stubs(&e, &cfg).await {
            Ok(s) => s,
            Err(why) => {
                metrics.count_error("docker");
                eprintln!("wepoq agent: workers: {why}");
                engine = None;
                watcher = None;
                continue;
            }
        };
        let running: HashMap<&str, &str> = stubs
            .iter()
            .map(|s| (s.name.as_str(), s.id.as_str()))
            .collect();
        // Pools of stubs gone, replaced by a new container of the same name, or whose task
        // ended stop and remove their workers.
        pools.retain(|name, p| {
            let keep =
                running.get(name.as_str()) == Some(&p.container.as_str()) && !p.inputs.is_closed();
            if !keep {
                let _ = p.inputs.send(pool::Input::Shutdown);
            }
            keep
        });
        dying.retain(|_, since| since.elapsed() < DYING);
        for stub in stubs {
            if pools.contains_key(&stub.name) || dying.contains_key(&stub.id) {
                continue;
            }
            let runtime = match stub.runtime {
                Ok(r) => r,
                Err(why) => {
                    if warned.insert(stub.name.clone()) {
                        metrics.count_error("bad_label");
                        eprintln!("wepoq agent: stub {}: {why}", stub.name);
                    }
                    continue;
                }
            };
            match pool::start(
                cfg.clone(),
                e.clone(),
                metrics.clone(),
                stub.name.clone(),
                stub.labels,
                runtime,
                scan,
                alive_rx.clone(),
            )
            .await
            {
                Ok(inputs) => {
                    eprintln!("wepoq agent: serving stub {}", stub.name);
                    pools.insert(
                        stub.name,
                        PoolHandle {
                            inputs,
                            container: stub.id,
                        },
                    );
                }
                Err(why) => {
                    if warned.insert(stub.name.clone()) {
                        metrics.count_error("io");
                        eprintln!("wepoq agent: stub {}: {why}", stub.name);
                    }
                }
            }
        }
        sweep_orphans(&e, &cfg, &pools.keys().cloned().collect()).await;
    }
}
