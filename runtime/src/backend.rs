//! How the stub's pool manager starts and stops workers, whatever a worker is.
//!
//! The stub only needs three things from a backend: start a worker that will register on
//! the stub's socket under a given id, stop it, and say when it ended. Nothing here assumes
//! a process: the process backend lives beside this file, a Docker backend lives in the
//! reconciler crate (which may talk to Docker; this crate may not).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// A boxed future, so the trait stays object safe (`Arc<dyn WorkerBackend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend needs to start one worker.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The id the worker must send in its hello; the stub matches registrations by it.
    pub worker_id: String,
    /// The stub's worker socket, to be reachable from inside the worker (bind mount, path).
    pub socket: PathBuf,
    /// The concurrency limit the worker should announce.
    pub concurrency: u32,
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
    #[error("cannot start worker {worker_id}")]
    Spawn {
        worker_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot stop worker {worker_id}")]
    Stop {
        worker_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Starts and stops workers for the stub.
pub trait WorkerBackend: Send + Sync + 'static {
    /// Starts a worker; resolves once it is started, not once it registered (the stub sees
    /// that on its socket). `exited` must be called when the worker ends.
    fn spawn(
        &self,
        request: SpawnRequest,
        exited: ExitNotice,
    ) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Asks a worker to stop. Stopping one that already ended is not an error.
    fn stop(&self, worker_id: &str) -> BoxFuture<'_, Result<(), BackendError>>;
}
