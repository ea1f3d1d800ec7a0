//! The control plane of container workers: for every running stub container (labelled
//! `wepoq.net/runtime`), the agent serves `<run_dir>/stubs/<name>/control.sock` and keeps
//! that stub's pool of worker containers through the Docker API (see docs/runtime.md).
//!
//! Level-triggered as the rest of the agent: a scan every [`SCAN`] lists the running stubs
//! and every worker container (by label); a stub without a pool gets one, a pool whose stub
//! is gone removes its workers, and a worker container whose stub is not running is removed.
//! Each pool is one task owning its stub's state ([`pool`]); Docker calls run as jobs whose
//! results come back as inputs. Nothing is kept on disk: a restarted agent finds its worker
//! containers by their labels.

mod container;
mod control;
mod pool;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use tokio::sync::mpsc;
use wepoq_runtime::control_proto::{RUNTIME_LABEL, RuntimeLabel};

use super::Metrics;
use crate::docker::{self, Docker};

/// The stub container's name, on each of its workers.
pub const STUB_LABEL: &str = "wepoq.net/stub";
/// The worker id the stub knows it by.
pub const WORKER_LABEL: &str = "wepoq.net/worker";
/// How often stubs and workers are listed.
const SCAN: Duration = Duration::from_millis(500);

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
    labels: HashMap<String, String>,
    runtime: Result<RuntimeLabel, String>,
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
            let runtime = serde_json::from_str(labels.get(RUNTIME_LABEL)?)
                .map_err(|e| format!("label {RUNTIME_LABEL} of {name}: {e}"));
            Some(Stub {
                name,
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
    tokio::select! {
        () = serve(cfg, metrics) => {}
        () = shutdown => {}
    }
}

async fn serve(cfg: WorkersConfig, metrics: Arc<Metrics>) {
    let cfg = Arc::new(cfg);
    let mut pools: HashMap<String, mpsc::UnboundedSender<pool::Input>> = HashMap::new();
    let mut engine: Option<Docker> = None;
    let mut every = tokio::time::interval(SCAN);
    let mut warned = HashSet::new();
    loop {
        every.tick().await;
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
        let stubs = match running_stubs(&e, &cfg).await {
            Ok(s) => s,
            Err(why) => {
                metrics.count_error("docker");
                eprintln!("wepoq agent: workers: {why}");
                engine = None;
                continue;
            }
        };
        let names: HashSet<String> = stubs.iter().map(|s| s.name.clone()).collect();
        // Pools of stubs gone (or whose task ended) stop and remove their workers.
        pools.retain(|name, tx| {
            let keep = names.contains(name) && !tx.is_closed();
            if !keep {
                let _ = tx.send(pool::Input::Shutdown);
            }
            keep
        });
        for stub in stubs {
            if pools.contains_key(&stub.name) {
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
            )
            .await
            {
                Ok(tx) => {
                    eprintln!("wepoq agent: serving stub {}", stub.name);
                    pools.insert(stub.name, tx);
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
