//! A cache of rows kept current by `monitor_cond` and `update2` notifications
//!
//! The connection task owns the writing side: it applies the initial reply and every
//! notification in wire order, before it hands the reply of a later request back. Since
//! ovsdb-server sends a transaction's notifications before its reply, a caller that saw
//! its `transact` return finds the change in the cache already.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use tokio::sync::watch;

use super::client::Client;
use super::error::Error;
use super::operation::Condition;
use super::row::Row;
use super::schema::{ColumnKind, ColumnType, Schema};
use super::value::{Atom, Uuid, Value, decode};

/// Rows per table, by UUID. Each cached row carries its `_uuid` column.
pub type Tables = BTreeMap<String, BTreeMap<Uuid, Row>>;

/// Which tables, columns and rows to watch.
#[derive(Debug, Clone, Default)]
pub struct MonitorSpec {
    tables: Vec<(String, Option<Vec<String>>, Vec<Condition>)>,
}

impl MonitorSpec {
    pub fn new() -> MonitorSpec {
        MonitorSpec::default()
    }

    /// Watch `columns` of `table` (`&[]` means every column).
    pub fn table(mut self, table: &str, columns: &[&str]) -> MonitorSpec {
        let columns =
            (!columns.is_empty()).then(|| columns.iter().map(|c| (*c).to_owned()).collect());
        self.tables.push((table.to_owned(), columns, Vec::new()));
        self
    }

    /// Watch `columns` of the rows of `table` that match ANY of `clauses` (monitor_cond
    /// ORs its clauses; rows that stop matching are reported deleted).
    pub fn table_where(
        mut self,
        table: &str,
        columns: &[&str],
        clauses: Vec<Condition>,
    ) -> MonitorSpec {
        self = self.table(table, columns);
        self.tables.last_mut().expect("just pushed").2 = clauses;
        self
    }
}

/// How many touched rows are listed before the list becomes [`Touched::everything`].
const TOUCHED_MAX: usize = 1 << 16;

/// Rows added, changed or removed since the last [`Monitor::take_touched`].
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// The cache was replaced whole (the first reply, or a re-sync after a reconnect).
    pub everything: bool,
    /// `(table, uuid)` in the order the updates came.
    pub rows: Vec<(String, Uuid)>,
}

/// How a monitor's cache was filled, for tests and diagnostics: a reconnect to a clustered
/// database resumes from the last transaction seen (`monitor_cond_since`) and receives only
/// the rows changed meanwhile; elsewhere it starts over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Replies that replaced the whole cache (the first one included).
    pub full: u64,
    /// Replies that resumed from the last transaction id.
    pub resumed: u64,
    /// Rows carried by the last of those replies.
    pub last_rows: usize,
}

/// The transaction id that means "none": a standalone database keeps no history.
pub(crate) const NO_TXN: &str = "00000000-0000-0000-0000-000000000000";

/// The shared state behind a [`Monitor`]; written only by the connection task.
#[derive(Debug)]
pub(crate) struct MonitorState {
    pub(crate) id: String,
    pub(crate) db: String,
    /// The `monitor_cond` requests object, re-sent as is after a reconnect.
    pub(crate) requests: Json,
    columns: HashMap<String, HashMap<String, ColumnType>>,
    tables: RwLock<Tables>,
    generation: watch::Sender<u64>,
    touched: std::sync::Mutex<Touched>,
    /// Set when the cache can no longer be kept current.
    failure: std::sync::Mutex<Option<String>>,
    /// The last transaction the cache reflects (`monitor_cond_since`, `update3`).
    last_txn: std::sync::Mutex<String>,
    syncs: std::sync::Mutex<SyncStats>,
}

impl MonitorState {
    pub(crate) fn new(
        id: String,
        db: &str,
        schema: &Schema,
        spec: &MonitorSpec,
    ) -> Result<MonitorState, Error> {
        let mut requests = Map::new();
        let mut columns = HashMap::new();
        for (table, cols, clauses) in &spec.tables {
            let ts = schema.tables.get(table).ok_or_else(|| Error::Decode {
                what: "monitor request".into(),
                reason: format!("no table {table} in {}", schema.name),
            })?;
            let mut types = HashMap::new();
            let names: Vec<&String> = match cols {
                Some(cols) => cols.iter().collect(),
                None => ts.columns.keys().collect(),
            };
            for name in names {
                let ty = ts.columns.get(name).ok_or_else(|| Error::Decode {
                    what: "monitor request".into(),
                    reason: format!("no column {name} in {table}"),
                })?;
                types.insert(name.clone(), ty.clone());
            }
            let mut request = Map::new();
            if let Some(cols) = cols {
                request.insert("columns".into(), json!(cols));
            }
            if !clauses.is_empty() {
                request.insert(
                    "where".into(),
                    Json::Array(clauses.iter().map(Condition::to_json).collect()),
                );
            }
            let request = json!([Json::Object(request)]);
            requests.insert(table.clone(), request);
            columns.insert(table.clone(), types);
        }
        Ok(MonitorState {
            id,
            db: db.to_owned(),
            requests: Json::Object(requests),
            columns,
            tables: RwLock::new(Tables::new()),
            generation: watch::channel(0).0,
            touched: std::sync::Mutex::default(),
            failure: std::sync::Mutex::default(),
            last_txn: std::sync::Mutex::new(NO_TXN.to_owned()),
            syncs: std::sync::Mutex::default(),
        })
    }

    /// The parameters of `monitor_cond_since`, resuming after the last transaction seen.
    pub(crate) fn since_params(&self) -> Json {
        json!([self.db, self.id, self.requests, self.last_txn()])
    }

    pub(crate) fn last_txn(&self) -> String {
        self.last_txn.lock().expect("monitor lock").clone()
    }

    pub(crate) fn set_last_txn(&self, txn: Option<&str>) {
        if let Some(txn) = txn {
            txn.clone_into(&mut self.last_txn.lock().expect("monitor lock"));
        }
    }

    /// Handles the reply `[found, last-txn-id, updates]` to `monitor_cond_since`: with
    /// `found`, the updates are only what changed since the transaction asked for.
    pub(crate) fn since_reply(&self, reply: &Json) -> Result<(), Error> {
        let (Some(found), Some(updates)) = (reply.get(0).and_then(Json::as_bool), reply.get(2))
        else {
            return Err(decode("monitor_cond_since reply", reply));
        };
        let rows = count_rows(updates);
        if found {
            self.apply(updates)?;
        } else {
            self.reset(updates)?;
        }
        self.set_last_txn(reply.get(1).and_then(Json::as_str));
        let mut syncs = self.syncs.lock().expect("monitor lock");
        if found {
            syncs.resumed += 1;
        } else {
            syncs.full += 1;
        }
        syncs.last_rows = rows;
        Ok(())
    }

    pub(crate) fn with_tables<R>(&self, f: impl FnOnce(&Tables) -> R) -> R {
        f(&self.tables.read().expect("monitor lock"))
    }

    /// Replaces the whole cache with the reply to (re-)issuing the monitor.
    pub(crate) fn reset(&self, initial: &Json) -> Result<(), Error> {
        let mut fresh = Tables::new();
        for table in self.columns.keys() {
            fresh.insert(table.clone(), BTreeMap::new());
        }
        apply_updates(&self.columns, &mut fresh, initial, &mut Vec::new())?;
        *self.tables.write().expect("monitor lock") = fresh;
        *self.touched.lock().expect("monitor lock") = Touched {
            everything: true,
            rows: Vec::new(),
        };
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    pub(crate) fn fail(&self, reason: String) {
        *self.failure.lock().expect("monitor lock") = Some(reason);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Applies one `update2` notification's table-updates.
    pub(crate) fn apply(&self, updates: &Json) -> Result<(), Error> {
        let mut touched = Vec::new();
        let result = apply_updates(
            &self.columns,
            &mut self.tables.write().expect("monitor lock"),
            updates,
            &mut touched,
        );
        let mut all = self.touched.lock().expect("monitor lock");
        all.rows.extend(touched);
        // Nobody may be asking (a monitor used only through `wait_for`): past a bound the
        // list says no more than "everything", which costs nothing to keep.
        if all.rows.len() > TOUCHED_MAX {
            *all = Touched {
                everything: true,
                rows: Vec::new(),
            };
        }
        self.generation.send_modify(|g| *g += 1);
        result
    }
}

fn count_rows(updates: &Json) -> usize {
    updates
        .as_object()
        .map(|t| t.values().filter_map(Json::as_object).map(Map::len).sum())
        .unwrap_or(0)
}

fn apply_updates(
    columns: &HashMap<String, HashMap<String, ColumnType>>,
    tables: &mut Tables,
    updates: &Json,
    touched: &mut Vec<(String, Uuid)>,
) -> Result<(), Error> {
    let updates = updates
        .as_object()
        .ok_or_else(|| decode("table-updates2", updates))?;
    for (table, rows) in updates {
        let (Some(types), Some(cache)) = (columns.get(table), tables.get_mut(table)) else {
            continue;
        };
        let rows = rows
            .as_object()
            .ok_or_else(|| decode("table-update2", rows))?;
        for (uuid, update) in rows {
            let uuid = Uuid::parse(uuid).ok_or_else(|| decode("row uuid", &json!(uuid)))?;
            let update = update
                .as_object()
                .ok_or_else(|| decode("row-update2", &json!(update)))?;
            touched.push((table.clone(), uuid.clone()));
            if let Some(row) = update.get("initial").or_else(|| update.get("insert")) {
                cache.insert(uuid.clone(), full_row(types, &uuid, row)?);
            } else if let Some(diff) = update.get("modify") {
                let Some(row) = cache.get_mut(&uuid) else {
                    return Err(decode("modify of an unknown row", &json!(uuid.as_str())));
                };
                apply_diff(types, row, diff)?;
            } else if update.contains_key("delete") {
                cache.remove(&uuid);
            }
        }
    }
    Ok(())
}

/// update2 leaves out columns that hold their default value: fill them in, so a cached row
/// has every monitored column.
fn full_row(types: &HashMap<String, ColumnType>, uuid: &Uuid, json: &Json) -> Result<Row, Error> {
    let mut row = Row::from_json(json)?;
    for (name, ty) in types {
        if !row.contains_key(name) {
            row.insert(name, ty.default_value());
        }
    }
    row.insert("_uuid", Value::uuid(uuid.clone()));
    Ok(row)
}

/// Applies an update2 `modify` diff: a column of at most one value (a scalar, and an
/// optional one such as Logical_Switch_Port.up) is replaced, as ovsdb-server sends such a
/// column's new value rather than a difference (`ovsdb_datum_diff` treats only `max > 1` as
/// composite); set elements are toggled; map pairs removed when equal, replaced when the key
/// exists, inserted otherwise.
pub(crate) fn apply_diff(
    types: &HashMap<String, ColumnType>,
    row: &mut Row,
    diff: &Json,
) -> Result<(), Error> {
    let diff = diff.as_object().ok_or_else(|| decode("modify", diff))?;
    for (name, change) in diff {
        let change = Value::from_json(change)?;
        let Some(ty) = types.get(name) else { continue };
        if ty.max == Some(1) || row.get(name).is_none() {
            row.insert(name, change);
            continue;
        }
        let current = row.get_mut(name).expect("checked above");
        match (ty.kind(), current, change) {
            (ColumnKind::Set, Value::Set(old), Value::Set(toggle)) => {
                for atom in toggle {
                    if !old.remove(&atom) {
                        old.insert(atom);
                    }
                }
            }
            (ColumnKind::Map, old @ Value::Set(_), change) if old.is_empty() => *old = change,
            (ColumnKind::Map, Value::Map(old), Value::Map(pairs)) => {
                for (k, v) in pairs {
                    match old.get(&k) {
                        Some(existing) if *existing == v => {
                            old.remove(&k);
                        }
                        _ => {
                            old.insert(k, v);
                        }
                    }
                }
            }
            (ColumnKind::Map, Value::Map(_), empty) if empty.is_empty() => {}
            (_, _, change) => return Err(decode("modify diff", &change.to_json())),
        }
    }
    Ok(())
}

/// Handle on a monitored cache. Cloning the data out is cheap enough for the sizes wepoq
/// observes; [`Monitor::with`] reads in place. Dropping the handle cancels the monitor.
pub struct Monitor {
    state: Arc<MonitorState>,
    client: Client,
    changes: watch::Receiver<u64>,
}

impl Monitor {
    pub(crate) fn new(state: Arc<MonitorState>, client: Client) -> Monitor {
        let changes = state.generation.subscribe();
        Monitor {
            state,
            client,
            changes,
        }
    }

    /// Runs `f` on the current cache under the read lock (do not block in it).
    pub fn with<R>(&self, f: impl FnOnce(&Tables) -> R) -> R {
        f(&self.state.tables.read().expect("monitor lock"))
    }

    pub fn snapshot(&self) -> Tables {
        self.with(Clone::clone)
    }

    pub fn rows(&self, table: &str) -> Vec<Row> {
        self.with(|t| {
            t.get(table)
                .map(|rows| rows.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<Row> {
        self.with(|t| t.get(table)?.get(uuid).cloned())
    }

    /// Rows of `table` whose `column` is the string `value` (e.g. by name).
    pub fn find(&self, table: &str, column: &str, value: &str) -> Vec<Row> {
        let want = Value::atom(Atom::from(value));
        self.with(|t| {
            t.get(table)
                .map(|rows| {
                    rows.values()
                        .filter(|r| r.get(column) == Some(&want))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The rows that changed since the last call (or since the monitor started: then
    /// `everything`). For a consumer that keeps something derived from the cache.
    pub fn take_touched(&self) -> Touched {
        std::mem::take(&mut *self.state.touched.lock().expect("monitor lock"))
    }

    /// Waits for the next update of the cache (or its failure).
    pub async fn changed(&mut self) -> Result<(), Error> {
        self.changes.changed().await.map_err(|_| Error::Closed)?;
        match self.failure() {
            Some(reason) => Err(Error::ConnectionLost {
                url: self.client.url().to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// How the cache was filled so far (full replies, resumed ones, rows in the last).
    pub fn sync_stats(&self) -> SyncStats {
        *self.state.syncs.lock().expect("monitor lock")
    }

    /// Counts every update applied (including re-syncs after a reconnect).
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Why the cache stopped following the server, if it did (the server refused to
    /// re-establish the monitor after a reconnect).
    pub fn failure(&self) -> Option<String> {
        self.state.failure.lock().expect("monitor lock").clone()
    }

    /// Waits until `pred` holds on the cache, re-checking after every update.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Tables) -> bool,
    ) -> Result<(), Error> {
        let wait = async {
            loop {
                self.changes.borrow_and_update();
                if self.with(&mut pred) {
                    return Ok(());
                }
                if let Some(reason) = self.failure() {
                    return Err(Error::ConnectionLost {
                        url: self.client.url().to_owned(),
                        reason,
                    });
                }
                if self.changes.changed().await.is_err() {
                    return Err(Error::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("waiting on monitor of {}", self.state.db),
                after: timeout,
            })?
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.client.cancel_monitor(&self.state.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::schema::{AtomicType, BaseType};

    fn ty(kind: ColumnKind) -> ColumnType {
        let base = BaseType {
            atomic: AtomicType::String,
            ref_table: None,
            ref_strong: false,
        };
        match kind {
            ColumnKind::Scalar => ColumnType {
                key: base,
                value: None,
                min: 1,
                max: Some(1),
            },
            ColumnKind::Set => ColumnType {
                key: base,
                value: None,
                min: 0,
                max: None,
            },
            ColumnKind::Map => ColumnType {
                key: base.clone(),
                value: Some(base),
                min: 0,
                max: None,
            },
        }
    }

    #[test]
    fn touched_rows_are_listed_then_collapse_to_everything() {
        let schema = Schema::from_json(&json!({"name": "DB", "version": "1.0.0", "tables": {"T": {"columns": {"name": {"type": "string"}}}}})).unwrap();
        let state = MonitorState::new(
            "m".into(),
            "DB",
            &schema,
            &MonitorSpec::new().table("T", &["name"]),
        )
        .unwrap();
        let uuid = |i: usize| format!("{i:08x}-0000-4000-8000-000000000000");
        state.reset(&json!({})).unwrap();
        assert!(
            std::mem::take(&mut *state.touched.lock().unwrap()).everything,
            "the first reply is everything"
        );

        state
            .apply(&json!({"T": {uuid(1): {"insert": {"name": "a"}}}}))
            .unwrap();
        let touched = std::mem::take(&mut *state.touched.lock().unwrap());
        assert!(!touched.everything);
        assert_eq!(
            touched.rows,
            vec![("T".to_string(), Uuid::parse(&uuid(1)).unwrap())]
        );

        // Nobody takes them: past the bound the list becomes "everything".
        let many: Map<String, Json> = (2..TOUCHED_MAX + 3)
            .map(|i| (uuid(i), json!({"insert": {"name": "x"}})))
            .collect();
        state.apply(&json!({"T": many})).unwrap();
        let touched = state.touched.lock().unwrap();
        assert!(touched.everything && touched.rows.is_empty());
    }

    #[test]
    fn update2_diffs_apply_per_column_kind() {
        let types: HashMap<String, ColumnType> = [
            ("name".to_owned(), ty(ColumnKind::Scalar)),
            ("addresses".to_owned(), ty(ColumnKind::Set)),
            ("options".to_owned(), ty(ColumnKind::Map)),
        ]
        .into();
        let uuid = Uuid::parse("00000001-0000-4000-8000-000000000000").unwrap();
        // update2 "insert" omits default columns: they come back as empty values.
        let mut row = full_row(
            &types,
            &uuid,
            &json!({"name": "p1", "addresses": ["set", ["a", "b"]]}),
        )
        .unwrap();
        assert_eq!(row.get("options"), Some(&Value::Map(BTreeMap::new())));
        assert_eq!(row.uuid(), Some(&uuid));
        apply_diff(
            &types,
            &mut row,
            &json!({"name": "p2", "addresses": ["set", ["b", "c"]], "options": ["map", [["k", "v"], ["j", "w"]]]}),
        )
        .unwrap();
        assert_eq!(row.str("name"), Some("p2"));
        assert_eq!(row.get("addresses"), Some(&Value::set(["a", "c"])));
        assert_eq!(
            row.get("options"),
            Some(&Value::map([("k", "v"), ("j", "w")]))
        );
        // Same pair removes; same key with another value replaces.
        apply_diff(
            &types,
            &mut row,
            &json!({"options": ["map", [["k", "v"], ["j", "x"]]], "addresses": "a"}),
        )
        .unwrap();
        assert_eq!(row.get("options"), Some(&Value::map([("j", "x")])));
        assert_eq!(row.get("addresses"), Some(&Value::atom("c")));
    }

    #[test]
    fn an_optional_column_is_replaced_not_toggled() {
        // Logical_Switch_Port.up as ovn-northd moves it: unset, false, then true. The server
        // sends each new value whole (seen on ovsdb-server 3.1).
        let optional = ColumnType {
            min: 0,
            max: Some(1),
            ..ty(ColumnKind::Scalar)
        };
        let types: HashMap<String, ColumnType> = [("up".to_owned(), optional)].into();
        let uuid = Uuid::parse("00000001-0000-4000-8000-000000000000").unwrap();
        let mut row = full_row(&types, &uuid, &json!({})).unwrap();
        assert_eq!(row.get("up"), Some(&Value::empty()));
        for (diff, now) in [
            (json!(false), false),
            (json!(true), true),
            (json!(false), false),
        ] {
            apply_diff(&types, &mut row, &json!({ "up": diff })).unwrap();
            assert_eq!(row.get("up").and_then(Value::as_bool), Some(now));
        }
        apply_diff(&types, &mut row, &json!({"up": ["set", []]})).unwrap();
        assert_eq!(row.get("up"), Some(&Value::empty()));
    }
}
