//! Which server of a database to use: its `_Server` database, read as the OVS IDL reads it
//!
//! Every ovsdb-server (OVS 2.9 and later) serves `_Server`, whose `Database` table says of
//! each database it holds: the service `model` (standalone, clustered, relay), and for a
//! clustered one whether this member is `connected` to its cluster, whether it is the
//! `leader`, the cluster's id `cid` and the Raft `index` it has applied. Right after
//! connecting, the client monitors that table; it keeps using a server only while every
//! clustered database on it is connected, led by this very member, and at or past the
//! highest index the client has already seen (so a member that has not caught up never
//! answers a read that backs a plan). A server that stops qualifying is left for the next
//! remote in the list, as the IDL's `leader_only` mode (ovn-nbctl's default) does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::monitor::{MonitorSpec, MonitorState, Tables};
use super::schema::Schema;
use super::value::Uuid;

/// The monitor id (and request id) the connection task uses for `_Server`.
pub(crate) const SERVER_MONITOR: &str = "wepoq-server";

/// The columns of `_Server.Database` this client reads (as in OVS 3.x; stable since 2.9).
fn server_schema() -> Schema {
    let optional = |key: &str| json!({"type": {"key": key, "min": 0, "max": 1}});
    Schema::from_json(&json!({
        "name": "_Server",
        "version": "1.2.0",
        "tables": {"Database": {"columns": {
            "name": {"type": "string"},
            "model": {"type": "string"},
            "connected": {"type": "boolean"},
            "leader": {"type": "boolean"},
            "cid": optional("uuid"),
            "index": optional("integer"),
        }}}
    }))
    .expect("the _Server schema above is valid")
}

/// A fresh cache of `_Server.Database`, for one connection.
pub(crate) fn server_monitor() -> Arc<MonitorState> {
    let spec = MonitorSpec::new().table(
        "Database",
        &["name", "model", "connected", "leader", "cid", "index"],
    );
    Arc::new(
        MonitorState::new(SERVER_MONITOR.into(), "_Server", &server_schema(), &spec)
            .expect("the monitor matches the schema"),
    )
}

/// What the client learned about the cluster(s) across connections.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The highest Raft index seen per clustered database: a server below it is behind.
    min_index: HashMap<String, i64>,
    /// The cluster id per clustered database, shared with the client handles.
    pub(crate) cids: Arc<Mutex<HashMap<String, Uuid>>>,
}

impl Health {
    /// `Err(why)` when the server described by `tables` must not be used; records the
    /// cluster ids and raises the index floor otherwise.
    pub(crate) fn judge(&mut self, tables: &Tables) -> Result<(), String> {
        let Some(rows) = tables.get("Database") else {
            return Ok(());
        };
        for row in rows.values() {
            if row.str("model") != Some("clustered") {
                continue;
            }
            let name = row.str("name").unwrap_or("?");
            let flag = |c| row.get(c).and_then(|v| v.as_bool()).unwrap_or(false);
            if !flag("connected") {
                return Err(format!("{name} is not connected to its cluster"));
            }
            if !flag("leader") {
                return Err(format!("{name} is a follower here, not the leader"));
            }
            if let Some(index) = row.get("index").and_then(|v| v.as_i64()) {
                let floor = self.min_index.entry(name.to_owned()).or_insert(index);
                if index < *floor {
                    return Err(format!(
                        "{name} is behind: Raft index {index}, already seen {floor}"
                    ));
                }
                *floor = index;
            }
            if let Some(cid) = row.get("cid").and_then(|v| v.as_uuid()) {
                self.cids
                    .lock()
                    .expect("cid lock")
                    .insert(name.to_owned(), cid.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(connected: bool, leader: bool, index: i64) -> serde_json::Value {
        json!({"name": "OVN_Northbound", "model": "clustered", "connected": connected,
               "leader": leader, "index": index, "cid": ["uuid", "11111111-2222-4333-8444-555555555555"]})
    }

    fn judged(health: &mut Health, r: serde_json::Value) -> Result<(), String> {
        let state = server_monitor();
        state
            .reset(&json!({"Database": {"00000001-0000-4000-8000-000000000000": {"initial": r}}}))
            .unwrap();
        state.with_tables(|t| health.judge(t))
    }

    #[test]
    fn leader_only_and_never_behind() {
        let mut health = Health::default();
        assert!(judged(&mut health, row(true, true, 10)).is_ok());
        assert_eq!(health.cids.lock().unwrap().len(), 1);
        let err = judged(&mut health, row(true, false, 12)).unwrap_err();
        assert!(err.contains("follower"), "{err}");
        let err = judged(&mut health, row(false, true, 12)).unwrap_err();
        assert!(err.contains("not connected"), "{err}");
        let err = judged(&mut health, row(true, true, 9)).unwrap_err();
        assert!(err.contains("behind"), "{err}");
        assert!(judged(&mut health, row(true, true, 11)).is_ok());
        let standalone = json!({"name": "OVN_Northbound", "model": "standalone", "connected": true, "leader": true});
        assert!(judged(&mut health, standalone).is_ok());
    }
}
