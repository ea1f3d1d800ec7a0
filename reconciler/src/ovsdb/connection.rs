//! The task that owns one OVSDB connection: writes requests, reads and dispatches messages
//!
//! One task owns the socket, the table of requests in flight and the monitor caches, so
//! the order of messages on the wire is the order in which they are handled: no lock is
//! held across I/O, and a monitor's cache is updated before a reply that follows the
//! update on the wire is handed back. [`super::client::Client`] handles talk to it over
//! a channel. On a lost connection it fails the requests in flight (they may or may not
//! have run), reconnects with exponential backoff and re-syncs the monitors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::client::Timeouts;
use super::error::Error;
use super::frame::FrameDecoder;
use super::monitor::MonitorState;
use super::target::{Conn, Target};

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

pub(crate) struct Driver {
    url: String,
    target: Target,
    timeouts: Timeouts,
    commands: mpsc::UnboundedReceiver<Command>,
    shutdown: oneshot::Receiver<()>,
    counters: Arc<Counters>,
    pending: HashMap<u64, Pending>,
    monitors: HashMap<String, Arc<MonitorState>>,
    next_id: u64,
}

const PROBE_ID: &str = "wepoq-probe";

async fn write(conn: &mut Conn, msg: &Json) -> Result<(), String> {
    let bytes = serde_json::to_vec(msg).expect("json values always serialize");
    conn.write_all(&bytes)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

impl Driver {
    /// `shutdown` fires (or is dropped) when the last client handle goes.
    pub(crate) fn new(
        url: &str,
        target: Target,
        timeouts: Timeouts,
        commands: mpsc::UnboundedReceiver<Command>,
        shutdown: oneshot::Receiver<()>,
        counters: Arc<Counters>,
    ) -> Driver {
        Driver {
            url: url.to_owned(),
            target,
            timeouts,
            commands,
            shutdown,
            counters,
            pending: HashMap::new(),
            monitors: HashMap::new(),
            next_id: 0,
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

    async fn reconnect(&mut self) -> Option<Conn> {
        let mut delay = self.timeouts.reconnect_min;
        loop {
            tokio::select! {
                _ = &mut self.shutdown => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            if let Ok(conn) = self.target.open(&self.url, self.timeouts.connect).await {
                self.counters.connects.fetch_add(1, Ordering::Relaxed);
                return Some(conn);
            }
            delay = (delay * 2).min(self.timeouts.reconnect_max);
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

    async fn serve(&mut self, conn: &mut Conn) -> Exit {
        // After a reconnect, monitors start over from a fresh initial reply.
        let monitors: Vec<_> = self.monitors.values().cloned().collect();
        for m in monitors {
            let params = json!([m.db, m.id, m.requests]);
            let pending = Pending {
                method: "monitor_cond",
                reply: None,
                monitor: Some(m),
            };
            if let Err(e) = self.send(conn, "monitor_cond", params, pending).await {
                return Exit::Lost(e);
            }
        }
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut decoder = FrameDecoder::new();
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
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    last_heard = Instant::now();
                    probing = false;
                    loop {
                        match decoder.frame_len(&buf) {
                            Ok(Some(len)) => {
                                // The message keeps the buffer (no copy of a large reply);
                                // what follows it moves to a new one.
                                let rest = buf.split_off(len);
                                let message = std::mem::replace(&mut buf, rest);
                                if let Err(e) = self.handle(conn, message).await {
                                    return Exit::Lost(e);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Exit::Lost(e.to_string()),
                        }
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
                "update2" => {
                    let monitor = params
                        .get(0)
                        .and_then(Json::as_str)
                        .and_then(|m| self.monitors.get(m));
                    if let (Some(m), Some(updates)) = (monitor, params.get(1)) {
                        m.apply(updates)
                            .map_err(|e| format!("monitor update: {e}"))?;
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
                m.reset(&initial).map(|()| RawReply::null())
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
