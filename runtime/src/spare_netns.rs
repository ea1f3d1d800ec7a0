//! Empty network namespaces made before a worker needs one, so a cold start does not wait
//! for the kernel to build one.
//!
//! Making a network namespace is the most expensive step a process worker's start has that
//! the stub controls: `unshare -n true` takes 0.8 ms more than `unshare true` at the mean on
//! the 2-vCPU VM, and 2 ms more at p90, against a cold start of about 4 ms. With a spare
//! ready, the child only joins it (`setns`, microseconds) between fork and exec, and a
//! thread builds the next one off the connection's path. Each namespace still serves exactly
//! one worker and is never handed out twice, so workers stay as isolated from each other as
//! with a fresh `unshare` each.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// A few ready, empty network namespaces, refilled in the background.
#[derive(Debug)]
pub struct SpareNetns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// How many to keep ready.
    keep: usize,
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<OwnedFd>,
    /// Being made right now, so a burst of `take`s does not start too many threads.
    making: usize,
    /// Making them is not permitted here: stop trying (the caller's own `unshare` then
    /// reports the reason where it matters).
    failed: bool,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpareNetns {
    /// Starts making `keep` namespaces in the background.
    pub fn new(keep: usize) -> SpareNetns {
        let spares = SpareNetns {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                keep,
            }),
        };
        spares.refill();
        spares
    }

    /// A ready namespace (a descriptor of it, close-on-exec), if one is; `None` means: make
    /// one yourself. Call [`SpareNetns::refill`] once the namespace is joined: making the
    /// next one meanwhile would compete with the start it was taken for.
    pub fn take(&self) -> Option<OwnedFd> {
        self.inner.state().ready.pop()
    }

    /// How many are ready now.
    #[cfg(test)]
    fn ready(&self) -> usize {
        self.inner.state().ready.len()
    }

    /// Starts making namespaces until `keep` are ready or being made.
    pub fn refill(&self) {
        let mut state = self.inner.state();
        while !state.failed && state.ready.len() + state.making < self.inner.keep {
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("wepoq-netns".into())
                .spawn(move || {
                    let made = make();
                    let mut state = inner.state();
                    state.making -= 1;
                    match made {
                        Ok(fd) => state.ready.push(fd),
                        Err(e) => {
                            eprintln!("wepoq-stub: cannot prepare a network namespace: {e}");
                            state.failed = true;
                        }
                    }
                });
            if spawned.is_err() {
                return;
            }
            state.making += 1;
        }
    }
}

/// Makes one empty network namespace and returns a descriptor that keeps it alive.
///
/// Runs on a thread that ends right after: `unshare` moves only the calling thread, and a
/// thread left inside the new namespace must never run anything else (which is why this is
/// not a pooled blocking task).
fn make() -> io::Result<OwnedFd> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let file = std::fs::File::open("/proc/thread-self/ns/net")?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn namespace_of(fd: &OwnedFd) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn wait_ready(spares: &SpareNetns, n: usize) {
        let start = Instant::now();
        while spares.ready() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "spares never became ready"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn every_spare_is_a_new_namespace_and_the_pool_refills() {
        if !nix::unistd::geteuid().is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI runs as root: namespaces must be testable");
            }
            eprintln!("skipped: making network namespaces needs root");
            return;
        }
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let spares = SpareNetns::new(2);
        wait_ready(&spares, 2);
        let mut seen = Vec::new();
        for _ in 0..5 {
            // Taking faster than the pool refills falls back to `None`, never to a reused one.
            let fd = match spares.take() {
                Some(fd) => fd,
                None => {
                    wait_ready(&spares, 1);
                    spares.take().expect("one is ready")
                }
            };
            spares.refill();
            let ns = namespace_of(&fd);
            assert!(ns.to_string_lossy().starts_with("net:["), "{ns:?}");
            assert_ne!(ns, ours, "a spare is not the stub's own namespace");
            assert!(!seen.contains(&ns), "a namespace was handed out twice");
            seen.push(ns);
        }
        wait_ready(&spares, 2);
        assert_eq!(
            spares.ready(),
            2,
            "the pool keeps exactly what it was asked to"
        );
        // The thread that made them has left; the test thread never moved.
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            ours
        );
    }
}
