//! The OVSDB client: a cloneable handle in front of one task that owns the connection
//!
//! One task owns the socket, the table of requests in flight and the monitor caches, so
//! the order of messages on the wire is the order in which they are handled: no lock is
//! held across I/O, and a monitor's cache is updated before the reply that follows the
//! update on the wire is handed back. Handles talk to the task over a channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::Error;
use super::frame::FrameDecoder;
use super::monitor::{Monitor, MonitorSpec, MonitorState};
use super::operation::{Mutation, OpResult, Operation, TransactReply};
use super::row::Row;
use super::schema::{NB_DB, NB_MAJOR, Schema};
use super::target::{Conn, Target};

/// Time limits. Every request has one; a reconnect backs off exponentially.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// Per request, from sending to the reply. A request made while the connection is
    /// down waits for the reconnect within this limit.
    pub request: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Send our own `echo` after this long without hearing from the server, and drop the
    /// connection (then reconnect) when twice this passes in silence. `None` disables it.
    pub probe: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(60),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            probe: Some(Duration::from_secs(10)),
        }
    }
}

/// Counters about the connection, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Successful connects, the first included.
    pub connects: u64,
    /// `echo` requests from the server that were answered.
    pub echo_replies: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    echo_replies: AtomicU64,
}

enum Command {
    Call {
        method: &'static str,
        params: Json,
        reply: oneshot::Sender<Result<Json, Error>>,
        monitor: Option<Arc<MonitorState>>,
    },
    CancelMonitor(String),
}

struct Shared {
    url: String,
    timeouts: Timeouts,
    commands: mpsc::UnboundedSender<Command>,
    schemas: Mutex<HashMap<String, Arc<Schema>>>,
    counters: Arc<Counters>,
    next_monitor: AtomicU64,
    /// Dropped with the last handle, which tells the connection task to stop.
    _shutdown: oneshot::Sender<()>,
}

/// A connection to an ovsdb-server. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Connects to `unix:PATH` or `tcp:HOST:PORT`. Fails if the first connect fails; after
    /// that, a lost connection is re-established in the background with backoff.
    pub async fn connect(url: &str, timeouts: Timeouts) -> Result<Client, Error> {
        let target = Target::parse(url)?;
        let conn = target.open(url, timeouts.connect).await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        counters.connects.store(1, Ordering::Relaxed);
        let driver = Driver {
            url: url.to_owned(),
            target,
            timeouts: timeouts.clone(),
            commands: command_rx,
            shutdown: shutdown_rx,
            counters: counters.clone(),
            pending: HashMap::new(),
            monitors: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(driver.run(conn));
        let shared = Shared {
            url: url.to_owned(),
            timeouts,
            commands,
            schemas: Mutex::default(),
            counters,
            next_monitor: AtomicU64::new(0),
            _shutdown: shutdown,
        };
        Ok(Client { shared: Arc::new(shared) })
    }

    pub fn url(&self) -> &str {
        &self.shared.url
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connects: self.shared.counters.connects.load(Ordering::Relaxed),
            echo_replies: self.shared.counters.echo_replies.load(Ordering::Relaxed),
        }
    }

    async fn call(&self, method: &'static str, params: Json, monitor: Option<Arc<MonitorState>>) -> Result<Json, Error> {
        let (reply, rx) = oneshot::channel();
        self.shared.commands.send(Command::Call { method, params, reply, monitor }).map_err(|_| Error::Closed)?;
        let after = self.shared.timeouts.request;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout { what: format!("{method} on {}", self.shared.url), after }),
        }
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let result = self.call("list_dbs", json!([]), None).await?;
        serde_json::from_value(result.clone()).map_err(|_| super::value::decode("list_dbs result", &result))
    }

    pub async fn echo(&self) -> Result<(), Error> {
        self.call("echo", json!(["wepoq"]), None).await.map(drop)
    }

    /// The schema of `db`, fetched once per client and cached.
    pub async fn schema(&self, db: &str) -> Result<Arc<Schema>, Error> {
        if let Some(s) = self.shared.schemas.lock().expect("schema lock").get(db) {
            return Ok(s.clone());
        }
        let json = self.call("get_schema", json!([db]), None).await?;
        let schema = Arc::new(Schema::from_json(&json)?);
        self.shared.schemas.lock().expect("schema lock").insert(db.to_owned(), schema.clone());
        Ok(schema)
    }

    /// The OVN_Northbound schema, refused unless it is a version wepoq supports.
    pub async fn nb_schema(&self) -> Result<Arc<Schema>, Error> {
        let schema = self.schema(NB_DB).await?;
        schema.check_compatible(NB_DB, NB_MAJOR)?;
        Ok(schema)
    }

    /// Runs `ops` as one transaction and returns every outcome, failed or not, plus the
    /// commit-time error: what a dry run (`abort` last) wants.
    pub async fn transact_reply(&self, db: &str, ops: &[Operation]) -> Result<TransactReply, Error> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(json!(db));
        params.extend(ops.iter().map(Operation::to_json));
        let result = self.call("transact", Json::Array(params), None).await?;
        TransactReply::from_json(&result, ops.len())
    }

    /// Runs `ops` as one transaction: one result per operation, or the first failure
    /// (a failed `wait` is [`Error::GuardFailed`], commit checks [`Error::CommitFailed`]).
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<OpResult>, Error> {
        self.transact_reply(db, ops).await?.into_result(ops)
    }

    /// Starts a `monitor_cond` on `db` and returns once the cache holds the initial rows.
    /// The cache is re-synced after a reconnect.
    pub async fn monitor(&self, db: &str, spec: MonitorSpec) -> Result<Monitor, Error> {
        let schema = self.schema(db).await?;
        let n = self.shared.next_monitor.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(MonitorState::new(format!("wepoq-monitor-{n}"), db, &schema, &spec)?);
        let params = json!([db, state.id, state.requests]);
        match self.call("monitor_cond", params, Some(state.clone())).await {
            Ok(_) => Ok(Monitor::new(state, self.clone())),
            Err(e) => {
                self.cancel_monitor(&state.id);
                Err(e)
            }
        }
    }

    pub(crate) fn cancel_monitor(&self, id: &str) {
        // The task may be gone already: then there is nothing left to cancel.
        let _ = self.shared.commands.send(Command::CancelMonitor(id.to_owned()));
    }

    /// Asks for the named lock (`[a-zA-Z_][a-zA-Z0-9_]*`); `true` when this connection
    /// holds it now. `Operation::Assert` in a transaction then fails unless it still does.
    /// Locks belong to the connection: after a reconnect, ask again.
    pub async fn try_lock(&self, name: &str) -> Result<bool, Error> {
        let result = self.call("lock", json!([name]), None).await?;
        result.get("locked").and_then(Json::as_bool).ok_or_else(|| super::value::decode("lock result", &result))
    }

    /// Releases the named lock (or stops waiting for it).
    pub async fn unlock(&self, name: &str) -> Result<(), Error> {
        self.call("unlock", json!([name]), None).await.map(drop)
    }

    /// Waits until NB_Global.hv_cfg reaches `target` (every chassis caught up).
    pub async fn wait_hv_cfg(&self, target: i64, timeout: Duration) -> Result<(), Error> {
        let mut global = self.monitor(NB_DB, MonitorSpec::new().table("NB_Global", &["hv_cfg"])).await?;
        global
            .wait_for(timeout, |t| {
                t.get("NB_Global").is_some_and(|rows| rows.values().any(|r| r.get("hv_cfg").and_then(|v| v.as_i64()) >= Some(target)))
            })
            .await
    }

    /// What `ovn-nbctl --wait=hv` does: bumps NB_Global.nb_cfg and waits for hv_cfg to
    /// reach it. Returns the new nb_cfg.
    pub async fn sync_hv(&self, timeout: Duration) -> Result<i64, Error> {
        let ops = [
            Operation::mutate("NB_Global", vec![], vec![Mutation::add("nb_cfg", 1)]),
            Operation::select_columns("NB_Global", vec![], &["nb_cfg"]),
        ];
        let results = self.transact(NB_DB, &ops).await?;
        let nb_cfg = results[1]
            .rows()
            .first()
            .and_then(|r: &Row| r.get("nb_cfg")?.as_i64())
            .ok_or_else(|| Error::Decode { what: "NB_Global".into(), reason: "no NB_Global row (run ovn-nbctl init)".into() })?;
        self.wait_hv_cfg(nb_cfg, timeout).await?;
        Ok(nb_cfg)
    }
}

/// A request in flight. `reply` is `None` for requests the task makes itself (monitor
/// re-sync, cancel).
struct Pending {
    method: &'static str,
    reply: Option<oneshot::Sender<Result<Json, Error>>>,
    monitor: Option<Arc<MonitorState>>,
}

enum Exit {
    Shutdown,
    Lost(String),
}

struct Driver {
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
    conn.write_all(&bytes).await.map_err(|e| format!("write failed: {e}"))
}

impl Driver {
    async fn run(mut self, mut conn: Conn) {
        loop {
            let reason = match self.serve(&mut conn).await {
                Exit::Shutdown => return,
                Exit::Lost(reason) => reason,
            };
            // Requests in flight may or may not have been executed: the caller decides.
            for (_, p) in self.pending.drain() {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(Error::ConnectionLost { url: self.url.clone(), reason: reason.clone() }));
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

    async fn send(&mut self, conn: &mut Conn, method: &'static str, params: Json, pending: Pending) -> Result<(), String> {
        let id = self.next_id();
        self.pending.insert(id, pending);
        write(conn, &json!({"method": method, "params": params, "id": id})).await
    }

    async fn serve(&mut self, conn: &mut Conn) -> Exit {
        // After a reconnect, monitors start over from a fresh initial reply.
        let monitors: Vec<_> = self.monitors.values().cloned().collect();
        for m in monitors {
            let params = json!([m.db, m.id, m.requests]);
            let pending = Pending { method: "monitor_cond", reply: None, monitor: Some(m) };
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
                        match decoder.decode(&buf) {
                            Ok(Some((msg, used))) => {
                                buf.drain(..used);
                                if let Err(e) = self.handle(conn, msg).await {
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
    async fn handle(&mut self, conn: &mut Conn, msg: Json) -> Result<(), String> {
        let id = msg.get("id").cloned().unwrap_or(Json::Null);
        if let Some(method) = msg.get("method").and_then(Json::as_str) {
            let params = msg.get("params").cloned().unwrap_or(json!([]));
            match method {
                "echo" if !id.is_null() => {
                    write(conn, &json!({"result": params, "error": null, "id": id})).await?;
                    self.counters.echo_replies.fetch_add(1, Ordering::Relaxed);
                }
                "update2" => {
                    let monitor = params.get(0).and_then(Json::as_str).and_then(|m| self.monitors.get(m));
                    if let (Some(m), Some(updates)) = (monitor, params.get(1)) {
                        m.apply(updates).map_err(|e| format!("monitor update: {e}"))?;
                    }
                }
                _ if !id.is_null() => {
                    write(conn, &json!({"result": null, "error": {"error": "not supported"}, "id": id})).await?;
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
        let result = match msg.get("error") {
            Some(e) if !e.is_null() => Err(Error::Rpc { method: pending.method.to_owned(), error: rpc_error_text(e) }),
            _ => Ok(msg.get("result").cloned().unwrap_or(Json::Null)),
        };
        let result = match (&pending.monitor, result) {
            (Some(m), Ok(initial)) => m.reset(&initial).map(|()| Json::Null),
            (Some(m), Err(e)) => {
                // The server refused the monitor (e.g. the schema changed under us).
                self.monitors.remove(&m.id);
                Err(e)
            }
            (None, result) => result,
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
