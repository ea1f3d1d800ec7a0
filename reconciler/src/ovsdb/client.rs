//! The OVSDB client: a cloneable handle in front of the task that owns the connection
//! (see `connection.rs`)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use super::connection::{Command, Counters, Driver, RawReply};
use super::error::Error;
use super::monitor::{Monitor, MonitorSpec, MonitorState};
use super::operation::{Condition, Mutation, OpResult, Operation, TransactReply};
use super::row::Row;
use super::schema::{NB_DB, NB_MAJOR, Schema};
use super::target::Remotes;
use super::tls::TlsConfig;
use super::value::Uuid;

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

struct Shared {
    /// The remotes as given (all of them, comma-separated).
    url: String,
    /// The remote in use now.
    current_url: Arc<Mutex<String>>,
    cluster_ids: Arc<Mutex<HashMap<String, Uuid>>>,
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
    /// Connects to `unix:PATH`, `tcp:HOST:PORT` or a comma-separated list of them (a
    /// cluster's members); see [`Client::connect_with`]. `ssl:` needs TLS files: use that.
    pub async fn connect(url: &str, timeouts: Timeouts) -> Result<Client, Error> {
        Client::connect_with(&Remotes::parse(url)?, None, timeouts).await
    }

    /// Connects to the first usable server among `remotes` (TLS for `ssl:` ones): for a
    /// clustered database, its leader, up to date (see the `_Server` rules in
    /// `cluster.rs`); while members answer but none leads yet, it keeps asking until
    /// [`Timeouts::connect`]. Fails if none can be used by then; after that, a lost
    /// connection (or a leader that steps down) moves on to another remote in the
    /// background with backoff, and monitors resume from the last transaction they saw.
    pub async fn connect_with(
        remotes: &Remotes,
        tls: Option<&TlsConfig>,
        timeouts: Timeouts,
    ) -> Result<Client, Error> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let mut driver = Driver::new(
            remotes.clone(),
            tls.cloned(),
            timeouts.clone(),
            command_rx,
            shutdown_rx,
            counters.clone(),
        );
        let conn = driver.first_connect().await?;
        counters.connects.store(1, Ordering::Relaxed);
        let shared = Shared {
            url: remotes.to_string(),
            current_url: driver.current_url(),
            cluster_ids: driver.cluster_ids(),
            timeouts,
            commands,
            schemas: Mutex::default(),
            counters,
            next_monitor: AtomicU64::new(0),
            _shutdown: shutdown,
        };
        tokio::spawn(driver.run(conn));
        Ok(Client {
            shared: Arc::new(shared),
        })
    }

    /// The remotes as given (the whole list).
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The remote in use (or last used, while reconnecting).
    pub fn current_url(&self) -> String {
        self.shared.current_url.lock().expect("url lock").clone()
    }

    /// The cluster id of `db` when it is clustered (from `_Server`), whichever member
    /// answers.
    pub fn cluster_id(&self, db: &str) -> Option<Uuid> {
        self.shared
            .cluster_ids
            .lock()
            .expect("cid lock")
            .get(db)
            .cloned()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connects: self.shared.counters.connects.load(Ordering::Relaxed),
            echo_replies: self.shared.counters.echo_replies.load(Ordering::Relaxed),
        }
    }

    async fn call(
        &self,
        method: &'static str,
        params: Json,
        monitor: Option<Arc<MonitorState>>,
    ) -> Result<RawReply, Error> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Call {
                method,
                params,
                reply,
                monitor,
            })
            .map_err(|_| Error::Closed)?;
        let after = self.shared.timeouts.request;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout {
                what: format!("{method} on {}", self.shared.url),
                after,
            }),
        }
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let result = self.call("list_dbs", json!([]), None).await?.to_json()?;
        serde_json::from_value(result.clone())
            .map_err(|_| super::value::decode("list_dbs result", &result))
    }

    pub async fn echo(&self) -> Result<(), Error> {
        self.call("echo", json!(["wepoq"]), None).await.map(drop)
    }

    /// The schema of `db`, fetched once per client and cached.
    pub async fn schema(&self, db: &str) -> Result<Arc<Schema>, Error> {
        if let Some(s) = self.shared.schemas.lock().expect("schema lock").get(db) {
            return Ok(s.clone());
        }
        // Reading a schema changes nothing: when the server goes away under it (a leader
        // stepping down right after the connect), ask again on the next one.
        let mut tries = 0;
        let json = loop {
            tries += 1;
            match self.call("get_schema", json!([db]), None).await {
                Err(Error::ConnectionLost { .. }) if tries < 3 => continue,
                reply => break reply?.to_json()?,
            }
        };
        let schema = Arc::new(Schema::from_json(&json)?);
        self.shared
            .schemas
            .lock()
            .expect("schema lock")
            .insert(db.to_owned(), schema.clone());
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
    pub async fn transact_reply(
        &self,
        db: &str,
        ops: &[Operation],
    ) -> Result<TransactReply, Error> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(json!(db));
        params.extend(ops.iter().map(Operation::to_json));
        let result = self.call("transact", Json::Array(params), None).await?;
        TransactReply::from_str(result.text(), ops.len())
    }

    /// Runs `ops` as one transaction: one result per operation, or the first failure
    /// (a failed `wait` is [`Error::GuardFailed`], commit checks [`Error::CommitFailed`]).
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<OpResult>, Error> {
        self.transact_reply(db, ops).await?.into_result(ops)
    }

    /// One `select`: the rows of `table` matching `conditions` (all rows for `&[]`),
    /// restricted to `columns` (every column for `&[]`; `_uuid` always comes along).
    pub async fn select(
        &self,
        db: &str,
        table: &str,
        conditions: Vec<Condition>,
        columns: &[&str],
    ) -> Result<Vec<Row>, Error> {
        let op = match columns {
            [] => Operation::select(table, conditions),
            columns => {
                let mut with_uuid = columns.to_vec();
                if !with_uuid.contains(&"_uuid") {
                    with_uuid.push("_uuid");
                }
                Operation::select_columns(table, conditions, &with_uuid)
            }
        };
        let mut results = self.transact(db, &[op]).await?;
        match results.pop() {
            Some(OpResult::Select { rows }) => Ok(rows),
            _ => Err(Error::Decode {
                what: "select result".into(),
                reason: "no rows".into(),
            }),
        }
    }

    /// Starts a `monitor_cond` on `db` and returns once the cache holds the initial rows.
    /// The cache is re-synced after a reconnect.
    pub async fn monitor(&self, db: &str, spec: MonitorSpec) -> Result<Monitor, Error> {
        let schema = self.schema(db).await?;
        let n = self.shared.next_monitor.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(MonitorState::new(
            format!("wepoq-monitor-{n}"),
            db,
            &schema,
            &spec,
        )?);
        // monitor_cond_since from "no transaction": the first reply carries every row, and
        // on a cluster a reconnect resumes from the last transaction id (see connection.rs).
        let params = state.since_params();
        match self
            .call("monitor_cond_since", params, Some(state.clone()))
            .await
        {
            Ok(_) => Ok(Monitor::new(state, self.clone())),
            Err(e) => {
                self.cancel_monitor(&state.id);
                Err(e)
            }
        }
    }

    pub(crate) fn cancel_monitor(&self, id: &str) {
        // The task may be gone already: then there is nothing left to cancel.
        let _ = self
            .shared
            .commands
            .send(Command::CancelMonitor(id.to_owned()));
    }

    /// Asks for the named lock (`[a-zA-Z_][a-zA-Z0-9_]*`); `true` when this connection
    /// holds it now. `Operation::Assert` in a transaction then fails unless it still does.
    /// Locks belong to the connection: after a reconnect, ask again.
    pub async fn try_lock(&self, name: &str) -> Result<bool, Error> {
        let result = self.call("lock", json!([name]), None).await?.to_json()?;
        result
            .get("locked")
            .and_then(Json::as_bool)
            .ok_or_else(|| super::value::decode("lock result", &result))
    }

    /// Releases the named lock (or stops waiting for it).
    pub async fn unlock(&self, name: &str) -> Result<(), Error> {
        self.call("unlock", json!([name]), None).await.map(drop)
    }

    /// Waits until NB_Global.hv_cfg reaches `target` (every chassis caught up).
    pub async fn wait_hv_cfg(&self, target: i64, timeout: Duration) -> Result<(), Error> {
        let mut global = self
            .monitor(NB_DB, MonitorSpec::new().table("NB_Global", &["hv_cfg"]))
            .await?;
        global
            .wait_for(timeout, |t| {
                t.get("NB_Global").is_some_and(|rows| {
                    rows.values()
                        .any(|r| r.get("hv_cfg").and_then(|v| v.as_i64()) >= Some(target))
                })
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
            .ok_or_else(|| Error::Decode {
                what: "NB_Global".into(),
                reason: "no NB_Global row (run ovn-nbctl init)".into(),
            })?;
        self.wait_hv_cfg(nb_cfg, timeout).await?;
        Ok(nb_cfg)
    }
}
