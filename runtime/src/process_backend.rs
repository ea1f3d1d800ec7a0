//! Workers as local child processes, each in a fresh empty network namespace when root.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend::{
    BackendError, BoxFuture, ExitNotice, SpawnRequest, Started, Steps, WorkerBackend,
};
use crate::spare_netns::SpareNetns;
use crate::worker::{ENV_CONCURRENCY, ENV_SOCKET, ENV_WORKER_ID};

/// Starts `program args...` per worker, passing the socket and id through the environment.
#[derive(Debug)]
pub struct ProcessBackend {
    program: PathBuf,
    args: Vec<OsString>,
    /// `Some` when each worker gets a fresh, empty network namespace of its own: the ones
    /// made ahead of need, so a cold start only joins one. Fresh per worker, not one shared
    /// by the stub's workers: process workers run as the stub's user (root, when isolation
    /// is possible), and root in a shared namespace could bring `lo` up and reach its
    /// siblings.
    spares: Option<SpareNetns>,
    /// Worker id to pid, for stop; a std mutex since it is held only for a map operation.
    pids: Arc<Mutex<HashMap<String, i32>>>,
    /// The backend names its workers `w1`, `w2`, ...
    next_id: AtomicU64,
}

impl ProcessBackend {
    /// `isolate_network` puts the workers in an empty network namespace of their own (needs
    /// root): a worker then only ever sees the sockets handed to it.
    pub fn new(
        program: PathBuf,
        args: Vec<OsString>,
        isolate_network: bool,
    ) -> std::io::Result<ProcessBackend> {
        Ok(ProcessBackend {
            program,
            args,
            // Two: a burst of cold starts takes one each, and the next is being made while
            // the first joins; the rest of a larger burst makes its own.
            spares: isolate_network.then(|| SpareNetns::new(2)),
            pids: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether this process may create network namespaces (root, in practice).
    pub fn can_isolate_network() -> bool {
        nix::unistd::geteuid().is_root()
    }
}

impl WorkerBackend for ProcessBackend {
    fn spawn(
        &self,
        request: SpawnRequest,
        exited: ExitNotice,
    ) -> BoxFuture<'_, Result<Started, BackendError>> {
        let worker_id = format!("w{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        Box::pin(async move {
            let asked = std::time::Instant::now();
            let mut command = tokio::process::Command::new(&self.program);
            command
                .args(&self.args)
                .env(ENV_SOCKET, &request.socket)
                .env(ENV_WORKER_ID, &worker_id)
                .env(ENV_CONCURRENCY, request.concurrency.to_string())
                .stdin(Stdio::null());
            let isolate = self.spares.is_some();
            // Held until the child has joined it (spawn returns after exec), then closed here.
            let spare = self.spares.as_ref().and_then(SpareNetns::take);
            let spare_fd = spare.as_ref().map(|fd| fd.as_raw_fd());
            // SAFETY: the closure runs between fork and exec and only makes two syscalls;
            // `spare_fd` is open in the child, since the parent holds it until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    // A worker must not outlive a stub killed without a chance to stop it.
                    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                    match (isolate, spare_fd) {
                        (false, _) => {}
                        (true, Some(fd)) => nix::sched::setns(
                            BorrowedFd::borrow_raw(fd),
                            nix::sched::CloneFlags::CLONE_NEWNET,
                        )?,
                        (true, None) => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?,
                    }
                    Ok(())
                });
            }
            let spawned = command.spawn();
            // Fork and exec: the process backend's whole start.
            let start_us = asked.elapsed().as_secs_f64() * 1e6;
            drop(spare);
            if let Some(spares) = &self.spares {
                spares.refill();
            }
            let mut child = spawned.map_err(|e| BackendError::Spawn {
                source: Box::new(e),
            })?;
            let pid = child.id().map(|p| p as i32).unwrap_or(-1);
            self.pids.lock().unwrap().insert(worker_id.clone(), pid);
            let pids = self.pids.clone();
            let id = worker_id.clone();
            tokio::spawn(async move {
                let why = match child.wait().await {
                    Ok(status) => format!("process {pid} ended: {status}"),
                    Err(e) => format!("process {pid} lost: {e}"),
                };
                pids.lock().unwrap().remove(&id);
                exited.exited(why);
            });
            Ok(Started {
                worker_id,
                steps: Steps {
                    start_us: Some(start_us),
                    ..Steps::default()
                },
            })
        })
    }

    fn stop(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
        // SIGCONT after SIGTERM: a paused (stopped) process would keep the TERM pending.
        self.signal("stop", worker_id, &[Signal::SIGTERM, Signal::SIGCONT])
    }

    fn pause(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
        self.signal("pause", worker_id, &[Signal::SIGSTOP])
    }

    fn resume(&self, worker_id: &str) -> BoxFuture<'static, Result<Steps, BackendError>> {
        let t = std::time::Instant::now();
        let sent = self.signal("resume", worker_id, &[Signal::SIGCONT]);
        let unpause_us = t.elapsed().as_secs_f64() * 1e6;
        Box::pin(async move {
            sent.await.map(|()| Steps {
                unpause_us: Some(unpause_us),
                ..Steps::default()
            })
        })
    }
}

impl ProcessBackend {
    /// Sends the signals now, when called, so calls made in order act in order.
    fn signal(
        &self,
        op: &'static str,
        worker_id: &str,
        signals: &[Signal],
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let pid = self.pids.lock().unwrap().get(worker_id).copied();
        let mut result = Ok(());
        if let Some(pid) = pid {
            for &signal in signals {
                match kill(Pid::from_raw(pid), signal) {
                    // Already gone: its exit notice is on the way.
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        result = Err(BackendError::Control {
                            op,
                            worker_id: worker_id.to_owned(),
                            source: Box::new(e),
                        });
                        break;
                    }
                }
            }
        }
        Box::pin(std::future::ready(result))
    }
}
