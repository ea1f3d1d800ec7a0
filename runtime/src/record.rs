//! One JSON line per finished connection, written in batches off the hot path.

use std::io::Write;

use serde::Serialize;

/// How a connection ended, from the stub's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A worker took it and reported done.
    Served,
    /// The queue was full: HTTP 429 or a close.
    Refused,
    /// It waited in the queue past its deadline.
    Expired,
    /// Its worker went away before reporting done.
    WorkerLost,
    /// Its worker held it past its deadline, so the stub stopped that worker.
    TimedOut,
    /// The stub stopped before a worker took it.
    Shutdown,
    /// No worker could be started for it (the backend failed, or its workers died before
    /// registering); the record's `why` says how.
    StartFailed,
}

/// What a connection found when it arrived: the pool's tier it was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A running, registered worker had room.
    Warm,
    /// A paused worker was resumed for it.
    Paused,
    /// It waited for a worker that registered after it arrived.
    Cold,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Warm, Tier::Paused, Tier::Cold];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Warm => "warm",
            Tier::Paused => "paused",
            Tier::Cold => "cold",
        }
    }
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Served,
        Outcome::Refused,
        Outcome::Expired,
        Outcome::WorkerLost,
        Outcome::TimedOut,
        Outcome::Shutdown,
        Outcome::StartFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Served => "served",
            Outcome::Refused => "refused",
            Outcome::Expired => "expired",
            Outcome::WorkerLost => "worker_lost",
            Outcome::TimedOut => "timed_out",
            Outcome::Shutdown => "shutdown",
            Outcome::StartFailed => "start_failed",
        }
    }
}

/// The per-connection record.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    pub conn_id: u64,
    pub fqdn: &'a str,
    pub remote: std::net::SocketAddr,
    pub accept_unix_ns: u64,
    /// Accept to handoff; absent when no worker took it.
    pub handoff_us: Option<f64>,
    /// Whether it waited for a worker that registered after it arrived.
    pub cold: bool,
    /// The tier it was served from; absent when no worker took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Cold starts: from asking the backend for the worker until the backend had it started
    /// (created and started, or unpaused), and until it registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_us: Option<f64>,
    /// What the backend's steps took: for a cold start, creating (when no pre-created
    /// container was ready) and starting the worker; for the paused tier, unpausing it.
    #[serde(flatten)]
    pub steps: crate::backend::Steps,
    pub worker: Option<&'a str>,
    pub outcome: Outcome,
    /// Handoff to done, as the stub saw it.
    pub service_us: Option<f64>,
    /// Why it was not served, when the stub knows more than the outcome says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<&'a str>,
}

/// Where records go; buffered, flushed on the dispatcher's tick.
pub struct RecordSink {
    out: Option<std::io::BufWriter<Box<dyn Write + Send>>>,
}

impl RecordSink {
    pub fn none() -> RecordSink {
        RecordSink { out: None }
    }

    pub fn new(out: Box<dyn Write + Send>) -> RecordSink {
        RecordSink {
            out: Some(std::io::BufWriter::with_capacity(64 * 1024, out)),
        }
    }

    pub fn write(&mut self, record: &Record<'_>) {
        if let Some(out) = &mut self.out {
            // A full disk must not stop connections: records are best effort.
            let _ = serde_json::to_writer(&mut *out, record);
            let _ = out.write_all(b"\n");
        }
    }

    pub fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            let _ = out.flush();
        }
    }
}
