//! The worker socket: credential check, hello, then done reports until the worker leaves.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

use crate::frame::{Frame, MAX_FRAME};
use crate::metrics::Metrics;
use crate::seqpacket::SeqPacket;
use crate::stub::event::Event;

/// Who may register as a worker: a peer passes if its uid or its gid is listed.
#[derive(Debug, Clone, Default)]
pub struct CredentialPolicy {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl CredentialPolicy {
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }

    /// Whether it admits anyone but our own uid, who then must be able to reach the socket.
    pub fn admits_others(&self) -> bool {
        let me = nix::unistd::geteuid().as_raw();
        !self.gids.is_empty() || self.uids.iter().any(|&u| u != me)
    }
}

/// Accepts workers on `listener` forever, each checked against `policy`.
pub async fn accept_workers(
    listener: AsyncFd<SeqPacket>,
    policy: CredentialPolicy,
    events: UnboundedSender<Event>,
    metrics: Arc<Metrics>,
) {
    loop {
        let accepted = listener.async_io(Interest::READABLE, |l| l.accept()).await;
        let socket = match accepted {
            Ok(s) => s,
            Err(e) => {
                eprintln!("wepoq-stub: worker accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let allowed = match socket.peer_credentials() {
            Ok(c) => policy.allows(c.uid(), c.gid()),
            Err(_) => false,
        };
        if !allowed {
            // Dropping closes it: the peer reads end-of-stream and never gets a connection.
            metrics.workers_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(socket) = crate::stub::register(socket) else {
            continue;
        };
        tokio::spawn(serve_worker(socket, events.clone()));
    }
}

async fn recv(socket: &AsyncFd<SeqPacket>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    socket.async_io(Interest::READABLE, |s| s.recv(buf)).await
}

/// Reads the worker's hello, then gives its socket to the dispatcher, which reads the rest
/// (done reports, end-of-stream) itself, on its own thread.
async fn serve_worker(socket: AsyncFd<SeqPacket>, events: UnboundedSender<Event>) {
    let mut buf = [0u8; MAX_FRAME];
    let hello = tokio::time::timeout(Duration::from_secs(5), recv(&socket, &mut buf)).await;
    let Ok(Ok((n, None))) = hello else { return };
    let Ok(Frame::Hello {
        worker_id,
        concurrency,
    }) = Frame::decode(&buf[..n])
    else {
        return;
    };
    // Off tokio's reactor: from now on only the dispatcher's poller watches it.
    let socket = socket.into_inner();
    let _ = events.send(Event::WorkerRegistered {
        worker_id,
        concurrency,
        socket,
    });
}
