//! How the stub's pool manager starts and stops workers, whatever a worker is.
//!
//! The stub needs a few things from a backend: start a worker (the backend names it, and the
//! worker registers on the stub's socket under that name), pause and resume an idle one,
//! stop it, and say when it ended. Nothing here assumes a process: the process backend lives
//! beside this file, the remote one asks the host agent (which holds the Docker side; this
//! crate may not talk to Docker).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// A boxed future, so the trait stays object safe (`Arc<dyn WorkerBackend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend needs to start one worker.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The stub's worker socket, to be reachable from inside the worker (bind mount, path).
    pub socket: PathBuf,
    /// The concurrency limit the worker should announce.
    pub concurrency: u32,
}

/// How long the backend's own steps took for one start or resume, as far as it knows them:
/// the host agent measures its Docker calls (none for a step it did not take: no create
/// when a pre-created container was ready), the process backend its fork and exec.
/// Also the `create_us`, `start_us` and `unpause_us` fields of the stub's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Steps {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpause_us: Option<f64>,
}

/// A started worker: the id it will register with and what starting it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub worker_id: String,
    pub steps: Steps,
}

/// Called once when a started worker ends, however it ends (exit, crash, removed).
pub struct ExitNotice(Box<dyn FnOnce(String) + Send>);

impl ExitNotice {
    pub fn new(f: impl FnOnce(String) + Send + 'static) -> ExitNotice {
        ExitNotice(Box::new(f))
    }

    /// Reports the end of the worker with a short human description of why.
    pub fn exited(self, why: String) {
        (self.0)(why)
    }
}

impl std::fmt::Debug for ExitNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExitNotice")
    }
}

/// Why a backend could not start or stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot start a worker")]
    Spawn {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot {op} worker {worker_id}")]
    Control {
        op: &'static str,
        worker_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// The innermost cause, for records and logs that say why in one line.
    pub fn why(&self) -> String {
        std::error::Error::source(self)
            .map(|s| s.to_string())
            .unwrap_or_else(|| self.to_string())
    }
}

/// Starts and stops workers for the stub.
pub trait WorkerBackend: Send + Sync + 'static {
    /// Starts a worker and names it: resolves to the id the worker will register with (and
    /// the steps' times),
    /// once it is started (or unpaused), not once it registered (the stub sees that on its
    /// socket, possibly before this resolves). `exited` must be called when the worker ends.
    fn spawn(
        &self,
        request: SpawnRequest,
        exited: ExitNotice,
    ) -> BoxFuture<'_, Result<Started, BackendError>>;

    /// Asks a worker to stop. Stopping one that already ended is not an error; a paused one
    /// must end too.
    ///
    /// For this and the calls below, the stub calls the method on its dispatcher thread and
    /// runs the future elsewhere: a backend that orders its work when called (not when
    /// polled) keeps a pause and the resume right after it in order.
    fn stop(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>>;

    /// Freezes an idle worker (no CPU) without losing its registration: a connection
    /// handed to it waits in its socket until [`WorkerBackend::resume`].
    fn pause(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>>;

    /// Thaws a paused worker; says how long the thaw took when the backend knows.
    fn resume(&self, worker_id: &str) -> BoxFuture<'static, Result<Steps, BackendError>>;
}
