//! Every input of the stub's dispatcher, as one closed enum.

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use crate::backend::Steps;
use crate::seqpacket::SeqPacket;

/// One input for the dispatcher; it owns all state, so everything else only sends these.
#[derive(Debug)]
pub enum Event {
    /// A client connection was accepted on one of the service's listeners.
    Accepted(Accepted),
    /// A worker passed the credential check and said hello. From now on the dispatcher
    /// reads the socket itself (done reports, end-of-stream).
    WorkerRegistered {
        worker_id: String,
        concurrency: u32,
        socket: SeqPacket,
    },
    /// A worker finished a connection (the dispatcher normally reads these straight from
    /// the worker's socket; this event is the same thing for other sources).
    WorkerDone { worker_id: String, conn_id: u64 },
    /// A worker's socket closed or its backend reported it ended (either may come first).
    WorkerGone { worker_id: String, why: String },
    /// The backend started the worker asked for with serial `spawn` and named it.
    Spawned {
        spawn: u64,
        worker_id: String,
        steps: Steps,
    },
    /// The backend thawed a paused worker (and says how long that took).
    Resumed { worker_id: String, steps: Steps },
    /// The backend could not start the worker asked for with serial `spawn`.
    SpawnFailed { spawn: u64, why: String },
    /// The backend reported the end of the worker asked for with serial `spawn` (its exit
    /// notice; it may come before `Spawned`).
    Exited { spawn: u64, why: String },
    /// A pause or resume failed: the worker is no use any more.
    ControlFailed { worker_id: String, why: String },
    /// Time passed: deadlines, mark-and-sweep, gauges, record flushing.
    Tick,
    /// Stop accepting, drain, stop the workers, exit.
    Shutdown,
}

/// An accepted connection the stub still holds.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub at: Instant,
    pub at_unix_ns: u64,
}
