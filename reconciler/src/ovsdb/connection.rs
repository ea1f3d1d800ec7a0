//! The task that owns one OVSDB connection: writes requests, reads and dispatches messages
//!
//! One task owns the socket, the table of requests in flight and the monitor caches, so
//! the order of messages on the wire is the order in which they are handled: no lock is
//! held across I/O, and a monitor's cache is updated before a reply that follows the
//! update on the wire is handed back. [`super::client::Client`] handles talk to it over
//! a channel. It connects to the first usable remote of the list (see `cluster.rs`). On a
//! lost connection, or when the server in use stops qualifying, it fails the requests in
//! flight (they may or may not have run), moves on to the next remote (backing off when
//! none answers) and resumes the monitors from the last transaction they saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::client::Timeouts;
use super::cluster::{Health, SERVER_MONITOR, server_monitor};
use super::error::Error;
use super::frame::FrameDecoder;
use super::monitor::MonitorState;
use super::target::{Conn, Remotes};
use super::tls::{TlsConfig, tls_error};
use super::value::Uuid;

/// Shared with the handles, which read them for [`super::client::Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connects: AtomicU64,
    pub(crate) echo_replies: AtomicU64,
}

/// What a handle asks of the task.
pub(crate) enum Command {
    Call {
        method: &'static str,
        params: Json,
        reply: oneshot::Sender<Result<RawReply, Error>>,
        monitor: Option<Arc<MonitorState>>,
    },
    CancelMonitor(String),
}

/// A reply's `result`, still as text: the message it came in, and where in it the result is.
/// Callers decode it into what they expect; for a transact, straight into rows
/// (`typed.rs`), without a JSON tree of tens of megabytes in between.
#[derive(Debug)]
pub struct RawReply {
    message: Vec<u8>,
    result: std::ops::Range<usize>,
}

impl RawReply {
    fn null() -> RawReply {
        RawReply {
            message: b"null".to_vec(),
            result: 0..4,
        }
    }

    /// The result's JSON text.
    pub fn text(&self) -> &str {
        // Checked to be UTF-8 JSON when the message was parsed.
        std::str::from_utf8(&self.message[self.result.clone()]).unwrap_or("null")
    }

    pub fn to_json(&self) -> Result<Json, Error> {
        serde_json::from_str(self.text()).map_err(|e| Error::Decode {
            what: "reply".into(),
            reason: e.to_string(),
        })
    }
}

/// What the task reads of every message; `params` and `result` stay text.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Json,
    #[serde(default, borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Json,
}

/// A request in flight. `reply` is `None` for requests the task makes itself (monitor
/// re-sync, cancel).
struct Pending {
    method: &'static str,
    reply: Option<oneshot::Sender<Result<RawReply, Error>>>,
    monitor: Option<Arc<MonitorState>>,
}

enum Exit {
    Shutdown,
    Lost(String),
}

/// Why a remote was not taken.
enum Refused {
    /// Reachable but not to be used now (a follower, cut off from its cluster, behind):
    /// worth asking again soon, an election may be under way.
    Unusable(String),
    /// It failed outright (down, TLS refused, not an OVSDB server).
    Failed(Error),
}

/// What one pass over the remotes found, when no remote could be used.
struct PassFailed {
    /// Some remote answered but was not usable (then waiting helps).
    reachable: bool,
    reasons: Vec<String>,
    /// An error that retrying cannot fix (TLS, configuration): reported at once.
    fatal: Option<Error>,
    last: Option<Error>,
}

/// The server said nothing useful and hung up: typical of a plain client at a `pssl:` port.
const CLOSED_EARLY: &str = "the server closed the connection before answering (if it listens with pssl:, connect with ssl: and --private-key, --certificate, --ca-cert)";

pub(crate) struct Driver {
    remotes: Remotes,
    tls: Option<TlsConfig>,
    /// The remote in use (an index into `remotes`) and its url, also shown to handles.
    current: usize,
    url: String,
    current_url: Arc<Mutex<String>>,
    health: Health,
    /// `_Server.Database` of the server in use.
    server: Arc<MonitorState>,
    timeouts: Timeouts,
    commands: mpsc::UnboundedReceiver<Command>,
    shutdown: oneshot::Receiver<()>,
    counters: Arc<Counters>,
    pending: HashMap<u64, Pending>,
    monitors: HashMap<String, Arc<MonitorState>>,
    next_id: u64,
    buf: Vec<u8>,
    decoder: FrameDecoder,
}

const PROBE_ID: &str = "wepoq-probe";

async fn write(conn: &mut Conn, msg: &Json) -> Result<(), String> {
    let bytes = serde_json::to_vec(msg).expect("json values always serialize");
    conn.write_all(&bytes)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

/// The error with its cause, on one line (an I/O source is where the reason lies).
fn describe(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

impl Driver {
    /// `shutdown` fires (or is dropped) when the last client handle goes.
    pub(crate) fn new(
        remotes: Remotes,
        tls: Option<TlsConfig>,
        timeouts: Timeouts,
        commands: mpsc::UnboundedReceiver<Command>,
        shutdown: oneshot::Receiver<()>,
        counters: Arc<Counters>,
    ) -> Driver {
        let url = remotes.get(0).0.to_owned();
        Driver {
            remotes,
            tls,
            current: 0,
            current_url: Arc::new(Mutex::new(url.clone())),
            url,
            health: Health::default(),
            server: server_monitor(),
            timeouts,
            commands,
            shutdown,
            counters,
            pending: HashMap::new(),
            monitors: HashMap::new(),
            next_id: 0,
            buf: Vec::new(),
            decoder: FrameDecoder::new(),
        }
    }

    pub(crate) fn current_url(&self) -> Arc<Mutex<String>> {
        self.current_url.clone()
    }

    pub(crate) fn cluster_ids(&self) -> Arc<Mutex<HashMap<String, Uuid>>> {
        self.health.cids.clone()
    }

    /// The first connection: a usable remote, waiting (up to the connect time limit) while
    /// members answer but none can serve yet, e.g. during an election.
    pub(crate) async fn first_connect(&mut self) -> Result<Conn, Error> {
        let deadline = Instant::now() + self.timeouts.connect;
        loop {
            let failed = match self.pass(0).await {
                Ok(conn) => return Ok(conn),
                Err(failed) => failed,
            };
            if let Some(e) = failed.fatal {
                return Err(e);
            }
            if !failed.reachable || Instant::now() >= deadline {
                return Err(match failed.last {
                    Some(e) if self.remotes.len() == 1 && !failed.reachable => e,
                    _ => Error::NoUsableServer {
                        remotes: self.remotes.to_string(),
                        reasons: failed.reasons,
                    },
                });
            }
            tokio::time::sleep(self.timeouts.reconnect_min).await;
        }
    }

    /// Tries every remote once, from `start` on.
    async fn pass(&mut self, start: usize) -> Result<Conn, PassFailed> {
        let mut failed = PassFailed {
            reachable: false,
            reasons: Vec::new(),
            fatal: None,
            last: None,
        };
        let n = self.remotes.len();
        for k in 0..n {
            let i = (start + k) % n;
            let url = self.remotes.get(i).0.to_owned();
            match self.attempt(i).await {
                Ok(conn) => return Ok(conn),
                Err(Refused::Unusable(why)) => {
                    failed.reachable = true;
                    failed.reasons.push(format!("{url}: {why}"));
                }
                Err(Refused::Failed(e)) => {
                    failed.reasons.push(describe(&e));
                    if matches!(
                        e,
                        Error::Tls { .. } | Error::TlsMissing { .. } | Error::TlsConfig { .. }
                    ) {
                        failed.fatal.get_or_insert(e);
                    } else {
                        failed.last = Some(e);
                    }
                }
            }
        }
        Err(failed)
    }

    /// Opens remote `i` and reads its `_Server` status; keeps it only if usable.
    async fn attempt(&mut self, i: usize) -> Result<Conn, Refused> {
        let (url, target) = self.remotes.get(i);
        let (url, target) = (url.to_owned(), target.clone());
        let mut conn = target
            .open(&url, self.timeouts.connect, self.tls.as_ref())
            .await
            .map_err(Refused::Failed)?;
        self.buf.clear();
        self.decoder = FrameDecoder::new();
        self.server = server_monitor();
        let limit = self.timeouts.connect;
        match tokio::time::timeout(limit, self.handshake(&url, &mut conn)).await {
            Err(_) => Err(Refused::Failed(Error::Timeout {
                what: format!("asking {url} for its _Server status"),
                after: limit,
            })),
            Ok(Err(refused)) => Err(refused),
            Ok(Ok(())) => {
                self.current = i;
                self.url.clone_from(&url);
                *self.current_url.lock().expect("url lock") = url;
                Ok(conn)
            }
        }
    }

    /// Starts the `_Server` monitor and judges its first reply (see `cluster.rs`).
    async fn handshake(&mut self, url: &str, conn: &mut Conn) -> Result<(), Refused> {
        let lost = |reason: String| {
            Refused::Failed(Error::Handshake {
                url: url.to_owned(),
                reason,
            })
        };
        let request = json!({"method": "monitor_cond", "params": ["_Server", SERVER_MONITOR, self.server.requests], "id": SERVER_MONITOR});
        write(conn, &request).await.map_err(lost)?;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let len = match self.decoder.frame_len(&self.buf) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    match conn.read(&mut chunk).await {
                        Ok(0) => return Err(lost(CLOSED_EARLY.into())),
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(e) => {
                            return Err(match tls_error(url, &e) {
                                Some(tls) => Refused::Failed(tls),
                                None if e.kind() == std::io::ErrorKind::ConnectionReset => {
                                    lost(CLOSED_EARLY.into())
                                }
                                None => lost(format!("read failed: {e}")),
                            });
                        }
                    }
                    continue;
                }
                Err(e) => return Err(lost(e.to_string())),
            };
            let rest = self.buf.split_off(len);
            let message = std::mem::replace(&mut self.buf, rest);
            let msg: Envelope = serde_json::from_slice(&message)
                .map_err(|e| lost(format!("bad message from the server: {e}")))?;
            if msg.method.as_deref() == Some("echo") && !msg.id.is_null() {
                let params: Json = msg
                    .params
                    .and_then(|p| serde_json::from_str(p.get()).ok())
                    .unwrap_or(json!([]));
                write(
                    conn,
                    &json!({"result": params, "error": null, "id": msg.id}),
                )
                .await
                .map_err(lost)?;
                continue;
            }
            if msg.id != SERVER_MONITOR {
                continue;
            }
            if !msg.error.is_null() {
                // No _Server: a server older than OVS 2.9, which cannot be clustered.
                return Ok(());
            }
            let initial: Json = msg
                .result
                .map(|r| serde_json::from_str(r.get()))
                .transpose()
                .map_err(|e| lost(format!("bad _Server reply: {e}")))?
                .unwrap_or(Json::Null);
            self.server
                .reset(&initial)
                .map_err(|e| lost(format!("bad _Server reply: {e}")))?;
            let health = &mut self.health;
            return self
                .server
                .with_tables(|t| health.judge(t))
                .map_err(Refused::Unusable);
        }
    }

    pub(crate) async fn run(mut self, mut conn: Conn) {
        loop {
            let reason = match self.serve(&mut conn).await {
                Exit::Shutdown => return,
                Exit::Lost(reason) => reason,
            };
            // Requests in flight may or may not have been executed: the caller decides.
            for (_, p) in self.pending.drain() {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(Error::ConnectionLost {
                        url: self.url.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
            conn = match self.reconnect().await {
                Some(conn) => conn,
                None => return,
            };
        }
    }

    /// Passes over the remotes, starting after the one lost, until one is usable. While
    /// members answer but none can serve (an election), it asks again after the shortest
    /// pause, so a new leader is found within that pause; when nothing answers, the pauses
    /// grow exponentially.
    async fn reconnect(&mut self) -> Option<Conn> {
        let mut delay = self.timeouts.reconnect_min;
        let mut first = true;
        loop {
            if !matches!(
                self.shutdown.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ) {
                return None;
            }
            // A lone server that just went away needs a moment before it is back.
            if !(first && self.remotes.len() > 1) {
                tokio::select! {
                    _ = &mut self.shutdown => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            first = false;
            match self.pass(self.current + 1).await {
                Ok(conn) => {
                    self.counters.connects.fetch_add(1, Ordering::Relaxed);
                    return Some(conn);
                }
                Err(failed) if failed.reachable => delay = self.timeouts.reconnect_min,
                Err(_) => delay = (delay * 2).min(self.timeouts.reconnect_max),
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn send(
        &mut self,
        conn: &mut Conn,
        method: &'static str,
        params: Json,
        pending: Pending,
    ) -> Result<(), String> {
        let id = self.next_id();
        self.pending.insert(id, pending);
        write(conn, &json!({"method": method, "params": params, "id": id})).await
    }

    /// Handles the complete messages in the buffer.
    async fn drain_buffer(&mut self, conn: &mut Conn) -> Result<(), String> {
        loop {
            match self.decoder.frame_len(&self.buf) {
                Ok(Some(len)) => {
                    // The message keeps the buffer (no copy of a large reply); what
                    // follows it moves to a new one.
                    let rest = self.buf.split_off(len);
                    let message = std::mem::replace(&mut self.buf, rest);
                    self.handle(conn, message).await?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn serve(&mut self, conn: &mut Conn) -> Exit {
        // After a reconnect, monitors resume after the last transaction they saw (a
        // cluster answers with the changes since; a standalone server with every row).
        let monitors: Vec<_> = self.monitors.values().cloned().collect();
        for m in monitors {
            let params = m.since_params();
            let pending = Pending {
                method: "monitor_cond_since",
                reply: None,
                monitor: Some(m),
            };
            if let Err(e) = self.send(conn, "monitor_cond_since", params, pending).await {
                return Exit::Lost(e);
            }
        }
        // What came after the _Server reply in the same read.
        if let Err(e) = self.drain_buffer(conn).await {
            return Exit::Lost(e);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let probe = self.timeouts.probe;
        let mut ticker = tokio::time::interval(probe.map_or(Duration::from_secs(3600), |p| p / 2));
        let mut last_heard = Instant::now();
        let mut probing = false;
        loop {
            tokio::select! {
                _ = &mut self.shutdown => return Exit::Shutdown,
                cmd = self.commands.recv() => match cmd {
                    None => return Exit::Shutdown,
                    Some(Command::Call { method, params, reply, monitor }) => {
                        if reply.is_closed() {
                            continue; // the caller timed out while the connection was down
                        }
                        if let Some(m) = &monitor {
                            self.monitors.insert(m.id.clone(), m.clone());
                        }
                        if let Err(e) = self.send(conn, method, params, Pending { method, reply: Some(reply), monitor }).await {
                            return Exit::Lost(e);
                        }
                    }
                    Some(Command::CancelMonitor(id)) => {
                        if self.monitors.remove(&id).is_some() {
                            let pending = Pending { method: "monitor_cancel", reply: None, monitor: None };
                            if let Err(e) = self.send(conn, "monitor_cancel", json!([id]), pending).await {
                                return Exit::Lost(e);
                            }
                        }
                    }
                },
                n = conn.read(&mut chunk) => {
                    match n {
                        Ok(0) => return Exit::Lost("server closed the connection".into()),
                        Err(e) => return Exit::Lost(format!("read failed: {e}")),
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                    last_heard = Instant::now();
                    probing = false;
                    if let Err(e) = self.drain_buffer(conn).await {
                        return Exit::Lost(e);
                    }
                },
                _ = ticker.tick(), if probe.is_some() => {
                    let probe = probe.expect("guarded");
                    let idle = last_heard.elapsed();
                    if probing && idle >= probe * 2 {
                        return Exit::Lost(format!("no answer to an inactivity probe within {probe:?}"));
                    }
                    if !probing && idle >= probe {
                        probing = true;
                        if let Err(e) = write(conn, &json!({"method": "echo", "params": [], "id": PROBE_ID})).await {
                            return Exit::Lost(e);
                        }
                    }
                },
            }
        }
    }

    /// Handles one message from the server. An error drops the connection: after a
    /// message we could not apply, the only safe state is a fresh sync.
    async fn handle(&mut self, conn: &mut Conn, message: Vec<u8>) -> Result<(), String> {
        let msg: Envelope = serde_json::from_slice(&message)
            .map_err(|e| format!("bad message from the server: {e}"))?;
        let id = msg.id;
        if let Some(method) = msg.method.as_deref() {
            let params: Json = match msg.params {
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|e| format!("bad {method} from the server: {e}"))?,
                None => json!([]),
            };
            match method {
                "echo" if !id.is_null() => {
                    write(conn, &json!({"result": params, "error": null, "id": id})).await?;
                    self.counters.echo_replies.fetch_add(1, Ordering::Relaxed);
                }
                "update2" if params.get(0).and_then(Json::as_str) == Some(SERVER_MONITOR) => {
                    // The server in use changed role: leave it once it may not serve.
                    if let Some(updates) = params.get(1) {
                        self.server
                            .apply(updates)
                            .map_err(|e| format!("_Server update: {e}"))?;
                        let health = &mut self.health;
                        self.server
                            .with_tables(|t| health.judge(t))
                            .map_err(|why| format!("{why}; moving to another server"))?;
                    }
                }
                "update2" | "update3" => {
                    let monitor = params
                        .get(0)
                        .and_then(Json::as_str)
                        .and_then(|m| self.monitors.get(m));
                    // update3 is [id, last-txn-id, updates]; update2 is [id, updates].
                    let (txn, updates) = match method {
                        "update3" => (params.get(1).and_then(Json::as_str), params.get(2)),
                        _ => (None, params.get(1)),
                    };
                    if let (Some(m), Some(updates)) = (monitor, updates) {
                        m.apply(updates)
                            .map_err(|e| format!("monitor update: {e}"))?;
                        m.set_last_txn(txn);
                    }
                }
                _ if !id.is_null() => {
                    write(
                        conn,
                        &json!({"result": null, "error": {"error": "not supported"}, "id": id}),
                    )
                    .await?;
                }
                // Notifications we did not ask for (locked, stolen, update3).
                _ => {}
            }
            return Ok(());
        }
        if id == PROBE_ID {
            return Ok(());
        }
        let Some(pending) = id.as_u64().and_then(|id| self.pending.remove(&id)) else {
            return Ok(()); // a reply to a request whose caller is gone
        };
        let result = if !msg.error.is_null() {
            Err(Error::Rpc {
                method: pending.method.to_owned(),
                error: rpc_error_text(&msg.error),
            })
        } else {
            // Where the result lies in the message: handed over without copying it.
            let range = msg.result.map(|raw| {
                let start = raw.get().as_ptr() as usize - message.as_ptr() as usize;
                start..start + raw.get().len()
            });
            Ok(range)
        };
        let result = match (&pending.monitor, result) {
            (Some(m), Ok(range)) => {
                let initial: Json = match range {
                    Some(r) => serde_json::from_slice(&message[r])
                        .map_err(|e| format!("bad monitor reply: {e}"))?,
                    None => Json::Null,
                };
                match pending.method {
                    "monitor_cond_since" => m.since_reply(&initial),
                    _ => m.reset(&initial),
                }
                .map(|()| RawReply::null())
            }
            (Some(m), Err(e)) => {
                // The server refused the monitor (e.g. the schema changed under us).
                self.monitors.remove(&m.id);
                Err(e)
            }
            (None, result) => result.map(|range| match range {
                Some(result) => RawReply { message, result },
                None => RawReply::null(),
            }),
        };
        match pending.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                // A monitor whose re-sync fails stays stale: tell its handle rather than
                // reconnecting in a loop against a server that keeps refusing.
                if let (Err(e), Some(m)) = (result, &pending.monitor) {
                    self.monitors.remove(&m.id);
                    m.fail(format!("re-sync after reconnect failed: {e}"));
                }
            }
        }
        Ok(())
    }
}

fn rpc_error_text(error: &Json) -> String {
    match error {
        Json::String(s) => s.clone(),
        Json::Object(_) => {
            let e = error.get("error").and_then(Json::as_str).unwrap_or("error");
            match error.get("details").and_then(Json::as_str) {
                Some(d) => format!("{e}: {d}"),
                None => e.to_owned(),
            }
        }
        other => other.to_string(),
    }
}
