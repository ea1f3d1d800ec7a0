//! The host agent: keeps every running container labelled with a wepoq endpoint attached to
//! its OVN logical port (next-to-lay, see [`crate::attach`]), whoever started it.
//!
//! One dispatcher task owns all state; everything else is an [`Input`] on its channel:
//! Docker's list and events (from [`watch`]), finished per-container jobs, a periodic tick.
//! The dispatcher is level-triggered: an input only marks a container "to converge", and
//! the job that converges it looks at what *is* (Docker's inspect, the NB, the OVS rows)
//! and attaches or detaches accordingly. At start, after a Docker reconnect and after an
//! OVSDB reconnect every labelled container and every attachment on the bridge is
//! converged again. Failures are logged, counted by kind and retried with backoff per
//! container; nothing makes the agent exit. Stopping it leaves attachments in place.
//!
//! Next to it, [`workers`] serves each stub container's control socket and keeps its pool of
//! worker containers (one task per stub owns that pool's state).

mod converge;
mod dispatcher;
pub mod gateway;
pub mod metrics;
mod watch;
pub mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::attach::{AttachConfig, AttachError, Attacher};
use crate::docker::DockerError;
use crate::ovsdb::{self, Timeouts};
pub use metrics::Metrics;

/// What the agent connects to.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Docker engine (`None`: `DOCKER_HOST` or the default socket).
    pub docker: Option<String>,
    /// The OVN Northbound database, where logical ports are looked up: remotes as `--db`
    /// takes them (a clustered NB's members), with TLS for `ssl:` ones.
    pub nb: String,
    pub nb_tls: Option<ovsdb::TlsConfig>,
    pub nb_timeouts: Timeouts,
    pub attach: AttachConfig,
    /// Containers converged at once.
    pub parallel: usize,
    /// Only containers that also carry this label (`KEY=VALUE`): several agents on one
    /// Docker engine, each for its own OVS (tests, sandboxes). `None`: every labelled one.
    pub only_label: Option<String>,
    /// Container workers for stubs (`None`: attachment only).
    pub workers: Option<workers::WorkersConfig>,
    /// This host is a gateway for external clients (`--gateway NAME`).
    pub gateway: Option<gateway::GatewayAgentConfig>,
}

/// Why the agent could not start (once running, it never stops on errors).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("NB {at}: {source}")]
    Nb {
        at: String,
        #[source]
        source: ovsdb::Error,
    },
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("{0}")]
    Gateway(String),
}

/// Something the dispatcher reacts to.
pub enum Input {
    /// Docker (re)connected; `ids` are every labelled container, in any state.
    Listed {
        ids: Vec<String>,
        engine: bollard::Docker,
    },
    /// A labelled container started (`at`: the event's time).
    Started {
        id: String,
        at: Option<SystemTime>,
    },
    /// A labelled container died or was removed.
    Stopped {
        id: String,
    },
    DockerLost(String),
    /// A converge job finished.
    Done(converge::Report),
    Tick,
}

/// Why converging one container failed; [`JobError::kind`] labels the error metric.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("label {label}={fqdn} names no logical port in the NB")]
    NoPort { label: &'static str, fqdn: String },
}

impl JobError {
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Docker(_) => "docker",
            JobError::Attach(e) => e.kind(),
            JobError::NoPort { .. } => "no_port",
        }
    }
}

/// Connects to the NB and OVS, then runs until `shutdown` completes. Attachments stay.
pub async fn run(
    cfg: AgentConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let nb_error = |source| AgentError::Nb {
        at: cfg.nb.clone(),
        source,
    };
    let remotes = ovsdb::Remotes::parse(&cfg.nb).map_err(nb_error)?;
    let nb = ovsdb::Client::connect_with(&remotes, cfg.nb_tls.as_ref(), cfg.nb_timeouts.clone())
        .await
        .map_err(nb_error)?;
    let attacher = Attacher::connect(cfg.attach.clone()).await?;
    let gateway = match &cfg.gateway {
        Some(g) => {
            let started = gateway::start(g, &cfg.attach)
                .await
                .map_err(AgentError::Gateway)?;
            if let Some(counters) = started.tunnel_counters() {
                let _ = metrics.tunnel.set(counters);
            }
            Some(tokio::spawn(gateway::run(started, nb.clone())))
        }
        None => None,
    };
    metrics
        .ovs_up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch::run(
        cfg.docker.clone(),
        cfg.only_label.clone(),
        tx.clone(),
    ));
    let ticker = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            while tx.send(Input::Tick).is_ok() {
                every.tick().await;
            }
        })
    };
    let metrics_for_workers = metrics.clone();
    let dispatcher = dispatcher::Dispatcher::new(
        Arc::new(converge::Ctx {
            nb,
            attacher,
            only_label: cfg.only_label.clone(),
        }),
        metrics,
        tx,
        cfg.parallel.max(1),
    );
    let pools = cfg
        .workers
        .clone()
        .map(|w| tokio::spawn(workers::run(w, metrics_for_workers, std::future::pending())));
    tokio::select! {
        () = dispatcher.run(rx) => {}
        () = shutdown => {}
    }
    watcher.abort();
    ticker.abort();
    if let Some(p) = pools {
        p.abort();
    }
    if let Some(g) = gateway {
        g.abort();
    }
    Ok(())
}
