//! A typed OVSDB client (RFC 7047 plus ovsdb-server(7)) on tokio and serde_json
//!
//! Only the reconciler speaks OVSDB, and it does so through this module.
//!
//! # API
//!
//! - [`Client::connect_with`]`(&`[`Remotes`]`, Option<&`[`TlsConfig`]`>, `[`Timeouts`]`) -> Client`:
//!   the remotes as ovn-nbctl's `--db` takes them ([`Remotes::parse`]: `unix:PATH`,
//!   `tcp:HOST:PORT`, `ssl:HOST:PORT`, comma-separated), TLS files loaded by
//!   [`TlsConfig::load`]. [`Client::connect`]`(url, timeouts)` is the same without TLS.
//!   One task owns the connection; handles are cheap clones. It answers the server's
//!   `echo`, probes an idle server itself, and reconnects with exponential backoff.
//!   Through `_Server` it keeps to a clustered database's leader (connected, caught up),
//!   fails over to another member when that changes, and resumes monitors from their last
//!   transaction ([`Monitor::sync_stats`]); [`Client::current_url`] is the member in use,
//!   [`Client::cluster_id`] the cluster's id.
//! - [`Client::schema`]`(db)`, [`Client::nb_schema`]`()`: the latter refuses an
//!   OVN_Northbound schema outside 7.x with [`Error::SchemaMismatch`] naming what it found.
//! - [`Client::transact`]`(db, &[Operation]) -> Vec<OpResult>`: one transaction; the first
//!   failure becomes an [`Error`] (`GuardFailed` for a failed `wait`, `OpFailed`,
//!   `CommitFailed` for the trailing commit-time error). [`Client::transact_reply`] returns
//!   every outcome instead (dry runs end in [`Operation::Abort`]).
//! - [`Client::select`]`(db, table, conditions, columns) -> Vec<Row>`: one select.
//! - [`Client::monitor`]`(db, MonitorSpec) -> Monitor`: a cache of the chosen tables and
//!   columns, kept current by `update2` notifications and re-synced after a reconnect.
//!   Because the server sends a transaction's updates before its reply, the cache already
//!   shows a committed change when `transact` returns.
//! - [`Client::sync_hv`]`(timeout)` does what `ovn-nbctl --wait=hv` does;
//!   [`Client::wait_hv_cfg`]`(n, timeout)` waits for `NB_Global.hv_cfg >= n`.
//! - [`Client::try_lock`]`(name)` / [`Client::unlock`]: ovsdb-server locks, for
//!   [`Operation::Assert`] (one writer at a time).
//! - Every request has a time limit ([`Timeouts::request`]); every [`Error`] says whether
//!   it is retryable ([`Error::class`]).
//!
//! Values are typed: [`Atom`], [`Value`] (a set or a map) and [`Row`]. `==` on values is
//! canonical (set and map order, one-element sets spelled as bare atoms), so normalization
//! by the server is never seen as a difference.
//!
//! ```no_run
//! use wepoq_reconciler::ovsdb::{Client, Condition, MonitorSpec, Mutation, Operation, Row, Timeouts, Value, NB_DB};
//!
//! # async fn example() -> Result<(), wepoq_reconciler::ovsdb::Error> {
//! let client = Client::connect("unix:/tmp/sb/nb.sock", Timeouts::default()).await?;
//! // A cluster over TLS: Client::connect_with(&Remotes::parse("ssl:10.0.0.1:6641,ssl:10.0.0.2:6641")?,
//! //     Some(&TlsConfig::load(&TlsFiles { .. })?), Timeouts::default())
//! client.nb_schema().await?; // refuses anything but OVN_Northbound 7.x
//! let ports = client.monitor(NB_DB, MonitorSpec::new().table("Logical_Switch_Port", &["name", "addresses"])).await?;
//! // Logical_Switch_Port is not a root table: insert it with its parent's reference.
//! let ops = [
//!     Operation::insert_named("Logical_Switch", Row::new().with("name", "sw0"), "sw0"),
//!     Operation::insert_named("Logical_Switch_Port", Row::new().with("name", "p1").with("addresses", "00:00:00:00:00:01 10.0.0.2"), "p1"),
//!     Operation::mutate("Logical_Switch", vec![Condition::eq("_uuid", Value::named_uuid("sw0"))], vec![Mutation::insert("ports", Value::named_uuid("p1"))]),
//! ];
//! let results = client.transact(NB_DB, &ops).await?;
//! println!("switch {}", results[0].uuid().unwrap());
//! assert_eq!(ports.find("Logical_Switch_Port", "name", "p1").len(), 1);
//! # Ok(()) }
//! ```

mod client;
mod cluster;
mod connection;
mod error;
mod frame;
mod monitor;
mod operation;
mod row;
mod schema;
mod target;
mod tls;
mod typed;
mod value;

pub use client::{Client, Stats, Timeouts};
pub use error::{Error, ErrorClass};
pub use frame::{FrameDecoder, parse_frame};
pub use monitor::{Monitor, MonitorSpec, SyncStats, Tables, Touched};
pub use operation::{
    Condition, Function, Mutation, Mutator, OpError, OpOutcome, OpResult, Operation, TransactReply,
    WaitUntil,
};
pub use row::Row;
pub use schema::{
    AtomicType, BaseType, ColumnKind, ColumnType, NB_DB, NB_MAJOR, Schema, TableSchema, Version,
};
pub use target::{Remotes, Target};
pub use tls::{TlsConfig, TlsFiles};
pub use value::{Atom, Uuid, Value};

/// Drops a large value on a thread of its own. Freeing a 50k-row observation (and the JSON it
/// was parsed from) takes longer than planning from it, and the caller has better things to
/// do: a CLI exits right after. Small values are dropped in place (a thread costs more).
pub fn drop_in_background<T: Send + 'static>(value: T, large: bool) {
    if large {
        // If no thread can be started, the closure and the value are dropped right here.
        let _ = std::thread::Builder::new()
            .name("wepoq-drop".into())
            .spawn(move || drop(value));
    }
}
