//! A reconciler that stays connected and keeps what wepoq owns in memory.
//!
//! A conditional monitor follows only the rows marked with the owners being reconciled, and
//! the rows it reports changed are converted to the compiler's form one by one, so a plan
//! comes from memory: no select of every owned row per change (about 2 s for 50k rows, most
//! of it ovsdb-server serializing them). `wepoq apply --watch` is built on it, and so is the
//! benchmark of changing one service in a big NB.
//!
//! The cache is only ever a shortcut. Whenever a transaction built from it fails a guard or
//! hits a unique index (someone else wrote, or a foreign row holds a wanted name), the
//! attempt is handed to [`Reconciler::reconcile`], which observes with selects and reports
//! conflicts exactly as a one-shot apply does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use wepoq_compiler::nb::{self, RowKey, Table, OWNER_KEY};
use wepoq_compiler::plan::{self, Plan};

use crate::convert::to_nb_row;
use crate::observe::{foreign_children, marked_key, owner_mark, Observed};
use crate::ovsdb::{self, Condition, Monitor, MonitorSpec, Schema, Uuid, NB_DB};
use crate::reconcile::{is_contention, timing, Applied, Desired, Options, ReconcileError, Reconciler};

/// A connection, a monitor of the owned rows, and the observation derived from it.
pub struct CachedReconciler {
    reconciler: Reconciler,
    monitor: Monitor,
    schema: Arc<Schema>,
    owners: Vec<String>,
    observed: Observed,
    /// Owner and key of every owned row in `observed`, by UUID.
    owned: HashMap<Uuid, (String, RowKey)>,
    /// Tables with a managed column that references rows: only their rows can convert
    /// differently when another row's key changes.
    referring: HashSet<Table>,
}

impl CachedReconciler {
    /// Starts monitoring the rows marked as `owners`' (the first reply carries all of them,
    /// which costs about what one observation does).
    pub async fn start(reconciler: Reconciler, owners: &[String]) -> Result<CachedReconciler, ReconcileError> {
        let clauses: Vec<Condition> = owners.iter().map(|o| Condition::includes("external_ids", ovsdb::Value::map([(OWNER_KEY, o.as_str())]))).collect();
        let mut spec = MonitorSpec::new();
        for table in Table::ALL {
            spec = spec.table_where(table.name(), table.managed_columns(), clauses.clone());
        }
        let monitor = reconciler.client.monitor(NB_DB, spec).await?;
        let schema = reconciler.schema().clone();
        let referring = Table::ALL
            .into_iter()
            .filter(|t| t.managed_columns().iter().any(|c| schema.column(t.name(), c).is_some_and(|ty| ty.key.ref_table.is_some() || ty.value.as_ref().is_some_and(|v| v.ref_table.is_some()))))
            .collect();
        let mut cached = CachedReconciler { reconciler, monitor, schema, owners: owners.to_vec(), observed: Observed::default(), owned: HashMap::new(), referring };
        cached.refresh();
        Ok(cached)
    }

    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// Waits until the NB changes something wepoq owns (drift, or another writer).
    pub async fn changed(&mut self) -> Result<(), ReconcileError> {
        Ok(self.monitor.changed().await?)
    }

    /// The owned rows as the monitor last reported them, in the compiler's form (`raw` holds
    /// only the rows the last applied plan touched: the monitor keeps the rest).
    pub fn observed(&mut self) -> &Observed {
        self.refresh();
        &self.observed
    }

    /// Plans from memory and applies; on a failed guard or index clash (someone else wrote,
    /// or a foreign row holds a wanted name: `--adopt` takes it there), hands over to a full
    /// reconcile, which observes with selects and reports conflicts as a one-shot apply does.
    pub async fn reconcile(&mut self, desired: &Desired, options: Options, mut confirm: impl FnMut(&Plan, usize) -> bool) -> Result<(Plan, Applied), ReconcileError> {
        let start = Instant::now();
        self.refresh();
        timing("cached: catching up with the monitor", start);
        let phase = Instant::now();
        let plan = Reconciler::plan(desired, &self.observed);
        timing("cached: plan from memory", phase);
        if plan.changes.is_empty() || !confirm(&plan, 1) {
            return Ok((plan, Applied { summary: plan::Summary::default(), operations: 0, attempts: 1, elapsed: start.elapsed() }));
        }
        // The guards compare what was read: the monitor's copy of the rows the plan touches.
        self.observed.raw = self.monitor.with(|tables| {
            plan.changes
                .iter()
                .filter_map(|c| {
                    let uuid = self.observed.ids.by_key.get(&c.key)?;
                    Some((c.key.clone(), tables.get(c.key.table.name())?.get(uuid)?.clone()))
                })
                .collect()
        });
        match self.reconciler.apply_plan(&plan, &self.observed).await {
            Ok(operations) => {
                let applied = Applied { summary: plan.summary(), operations, attempts: 1, elapsed: start.elapsed() };
                return Ok((plan, applied));
            }
            Err(ReconcileError::Ovsdb(e)) if is_contention(&e) => timing("cached: the NB moved; a full reconcile follows", start),
            Err(e) => return Err(e),
        }
        let (plan, mut applied) = self.reconciler.reconcile(desired, options, |p, attempt| confirm(p, attempt + 1)).await?;
        applied.elapsed = start.elapsed();
        Ok((plan, applied))
    }

    /// Brings `observed` up to date with the rows the monitor reported changed.
    fn refresh(&mut self) {
        let touched = self.monitor.take_touched();
        if touched.everything {
            self.observed = Observed::default();
            self.owned.clear();
            let all: Vec<(String, Uuid)> = self.monitor.with(|tables| tables.iter().flat_map(|(t, rows)| rows.keys().map(move |u| (t.clone(), u.clone()))).collect());
            self.update(&all);
            for owner in &self.owners {
                self.observed.rows.entry(owner.clone()).or_default();
            }
        } else if !touched.rows.is_empty() {
            self.update(&touched.rows);
        }
    }

    /// Re-derives the given rows from the monitor's cache.
    fn update(&mut self, rows: &[(String, Uuid)]) {
        let monitor = &self.monitor;
        let schema = &self.schema;
        let observed = &mut self.observed;
        let owned = &mut self.owned;
        let referring = &self.referring;
        let mut edits = Edits::default();
        monitor.with(|tables| {
            // 1. Forget what these rows were, and learn what they are now (their keys first:
            //    converting one row resolves references to the others).
            let mut remapped: HashSet<Uuid> = HashSet::new();
            let mut now: Vec<(String, RowKey, Uuid)> = Vec::new();
            for (table_name, uuid) in rows {
                let Some(table) = Table::from_name(table_name) else { continue };
                let before = owned.remove(uuid);
                if let Some((owner, key)) = &before {
                    if let Some(uuid) = observed.ids.by_key.remove(key) {
                        observed.ids.by_uuid.remove(&uuid);
                    }
                    edits.forget(observed, owner, key);
                }
                let after = tables.get(table_name).and_then(|t| t.get(uuid)).and_then(|row| {
                    let (key, _) = marked_key(table, row)?;
                    Some((owner_mark(row)?.to_owned(), key))
                });
                if before != after {
                    remapped.insert(uuid.clone());
                }
                if let Some((owner, key)) = after {
                    observed.ids.insert(key.clone(), uuid.clone());
                    owned.insert(uuid.clone(), (owner.clone(), key.clone()));
                    now.push((owner, key, uuid.clone()));
                }
            }
            // 2. Rows that refer to a row whose key appeared, vanished or moved convert
            //    differently now (a reference to a row that is not ours is dropped).
            let fresh: HashSet<&Uuid> = now.iter().map(|(_, _, u)| u).collect();
            let mut dependents = Vec::new();
            if !remapped.is_empty() {
                for (uuid, (owner, key)) in owned.iter() {
                    if !referring.contains(&key.table) || fresh.contains(uuid) {
                        continue;
                    }
                    let Some(row) = tables.get(key.table.name()).and_then(|t| t.get(uuid)) else { continue };
                    if refers_to_any(row, &remapped) {
                        dependents.push((owner.clone(), key.clone(), uuid.clone()));
                    }
                }
                for (owner, key, _) in &dependents {
                    edits.forget(observed, owner, key);
                }
            }
            // 3. Convert.
            for (owner, key, uuid) in now.into_iter().chain(dependents) {
                let Some(row) = tables.get(key.table.name()).and_then(|t| t.get(&uuid)) else { continue };
                let foreign = foreign_children(key.table, row, &observed.ids);
                if !foreign.is_empty() {
                    observed.foreign_children.insert(key.clone(), foreign);
                }
                edits.added.entry(owner).or_default().push(to_nb_row(key, row, schema, &observed.ids));
            }
        });
        edits.apply(observed);
    }
}

/// Changes to the sorted row lists, applied together: one at a time is a shift of the
/// whole list each, which on the first reply (every row at once) would be quadratic.
#[derive(Default)]
struct Edits {
    removed: HashMap<String, HashSet<RowKey>>,
    added: HashMap<String, Vec<nb::Row>>,
}

impl Edits {
    /// Drops a row's converted form (its key mapping is the caller's business).
    fn forget(&mut self, observed: &mut Observed, owner: &str, key: &RowKey) {
        observed.foreign_children.remove(key);
        self.removed.entry(owner.to_owned()).or_default().insert(key.clone());
    }

    fn apply(mut self, observed: &mut Observed) {
        let owners: HashSet<String> = self.removed.keys().chain(self.added.keys()).cloned().collect();
        for owner in owners {
            let rows = observed.rows.entry(owner.clone()).or_default();
            let removed = self.removed.remove(&owner).unwrap_or_default();
            let added = self.added.remove(&owner).unwrap_or_default();
            if removed.len() + added.len() <= 32 {
                for key in &removed {
                    if let Ok(i) = rows.binary_search_by(|r| r.key.cmp(key)) {
                        rows.remove(i);
                    }
                }
                for row in added {
                    match rows.binary_search_by(|r| r.key.cmp(&row.key)) {
                        Ok(i) => rows[i] = row,
                        Err(i) => rows.insert(i, row),
                    }
                }
            } else {
                rows.retain(|r| !removed.contains(&r.key));
                rows.extend(added);
                rows.sort_by(|a, b| a.key.cmp(&b.key));
                // Copied once more in key order, so that each diff, which walks the rows in
                // that order, reads memory in order too (converted in uuid order, they lay
                // scattered: the diff ran three times slower).
                *rows = rows.to_vec();
            }
        }
    }
}

fn refers_to_any(row: &ovsdb::Row, uuids: &HashSet<Uuid>) -> bool {
    row.iter().any(|(_, value)| match value {
        ovsdb::Value::Set(set) => set.iter().filter_map(ovsdb::Atom::as_uuid).any(|u| uuids.contains(u)),
        ovsdb::Value::Map(map) => map.iter().any(|(k, v)| [k, v].into_iter().filter_map(ovsdb::Atom::as_uuid).any(|u| uuids.contains(u))),
    })
}
